// Internal: warning lines for the net layer, at most one per second per call
// site, so a peer that misbehaves in a loop cannot flood stderr.
#ifndef WEFT_NET_NET_LOG_H_
#define WEFT_NET_NET_LOG_H_

#include <stdio.h>

#include <atomic>

#include "base/time_util.h"

namespace weft::net_internal {

// True when the call site owning `last_ns` may log now. Relaxed: losing a
// race only drops or doubles one log line.
inline bool log_allowed(std::atomic<int64_t>* last_ns) {
  const int64_t now = base::coarse_monotonic_ns();
  int64_t prev = last_ns->load(std::memory_order_relaxed);
  if (prev != 0 && now - prev < 1000000000) return false;
  return last_ns->compare_exchange_strong(prev, now, std::memory_order_relaxed);
}

}  // namespace weft::net_internal

#define WEFT_NET_WARN(...)                                               \
  do {                                                                   \
    static std::atomic<int64_t> weft_log_last_ns_{0};                    \
    if (::weft::net_internal::log_allowed(&weft_log_last_ns_)) {         \
      fprintf(stderr, "weft net: " __VA_ARGS__);                         \
      fputc('\n', stderr);                                               \
    }                                                                    \
  } while (0)

#endif  // WEFT_NET_NET_LOG_H_
