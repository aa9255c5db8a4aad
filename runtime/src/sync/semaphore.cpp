// bthread_sem_*: the count is the butex word; waiters sleep while it is 0.
#include <errno.h>

#include "sync/sync_util.h"
#include "weft/bthread.h"
#include "weft/butex.h"

using weft::sync::atomic_at;
using weft::sync::butex_at;

namespace {

bool try_take(std::atomic<int>* count) {
  int v = count->load(std::memory_order_relaxed);
  while (v > 0) {
    // Acquire pairs with the release fetch_add in post.
    if (count->compare_exchange_weak(v, v - 1, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

// Interrupts do not end the wait (as in bthread): one consumed while
// waiting is re-armed for the fiber's next blocking call.
int sem_wait_until(bthread_sem_t* sem, int64_t deadline) {
  unsigned* const word = sem->butex;
  std::atomic<int>* count = atomic_at(word);
  bool swallowed = false;
  int rc = 0;
  for (;;) {
    if (try_take(count)) break;
    if (weft::wait::butex_wait_until(butex_at(word), 0, deadline) != 0) {
      const int err = errno;
      if (err == EINTR) {
        swallowed = true;
      } else if (err == ETIMEDOUT || err == ENOMEM) {
        // ENOMEM: no timer for the deadline. Retrying would spin.
        rc = err;
        break;
      }
    }
  }
  if (swallowed) weft::sync::rearm_interrupt();
  return rc;
}

}  // namespace

extern "C" {

int bthread_sem_init(bthread_sem_t* sem, unsigned value) {
  sem->butex = weft::butex_create_checked<unsigned>();
  if (sem->butex == nullptr) return ENOMEM;
  atomic_at(sem->butex)->store(static_cast<int>(value), std::memory_order_relaxed);
  return 0;
}

int bthread_sem_destroy(bthread_sem_t* sem) {
  weft::butex_destroy(sem->butex);
  sem->butex = nullptr;
  return 0;
}

int bthread_sem_wait(bthread_sem_t* sem) { return sem_wait_until(sem, weft::base::kNoDeadline); }

int bthread_sem_trywait(bthread_sem_t* sem) {
  return try_take(atomic_at(sem->butex)) ? 0 : EAGAIN;
}

int bthread_sem_timedwait(bthread_sem_t* sem, const struct timespec* abstime) {
  return sem_wait_until(sem, weft::sync::deadline_of(abstime));
}

int bthread_sem_post(bthread_sem_t* sem) { return bthread_sem_post_n(sem, 1); }

int bthread_sem_post_n(bthread_sem_t* sem, unsigned n) {
  if (n == 0) return 0;
  // Read before the fetch_add, which may let a waiter return and destroy
  // *sem (allowed once no thread is blocked on it).
  unsigned* const word = sem->butex;
  atomic_at(word)->fetch_add(static_cast<int>(n), std::memory_order_release);
  weft::wait::butex_wake_some(butex_at(word), static_cast<int>(n), 0);
  return 0;
}

}  // extern "C"
