// bthread_mutex_*: a three-state futex mutex on a butex (0 unlocked, 1
// locked, 2 locked with possible waiters; U. Drepper, "Futexes Are
// Tricky", 2011). The uncontended lock is one CAS and the unlock one
// exchange; only an unlock that saw state 2 pays for a wake.
#include <errno.h>

#include "sched/fiber_lifecycle.h"
#include "sched/task_meta.h"
#include "sync/sync_util.h"
#include "weft/bthread.h"
#include "weft/butex.h"

namespace weft::sync {

void rearm_interrupt() {
  sched::TaskMeta* m = sched::current_fiber();
  if (m != nullptr) m->interrupted.store(true, std::memory_order_release);
}

int mutex_lock_slow(std::atomic<int>* word, int64_t deadline) {
  bool swallowed = false;
  int rc = 0;
  // Acquire pairs with the release exchange in unlock. Setting 2 even when
  // we take the lock is conservative: the unlock may wake in vain, never
  // too few.
  while (word->exchange(2, std::memory_order_acquire) != 0) {
    if (wait::butex_wait_until(butex_at(word), 2, deadline) != 0) {
      const int err = errno;
      // ENOMEM: no timer for the deadline. Retrying would spin.
      if (err == ETIMEDOUT || err == ENOMEM) {
        rc = err;
        break;
      }
      if (err == EINTR) swallowed = true;
    }
  }
  if (swallowed) rearm_interrupt();
  return rc;
}

}  // namespace weft::sync

using weft::sync::atomic_at;
using weft::sync::butex_at;

extern "C" {

int bthread_mutex_init(bthread_mutex_t* mutex, const bthread_mutexattr_t*) {
  mutex->butex = weft::butex_create_checked<unsigned>();
  return mutex->butex == nullptr ? ENOMEM : 0;
}

int bthread_mutex_destroy(bthread_mutex_t* mutex) {
  weft::butex_destroy(mutex->butex);
  mutex->butex = nullptr;
  return 0;
}

int bthread_mutex_lock(bthread_mutex_t* mutex) {
  std::atomic<int>* word = atomic_at(mutex->butex);
  int expected = 0;
  if (word->compare_exchange_strong(expected, 1, std::memory_order_acquire,
                                    std::memory_order_relaxed)) {
    return 0;
  }
  return weft::sync::mutex_lock_slow(word, weft::base::kNoDeadline);
}

int bthread_mutex_trylock(bthread_mutex_t* mutex) {
  int expected = 0;
  return atomic_at(mutex->butex)
                 ->compare_exchange_strong(expected, 1, std::memory_order_acquire,
                                           std::memory_order_relaxed)
             ? 0
             : EBUSY;
}

int bthread_mutex_timedlock(bthread_mutex_t* mutex, const struct timespec* abstime) {
  std::atomic<int>* word = atomic_at(mutex->butex);
  int expected = 0;
  if (word->compare_exchange_strong(expected, 1, std::memory_order_acquire,
                                    std::memory_order_relaxed)) {
    return 0;
  }
  return weft::sync::mutex_lock_slow(word, weft::sync::deadline_of(abstime));
}

int bthread_mutex_unlock(bthread_mutex_t* mutex) {
  // Both pointers are read before the exchange: once the word is 0 the next
  // owner may unlock, destroy and free `mutex` before we wake. The butex
  // itself is type-stable, so a late wake on it is harmless.
  std::atomic<int>* word = atomic_at(mutex->butex);
  auto* const butex = butex_at(mutex->butex);
  // Release pairs with the acquiring CAS/exchange of the next owner.
  if (word->exchange(0, std::memory_order_release) == 2) {
    weft::wait::butex_wake_some(butex, 1, 0);
  }
  return 0;
}

}  // extern "C"
