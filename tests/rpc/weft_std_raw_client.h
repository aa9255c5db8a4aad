// A blocking weft_std client written by hand on a plain TCP socket
// (127.0.0.1), so the client side of the rpc tests does not depend on
// weft, plus small helpers those tests share.
#ifndef WEFT_TESTS_RPC_WEFT_STD_RAW_CLIENT_H_
#define WEFT_TESTS_RPC_WEFT_STD_RAW_CLIENT_H_

#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "net_test_util.h"
#include "protocols/weft_std/weft_std_format.h"
#include "weft/bthread.h"
#include "weft/rpc/closure.h"
#include "weft/rpc/controller.h"

namespace weft::rpc::test_raw {

using test::kLong;
using test::now_ms;
namespace ws = weft_std;

struct Frame {
  ws::FrameHeader header;
  std::string meta;
  std::string payload;
};

std::string RequestBytes(uint64_t cid, const std::string& method, const std::string& payload) {
  ws::FrameHeader h;
  h.body_size = static_cast<uint32_t>(method.size() + payload.size());
  h.correlation_id = cid;
  h.meta_size = static_cast<uint16_t>(method.size());
  char buf[ws::kHeaderSize];
  ws::EncodeHeader(h, buf);
  return std::string(buf, sizeof(buf)) + method + payload;
}

std::string HeaderBytes(uint32_t body_size, uint64_t cid, uint16_t flags, uint16_t meta_size) {
  ws::FrameHeader h;
  h.body_size = body_size;
  h.correlation_id = cid;
  h.flags = flags;
  h.meta_size = meta_size;
  char buf[ws::kHeaderSize];
  ws::EncodeHeader(h, buf);
  return std::string(buf, sizeof(buf));
}

// A blocking TCP client speaking weft_std by hand.
class RawClient {
 public:
  explicit RawClient(const EndPoint& server) : fd_(test::connect_to(server)) {}
  ~RawClient() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  bool Send(const std::string& bytes) { return test::send_all(fd_, bytes); }
  bool Call(uint64_t cid, const std::string& method, const std::string& payload) {
    return Send(RequestBytes(cid, method, payload));
  }

  // One response frame; false on EOF, error or timeout.
  bool Read(Frame* f, int64_t timeout_ms = kLong.count()) {
    std::string h;
    if (!ReadN(ws::kHeaderSize, &h, timeout_ms)) return false;
    if (memcmp(h.data(), ws::kMagic, 4) != 0) return false;
    f->header = ws::DecodeHeader(h.data());
    std::string body;
    if (!ReadN(f->header.body_size, &body, timeout_ms)) return false;
    f->meta = body.substr(0, f->header.meta_size);
    f->payload = body.substr(f->header.meta_size);
    return true;
  }

  // True when the server closed the connection (EOF or reset) within
  // timeout_ms, with nothing (more) to read.
  bool ClosedByPeer(int64_t timeout_ms = 5000 * test::kTimeScale) {
    std::string ignored;
    return test::closed_by_peer(fd_, timeout_ms, &ignored);
  }

 private:
  bool ReadN(size_t want, std::string* out, int64_t timeout_ms) {
    const int64_t deadline = now_ms() + timeout_ms;
    while (buf_.size() < want) {
      const int64_t left = deadline - now_ms();
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      const int rc = poll(&p, 1, static_cast<int>(left));
      if (rc < 0 && errno != EINTR) return false;
      if (rc <= 0) continue;
      char c[65536];
      const ssize_t n = recv(fd_, c, sizeof(c), 0);
      if (n == 0) return false;
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return false;
      }
      buf_.append(c, static_cast<size_t>(n));
    }
    *out = buf_.substr(0, want);
    buf_.erase(0, want);
    return true;
  }

  int fd_ = -1;
  std::string buf_;
};

// Waits (bounded) until pred() holds.
template <typename Pred>
bool WaitFor(Pred pred, int64_t timeout_ms = kLong.count()) {
  const int64_t deadline = now_ms() + timeout_ms;
  while (!pred()) {
    if (now_ms() > deadline) return false;
    usleep(1000);
  }
  return true;
}

// Server methods the tests register: "echo" answers its payload; "sleep"
// sleeps the payload's milliseconds in its fiber, then echoes.
inline void Echo(Controller*, const IOBuf& req, IOBuf* resp, Closure done) {
  resp->append(req);
  done();
}

inline void Sleep(Controller*, const IOBuf& req, IOBuf* resp, Closure done) {
  bthread_usleep(std::stoll(req.to_string()) * 1000);
  resp->append(req);
  done();
}

}  // namespace weft::rpc::test_raw

#endif  // WEFT_TESTS_RPC_WEFT_STD_RAW_CLIENT_H_
