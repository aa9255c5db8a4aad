// The timer thread: runs callbacks at their deadlines, in deadline order.
//
// Adding and deleting take no global lock. A timer goes into one of several
// buckets (picked per thread), each with its own spinlock and the earliest
// deadline it holds; only a timer earlier than everything the thread knows
// of touches the thread's mutex, to wake it. The thread drains the buckets
// into a private min-heap and sleeps on a futex until the earliest deadline.
//
// Ids are versioned slots. A slot's version word moves through
//   v (pending) -> v+1 (running) -> v+2 (ran)   or   v -> v+3 (deleted)
// and the slot is reused with version v+4; del is one CAS.
//
// Deleted timers do not wait for their deadline to give their slot back: one
// still in its bucket is unlinked by the next add on that bucket if it is at
// the head (the add, wait, del pattern), or at the next drain otherwise; one
// already in the heap is removed by a compaction once deleted entries are
// more than half the heap. Memory stays bounded by the live timers.
#ifndef WEFT_TIME_TIMER_THREAD_H_
#define WEFT_TIME_TIMER_THREAD_H_

#include <stdint.h>

namespace weft::timer {

// Schedules fn(arg) at `deadline` (CLOCK_MONOTONIC ns). Stores a non-zero id.
// Returns 0 or ENOMEM. Any thread; never blocks.
int timer_add(uint64_t* id, int64_t deadline, void (*fn)(void*), void* arg);

// 0: deleted before it ran; 1: running or ran; EINVAL: no such timer or
// already deleted. Any thread; never blocks.
int timer_del(uint64_t id);

// The earliest deadline the timer thread knows of (CLOCK_MONOTONIC ns;
// advisory, relaxed). Idle workers keep searching instead of parking when it
// is close, so the fiber the timer wakes is picked up without a futex wake.
int64_t next_deadline_hint();

// Counters for metrics and tests.
uint64_t timers_fired();
int64_t timers_pending();

// For tests: what the timer thread holds (relaxed snapshots).
struct TimerStats {
  int64_t heap_entries;  // entries in the heap, live and deleted
  uint64_t pulled;       // timers ever moved from the buckets into the heap
  uint32_t slots;        // timer slots ever allocated (the pool's high-water mark)
};
TimerStats timer_stats();

}  // namespace weft::timer

#endif  // WEFT_TIME_TIMER_THREAD_H_
