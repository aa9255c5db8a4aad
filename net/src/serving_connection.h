// Internal: the connection whose message the calling fiber is running.
//
// InputMessenger sets it around each `process` call; Acceptor::StopAccept
// reads it so that a handler stopping its own acceptor does not wait for its
// own connection (which cannot recycle while the handler runs). A per-fiber
// value (the runtime's fiber tag, runtime/src/sched/fiber_tag.h), not a
// thread-local: a handler may suspend and resume on another worker, and
// another fiber running on this worker meanwhile must not see it.
#ifndef WEFT_NET_SERVING_CONNECTION_H_
#define WEFT_NET_SERVING_CONNECTION_H_

#include <stdint.h>

#include "sched/fiber_tag.h"
#include "weft/net/socket_id.h"

namespace weft::net_internal {

// The value is id + 1, so a fiber's initial 0 means "none"
// (INVALID_SOCKET_ID is all ones).
inline void set_serving_connection(SocketId id) { sched::set_current_fiber_tag(id + 1); }

inline SocketId serving_connection() {
  return static_cast<SocketId>(sched::current_fiber_tag()) - 1;
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
