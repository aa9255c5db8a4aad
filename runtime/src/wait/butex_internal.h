// Butex internals shared by the scheduler (join, sleep, interrupt).
//
// A waiter is a node on the waiting party's own stack, linked into the
// butex's list under the butex's spinlock. Whoever unlinks it (a waker, the
// timeout callback, an interrupter) owns the wake-up: unlinking happens under
// the lock and clears `container`, so exactly one party resumes the waiter,
// whatever races. The waiting side does not leave butex_wait while another
// party may still touch its node (see timer_done and the current_waiter
// token in TaskMeta).
#ifndef WEFT_WAIT_BUTEX_INTERNAL_H_
#define WEFT_WAIT_BUTEX_INTERNAL_H_

#include <stdint.h>

#include <atomic>

#include "base/spinlock.h"
#include "base/time_util.h"
#include "weft/bthread.h"

namespace weft::sched {
struct TaskMeta;
}

namespace weft::wait {

struct Butex;

struct ButexWaiter {
  ButexWaiter* prev = nullptr;  // list links: guarded by container's lock
  ButexWaiter* next = nullptr;
  // The butex whose list holds this node, or null once unlinked. Written
  // under that butex's lock; read without it to find which lock to take.
  std::atomic<Butex*> container{nullptr};
  sched::TaskMeta* fiber = nullptr;  // null: a pthread waiter
  std::atomic<int> futex_word{0};    // pthread waiter: becomes 1 when woken
  int reason = 0;  // why it was resumed: 0, EWOULDBLOCK, ETIMEDOUT or EINTR
  // Timeout handshake: the callback stores timeout_fired then loads
  // container; the enqueuer stores container then loads timeout_fired.
  std::atomic<bool> timeout_fired{false};
  std::atomic<bool> timer_done{false};  // the callback's last touch of the node
  uint64_t timer_id = 0;
};

struct Butex {
  Butex() { waiters.prev = waiters.next = &waiters; }
  std::atomic<int> value{0};  // first member: butex_create hands out its address
  base::SpinLock lock;
  ButexWaiter waiters;  // sentinel of a circular list, guarded by lock
  uint32_t slot = 0;
};

Butex* butex_alloc();
void butex_free(Butex* b);
inline Butex* butex_of(void* word) { return reinterpret_cast<Butex*>(word); }

// Waits while b->value == expected, until `deadline` (CLOCK_MONOTONIC ns;
// base::kNoDeadline for none). 0 when woken; -1 with errno EWOULDBLOCK,
// ETIMEDOUT, EINTR or ENOMEM. Fiber or pthread.
int butex_wait_until(Butex* b, int expected, int64_t deadline);

// Wakes up to `max` waiters, skipping fiber `excluded` (0: none).
int butex_wake_some(Butex* b, int max, bthread_t excluded);

// Resumes a waiter this thread unlinked: readies its fiber, or wakes its
// pthread.
void resume_waiter(ButexWaiter* w);

// Unlinks `w` from whatever butex holds it, recording `reason`. True if
// this call unlinked it (the caller then owns resuming it).
bool erase_waiter(ButexWaiter* w, int reason);

}  // namespace weft::wait

#endif  // WEFT_WAIT_BUTEX_INTERNAL_H_
