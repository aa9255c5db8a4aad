// Test-only fault injection for failures that cannot be provoked from
// outside: a countdown makes the N-th next call of one fallible step fail
// (1: the next call), as if the resource had run out. 0, the default,
// disables it; a disarmed check is one relaxed load, on paths that already
// allocate or create a thread. Tests set the countdowns directly (they link
// against the runtime's internals).
#ifndef WEFT_BASE_FAULT_INJECTION_H_
#define WEFT_BASE_FAULT_INJECTION_H_

#include <atomic>

namespace weft::base {

// Consumes one step of `countdown`; true when this call is the one to fail.
inline bool inject_fault(std::atomic<int>& countdown) {
  int v = countdown.load(std::memory_order_relaxed);
  while (v > 0) {
    if (countdown.compare_exchange_weak(v, v - 1, std::memory_order_relaxed)) return v == 1;
  }
  return false;
}

}  // namespace weft::base

namespace weft::wait {
// butex.cpp: the timer_add of a fiber's timed wait fails with ENOMEM.
extern std::atomic<int> g_fault_timer_add;
}  // namespace weft::wait

namespace weft::sched {
// fiber_lifecycle.cpp: the butex_alloc for a slot's per-slot butexes (the
// first time a slot is used; two per slot) returns null.
extern std::atomic<int> g_fault_meta_butex_alloc;
// fiber_lifecycle.cpp: the pthread_create of a BTHREAD_ATTR_PTHREAD fiber
// fails with EAGAIN.
extern std::atomic<int> g_fault_pthread_create;
}  // namespace weft::sched

#endif  // WEFT_BASE_FAULT_INJECTION_H_
