// bthread_cond_*: a sequence butex. A waiter reads the sequence while it
// holds the mutex, releases the mutex and waits for the sequence to move;
// signal/broadcast move it and wake. A signal sent between the unlock and
// the wait changes the sequence, so the wait returns at once: no lost
// wake-ups.
#include <errno.h>

#include <climits>

#include "sync/sync_util.h"
#include "weft/bthread.h"
#include "weft/butex.h"

using weft::sync::atomic_at;
using weft::sync::butex_at;

namespace {

int cond_wait_until(bthread_cond_t* cond, bthread_mutex_t* mutex, int64_t deadline) {
  std::atomic<int>* seq = atomic_at(cond->seq);
  const int expected = seq->load(std::memory_order_relaxed);
  __atomic_store_n(&cond->m, mutex, __ATOMIC_RELAXED);
  bthread_mutex_unlock(mutex);
  int rc = 0;
  if (weft::wait::butex_wait_until(butex_at(cond->seq), expected, deadline) != 0 &&
      errno == ETIMEDOUT) {
    rc = ETIMEDOUT;
  }
  // EINTR (interrupted or stopped) ends the wait with 0, as in bthread.
  bthread_mutex_lock(mutex);
  return rc;
}

}  // namespace

extern "C" {

int bthread_cond_init(bthread_cond_t* cond, const bthread_condattr_t*) {
  cond->m = nullptr;
  cond->seq = weft::butex_create_checked<int>();
  return cond->seq == nullptr ? ENOMEM : 0;
}

int bthread_cond_destroy(bthread_cond_t* cond) {
  weft::butex_destroy(cond->seq);
  cond->seq = nullptr;
  return 0;
}

int bthread_cond_signal(bthread_cond_t* cond) {
  atomic_at(cond->seq)->fetch_add(1, std::memory_order_release);
  weft::wait::butex_wake_some(butex_at(cond->seq), 1, 0);
  return 0;
}

int bthread_cond_broadcast(bthread_cond_t* cond) {
  atomic_at(cond->seq)->fetch_add(1, std::memory_order_release);
  weft::wait::butex_wake_some(butex_at(cond->seq), INT_MAX, 0);
  return 0;
}

int bthread_cond_wait(bthread_cond_t* cond, bthread_mutex_t* mutex) {
  return cond_wait_until(cond, mutex, weft::base::kNoDeadline);
}

int bthread_cond_timedwait(bthread_cond_t* cond, bthread_mutex_t* mutex,
                           const struct timespec* abstime) {
  return cond_wait_until(cond, mutex, weft::sync::deadline_of(abstime));
}

}  // extern "C"
