#include "weft/rpc/errno.h"

#include <stdio.h>
#include <string.h>

#include <string>
#include <vector>

namespace weft::rpc {

namespace {

const char* RpcText(int code) {
  switch (code) {
    case ENOSERVICE:
      return "ENOSERVICE: no such service";
    case ENOMETHOD:
      return "ENOMETHOD: no such method";
    case EREQUEST:
      return "EREQUEST: bad request";
    case ERPCAUTH:
      return "ERPCAUTH: authentication failed";
    case ETOOMANYFAILS:
      return "ETOOMANYFAILS: too many failures";
    case ERPCTIMEDOUT:
      return "ERPCTIMEDOUT: the call timed out";
    case EFAILEDSOCKET:
      return "EFAILEDSOCKET: the connection failed";
    case EOVERCROWDED:
      return "EOVERCROWDED: too many bytes queued on the connection";
    case EEOF:
      return "EEOF: the peer closed the connection";
    case ELOGOFF:
      return "ELOGOFF: the server is stopping";
    case ELIMIT:
      return "ELIMIT: the server reached max_concurrency";
    case ESTOP:
      return "ESTOP: the fiber was stopped";
    default:
      return nullptr;
  }
}

// strerror() may return a buffer that a later call on the same thread
// overwrites (and a fiber may migrate between threads), so the system's
// texts are copied once into strings that live as long as the process.
// The function-local static is initialized once, thread-safely (C++11).
constexpr int kMaxSystemErrno = 256;
const std::vector<std::string>& SystemTexts() {
  static const std::vector<std::string>* texts = [] {
    auto* v = new std::vector<std::string>(kMaxSystemErrno);
    for (int i = 0; i < kMaxSystemErrno; ++i) {
      char buf[128];
      // GNU strerror_r returns the text (maybe not in buf).
      const char* s = strerror_r(i, buf, sizeof(buf));
      (*v)[static_cast<size_t>(i)] = s != nullptr ? s : "";
    }
    return v;
  }();
  return *texts;
}

}  // namespace

const char* ErrorText(int error_code) {
  if (const char* t = RpcText(error_code)) return t;
  if (error_code >= 0 && error_code < kMaxSystemErrno) {
    const std::string& s = SystemTexts()[static_cast<size_t>(error_code)];
    if (!s.empty() && s.compare(0, 13, "Unknown error") != 0) return s.c_str();
  }
  return "unknown error";
}

}  // namespace weft::rpc
