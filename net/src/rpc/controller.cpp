#include "weft/rpc/controller.h"

#include <stdarg.h>
#include <stdio.h>

namespace weft::rpc {

void Controller::Reset() {
  timeout_ms_ = kUnset;
  max_retry_ = kUnset;
  error_code_ = 0;
  error_text_.clear();
  latency_us_ = 0;
  remote_side_ = EndPoint();
  retried_count_ = 0;
  call_id_ = INVALID_BTHREAD_ID;
  request_object_ = nullptr;
  request_type_ = nullptr;
}

void Controller::SetFailed(int error_code, const char* fmt, ...) {
  error_code_ = error_code != 0 ? error_code : EINVAL;
  error_text_.clear();
  if (fmt != nullptr) {
    va_list ap;
    va_start(ap, fmt);
    char buf[256];
    va_list ap2;
    va_copy(ap2, ap);
    const int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    if (n >= 0 && static_cast<size_t>(n) < sizeof(buf)) {
      error_text_.assign(buf, static_cast<size_t>(n));
    } else if (n > 0) {
      error_text_.resize(static_cast<size_t>(n) + 1);
      vsnprintf(&error_text_[0], error_text_.size(), fmt, ap2);
      error_text_.resize(static_cast<size_t>(n));
    }
    va_end(ap2);
    va_end(ap);
  }
  if (error_text_.empty()) error_text_ = rpc::ErrorText(error_code_);
}

}  // namespace weft::rpc
