// Internal: the net layer's counters, registered in the runtime's metrics
// (weft::dump_metrics lists them).
#ifndef WEFT_NET_NET_METRICS_H_
#define WEFT_NET_NET_METRICS_H_

#include "weft/metrics.h"

namespace weft::net_internal {

struct NetMetrics {
  // KeepWrite fibers started (writes the caller could not finish at once).
  Counter nkeepwrite{"weft_nkeepwrite"};
  // Times KeepWrite waited for the fd to become writable.
  Counter nwaitepollout{"weft_nwaitepollout"};
  // Reading fibers started by StartInputEvent (at most one per socket at a
  // time; events arriving while one runs only bump nevent_).
  Counter neventthread{"weft_neventthread"};
};

// Leaked on purpose: counters may be bumped by fibers during exit.
inline NetMetrics& net_metrics() {
  static NetMetrics* m = new NetMetrics;
  return *m;
}

}  // namespace weft::net_internal

#endif  // WEFT_NET_NET_METRICS_H_
