// Internal: the connection whose message the calling fiber is running.
//
// InputMessenger sets it around each `process` call; Acceptor::StopAccept
// reads it so that a handler stopping its own acceptor does not wait for its
// own connection (which cannot recycle while the handler runs). A fiber-local
// value, not a thread-local: a handler may suspend and resume on another
// worker, and another fiber running on this worker meanwhile must not see it.
#ifndef WEFT_NET_SERVING_CONNECTION_H_
#define WEFT_NET_SERVING_CONNECTION_H_

#include <stdint.h>

#include "weft/bthread.h"
#include "weft/net/socket_id.h"

namespace weft::net_internal {

// Created once, never deleted (values are plain ids: no destructor).
// bthread_key_create failing leaves an invalid key: setspecific then fails
// and serving_connection() answers INVALID_SOCKET_ID (StopAccept then waits
// for every connection, as it would without this).
inline bthread_key_t serving_connection_key() {
  static const bthread_key_t key = [] {
    bthread_key_t k{};
    if (bthread_key_create(&k, nullptr) != 0) k = bthread_key_t{};
    return k;
  }();
  return key;
}

// The value is id + 1, so INVALID_SOCKET_ID (all ones) is stored as null:
// a fiber's table ends with nothing to destroy.
inline void set_serving_connection(SocketId id) {
  bthread_setspecific(serving_connection_key(),
                      reinterpret_cast<void*>(static_cast<uintptr_t>(id + 1)));
}

inline SocketId serving_connection() {
  return static_cast<SocketId>(
             reinterpret_cast<uintptr_t>(bthread_getspecific(serving_connection_key()))) -
         1;
}

// Marks the calling fiber as running a message of `id` for its lifetime.
class ServingConnectionScope {
 public:
  explicit ServingConnectionScope(SocketId id) : prev_(serving_connection()) {
    set_serving_connection(id);
  }
  ~ServingConnectionScope() { set_serving_connection(prev_); }
  ServingConnectionScope(const ServingConnectionScope&) = delete;
  ServingConnectionScope& operator=(const ServingConnectionScope&) = delete;

 private:
  const SocketId prev_;
};

}  // namespace weft::net_internal

#endif  // WEFT_NET_SERVING_CONNECTION_H_
