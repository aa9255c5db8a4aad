// Helpers shared by the locks in this folder.
#ifndef WEFT_SYNC_SYNC_UTIL_H_
#define WEFT_SYNC_SYNC_UTIL_H_

#include <time.h>

#include <atomic>

#include "base/time_util.h"
#include "wait/butex_internal.h"

namespace weft::sync {

// The butex behind a word handed out by butex_create (and stored in the C
// structs as a plain pointer).
template <typename T>
inline wait::Butex* butex_at(T* word) {
  return reinterpret_cast<wait::Butex*>(word);
}
template <typename T>
inline std::atomic<int>* atomic_at(T* word) {
  return reinterpret_cast<std::atomic<int>*>(word);
}

inline int64_t deadline_of(const timespec* abstime) {
  return abstime == nullptr ? base::kNoDeadline : base::realtime_to_monotonic_deadline(*abstime);
}

// Locks that ignore interrupts still consume them in butex_wait; this puts
// the interrupt back for the fiber's next blocking call.
void rearm_interrupt();

// Acquires a mutex word past the fast path (see mutex.cpp), leaving it at 2
// ("locked, maybe waiters"). 0, ETIMEDOUT, or ENOMEM when no timer could be
// set for `deadline`.
int mutex_lock_slow(std::atomic<int>* word, int64_t deadline);

}  // namespace weft::sync

#endif  // WEFT_SYNC_SYNC_UTIL_H_
