// weft/rpc/controller.h: the per-call state of an RPC, on both sides.
//
// A client fills the call's options (timeout, retries) before CallMethod
// and reads the outcome after it ends; a server handler gets one per
// request and reports failure with SetFailed (the protocol sends the code
// and text back). One Controller serves one call at a time and is used by
// one fiber or pthread at a time (like a std::string): the side that
// ends the call (the Channel, or the handler before `done`) is the only
// writer until then. Reset() makes it reusable for another call.
#ifndef WEFT_RPC_CONTROLLER_H_
#define WEFT_RPC_CONTROLLER_H_

#include <stdint.h>

#include <string>
#include <type_traits>

#include "weft/bthread_id.h"
#include "weft/net/endpoint.h"
#include "weft/rpc/closure.h"
#include "weft/rpc/errno.h"

namespace weft::rpc {

class Controller {
 public:
  // timeout_ms / max_retry before set_*: "not set", the Channel's options
  // apply.
  static constexpr int kUnset = -2;

  Controller() = default;
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Back to a fresh Controller: no error, options unset, no call id.
  void Reset();

  // ---- client options (read by the Channel when the call starts) ----
  // The whole call's deadline in ms, retries included; -1: none.
  void set_timeout_ms(int64_t ms) { timeout_ms_ = ms; }
  int64_t timeout_ms() const { return timeout_ms_; }
  // Retries on connection errors only (never after a timeout).
  void set_max_retry(int n) { max_retry_ = n; }
  int max_retry() const { return max_retry_; }

  // ---- outcome ----
  bool Failed() const { return error_code_ != 0; }
  // 0, or the call's error (weft/rpc/errno.h or a system errno).
  int ErrorCode() const { return error_code_; }
  // Empty when not failed; otherwise what SetFailed formatted (never empty:
  // the code's name when the format gave nothing).
  const std::string& ErrorText() const { return error_text_; }
  // Marks the call failed with error_code (0 becomes EINVAL: brpc's
  // EINTERNAL is 2001, a value weft gives to ELOGOFF) and a printf-style
  // text. A later SetFailed replaces both.
  void SetFailed(int error_code, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

  // Microseconds from the call's start to its end (client: the Channel;
  // server: from the request's read to `done`).
  int64_t latency_us() const { return latency_us_; }
  // The peer: the server for a client call, the client for a handler.
  const EndPoint& remote_side() const { return remote_side_; }
  // Attempts after the first (client).
  int retried_count() const { return retried_count_; }
  // The call's bthread_id (client; INVALID_BTHREAD_ID before the call
  // starts): weft::rpc::Join / StartCancel take it.
  bthread_id_t call_id() const { return call_id_; }

  // ---- for the layer that runs the call (Channel, Server, protocols) ----
  void set_latency_us(int64_t us) { latency_us_ = us; }
  void set_remote_side(const EndPoint& ep) { remote_side_ = ep; }
  void set_retried_count(int n) { retried_count_ = n; }
  void set_call_id(bthread_id_t id) { call_id_ = id; }
  // A server protocol that decodes its requests (redis: into RedisArgs)
  // may hand the handler the decoded object besides the request bytes, so
  // the handler need not decode them again. request_object<T>() is that
  // object when the protocol set one of type T, else nullptr (another
  // type, or none). The object belongs to the protocol and lives until
  // the handler's done runs; Reset forgets it.
  template <typename T>
  void set_request_object(const T* object) {
    request_object_ = object;
    request_type_ = &TypeTag<std::remove_cv_t<T>>::tag;
  }
  template <typename T>
  const T* request_object() const {
    return request_type_ == &TypeTag<std::remove_cv_t<T>>::tag
               ? static_cast<const T*>(request_object_)
               : nullptr;
  }

 private:
  // One address per type (an inline variable: the same in every
  // translation unit), compared to tell request objects' types apart.
  // Not const: a linker folding identical constants (--icf=all) could give
  // every type's tag one address.
  template <typename T>
  struct TypeTag {
    static inline char tag = 0;
  };

  int64_t timeout_ms_ = kUnset;
  int max_retry_ = kUnset;
  int error_code_ = 0;
  std::string error_text_;
  int64_t latency_us_ = 0;
  EndPoint remote_side_;
  int retried_count_ = 0;
  bthread_id_t call_id_ = INVALID_BTHREAD_ID;
  const void* request_object_ = nullptr;
  const char* request_type_ = nullptr;
};

}  // namespace weft::rpc

#endif  // WEFT_RPC_CONTROLLER_H_
