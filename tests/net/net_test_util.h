// Helpers shared by the net tests: loopback connections made with plain
// blocking syscalls (so the peer side is independent of weft), and a
// recorder for errors delivered through bthread_id.
#ifndef WEFT_TESTS_NET_NET_TEST_UTIL_H_
#define WEFT_TESTS_NET_NET_TEST_UTIL_H_

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "weft/bthread.h"
#include "weft/net/endpoint.h"

namespace weft::test {

// A connected loopback TCP pair, both ends blocking. False on failure.
inline bool make_tcp_pair(int* client, int* server) {
  const int lfd = tcp_listen(EndPoint::loopback(0), 16);
  if (lfd < 0) return false;
  const EndPoint ep = get_local_side(lfd);
  const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0 || connect(c, ep.addr(), ep.addr_len()) != 0) {
    close(lfd);
    if (c >= 0) close(c);
    return false;
  }
  pollfd p{lfd, POLLIN, 0};
  poll(&p, 1, 5000);
  const int s = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  close(lfd);
  if (s < 0) {
    close(c);
    return false;
  }
  *client = c;
  *server = s;
  return true;
}

inline void set_blocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK); }

// Reads from a blocking fd until `want` bytes, EOF, an error or the
// deadline (poll-based, so it never hangs). Returns what was read.
inline std::string read_until(int fd, size_t want, int timeout_ms) {
  std::string out;
  char buf[65536];
  const int64_t end_ms = timeout_ms;
  int64_t waited = 0;
  while (out.size() < want && waited < end_ms) {
    pollfd p{fd, POLLIN, 0};
    const int rc = poll(&p, 1, 100);
    if (rc == 0) {
      waited += 100;
      continue;
    }
    if (rc < 0 && errno == EINTR) continue;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Collects the error codes raised on bthread ids it creates.
class IdErrorRecorder {
 public:
  bthread_id_t make() {
    bthread_id_t id;
    if (bthread_id_create(&id, this, on_error) != 0) return INVALID_BTHREAD_ID;
    return id;
  }
  int errors() const { return nerrors_.load(); }
  int last_error() const { return last_error_.load(); }
  int errors_with(int code) const { return code == last_error_.load() ? nerrors_.load() : -1; }

 private:
  static int on_error(bthread_id_t id, void* data, int error_code) {
    auto* self = static_cast<IdErrorRecorder*>(data);
    self->last_error_.store(error_code);
    self->nerrors_.fetch_add(1);
    return bthread_id_unlock_and_destroy(id);
  }
  std::atomic<int> nerrors_{0};
  std::atomic<int> last_error_{0};
};

}  // namespace weft::test

#endif  // WEFT_TESTS_NET_NET_TEST_UTIL_H_
