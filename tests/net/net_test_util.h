// Helpers shared by the net tests: loopback connections made with plain
// blocking syscalls (so the peer side is independent of weft), and a
// recorder for errors delivered through bthread_id.
#ifndef WEFT_TESTS_NET_NET_TEST_UTIL_H_
#define WEFT_TESTS_NET_NET_TEST_UTIL_H_

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "base/compiler.h"
#include "weft/bthread.h"
#include "weft/errno.h"
#include "weft/net/endpoint.h"
#include "weft/net/iobuf.h"
#include "weft/net/socket.h"

namespace weft::test {

// Deadlines stretch under sanitizers (they slow everything 5-20x); loop
// counts shrink with kScale instead.
#if defined(WEFT_TSAN) || defined(WEFT_ASAN)
constexpr int kTimeScale = 3;
#else
constexpr int kTimeScale = 1;
#endif
inline const std::chrono::milliseconds kLong(20000 * kTimeScale);

inline int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Aborts the process if not disarmed in time: a hang in the code under test
// (a join, StopAccept waiting for a connection that never recycles) must
// fail loudly, not stall the suite.
class Watchdog {
 public:
  Watchdog(const char* what, std::chrono::milliseconds limit)
      : thread_([this, what, limit] {
          std::unique_lock<std::mutex> lock(mu_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            fprintf(stderr, "WATCHDOG: %s did not finish within %lld ms\n", what,
                    static_cast<long long>(limit.count()));
            abort();
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

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

// A Socket over `fd` (taken over) with no reading callback; *ptr holds a
// reference. False on failure.
inline bool adopt_fd(int fd, SocketId* id, SocketUniquePtr* ptr) {
  SocketOptions opt;
  opt.fd = fd;
  return Socket::Create(opt, id) == 0 && Socket::Address(*id, ptr) == 0;
}

// A blocking TCP connection to `ep` (the peer side of a raw client);
// -1 when socket or connect fails.
inline int connect_to(const EndPoint& ep) {
  const int fd = socket(ep.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, ep.addr(), ep.addr_len()) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends all of `bytes` (retrying short sends and EINTR, never raising
// SIGPIPE); false when the connection fails first.
inline bool send_all(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// True when the peer closed `fd` (EOF, a reset or another error) within
// timeout_ms; what arrived before the close is appended to *received.
inline bool closed_by_peer(int fd, int64_t timeout_ms, std::string* received) {
  const int64_t deadline_ms = now_ms() + timeout_ms;
  for (;;) {
    const int64_t left = deadline_ms - now_ms();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n > 0) {
      received->append(buf, static_cast<size_t>(n));
    } else if (errno != EINTR && errno != EAGAIN) {
      return true;
    }
  }
}

inline void set_blocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK); }

// Reads from fd until `want` bytes arrived, EOF, an error or timeout_ms
// passed (poll-based, so it never hangs; EAGAIN is retried). Returns what
// was read: never more than `want` bytes, the rest stays in the socket.
inline std::string read_until(int fd, size_t want, int64_t timeout_ms) {
  const int64_t deadline_ms = now_ms() + timeout_ms;
  std::string got;
  char buf[65536];
  while (got.size() < want) {
    const int64_t left = deadline_ms - now_ms();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    const int rc = poll(&p, 1, static_cast<int>(left < 100 ? left : 100));
    if (rc < 0 && errno != EINTR) break;
    if (rc <= 0) continue;
    // Never past `want`: a caller that reads a prefix to tell two replies
    // apart reads the rest of the one it got next.
    const size_t room = want - got.size() < sizeof(buf) ? want - got.size() : sizeof(buf);
    const ssize_t n = read(fd, buf, room);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      break;
    }
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// A server callback that echoes whatever arrives: reads until EAGAIN, fails
// the socket on EOF or a read error, and reads again while more events
// arrived.
inline void EchoOnMessages(Socket* s) {
  int progress = Socket::PROGRESS_INIT;
  do {
    for (;;) {
      const ssize_t n = s->DoRead(64 * 1024);
      if (n > 0) continue;
      if (n == 0) {
        s->SetFailed(EEOF, "%s closed", s->description().c_str());
        return;
      }
      if (errno == EAGAIN) break;
      if (errno == EINTR) continue;
      const int err = errno;
      s->SetFailed(err, "read from %s: %s", s->description().c_str(), strerror(err));
      return;
    }
    if (!s->read_buf().empty()) {
      IOBuf out;
      out.swap(s->read_buf());
      s->Write(&out);  // Fails only when the socket failed.
    }
  } while (s->MoreReadEvents(&progress));
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
