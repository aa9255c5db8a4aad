// bthread_cond_*: a sequence butex. A waiter reads the sequence while it
// holds the mutex, releases the mutex and waits for the sequence to move;
// signal/broadcast move it and wake. A signal sent between the unlock and
// the wait changes the sequence, so the wait returns at once: no lost
// wake-ups. Broadcast wakes one waiter and requeues the rest onto the
// mutex's butex; every waiter re-locks as a contended locker (word 2), so
// each unlock hands the mutex to the next of them.
#include <errno.h>

#include <climits>

#include "sync/sync_util.h"
#include "weft/bthread.h"
#include "weft/butex.h"

using weft::sync::atomic_at;
using weft::sync::butex_at;

namespace {

int cond_wait_until(bthread_cond_t* cond, bthread_mutex_t* mutex, int64_t deadline) {
  // Read before the wait: once it is over, a signaller may destroy the cond
  // (POSIX allows that as soon as no thread is blocked on it).
  int* const seq_word = cond->seq;
  const int expected = atomic_at(seq_word)->load(std::memory_order_relaxed);
  // Published before we link into the butex (under its lock), so a
  // broadcaster that sees us linked sees our mutex.
  __atomic_store_n(&cond->m, mutex, __ATOMIC_RELAXED);
  bthread_mutex_unlock(mutex);
  int rc = 0;
  if (weft::wait::butex_wait_until(butex_at(seq_word), expected, deadline) != 0) {
    // EINTR (interrupted or stopped) ends the wait with 0, as in bthread.
    // ENOMEM: no timer for the deadline; 0 would make the caller's loop spin.
    if (errno == ETIMEDOUT || errno == ENOMEM) rc = errno;
  }
  // Locked as a contended locker (the word goes to 2) even when free: a
  // broadcast may have moved other waiters onto the mutex's butex, and only
  // an unlock that sees 2 wakes the next of them.
  weft::sync::mutex_lock_slow(atomic_at(mutex->butex), weft::base::kNoDeadline);
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
  // Nothing of *cond is read after the fetch_add, which may let a waiter
  // return and destroy it.
  int* const seq_word = cond->seq;
  atomic_at(seq_word)->fetch_add(1, std::memory_order_release);
  weft::wait::butex_wake_some(butex_at(seq_word), 1, 0);
  return 0;
}

// Wakes one waiter and moves the others onto the mutex's butex (no
// thundering herd: each is woken by the unlock of the one before it).
int bthread_cond_broadcast(bthread_cond_t* cond) {
  int* const seq_word = cond->seq;
  weft::wait::Butex* const seq = butex_at(seq_word);
  // The mutex to move them to, read while a waiter is linked: that waiter
  // re-locks its mutex before it returns, so the mutex is alive now (and
  // cond->m, stored before it linked, is that mutex). With nobody linked,
  // cond->m may name a mutex long destroyed: leave it alone.
  void* mutex_word = nullptr;
  seq->lock.lock();
  if (seq->waiters.next != &seq->waiters) {
    bthread_mutex_t* m = __atomic_load_n(&cond->m, __ATOMIC_RELAXED);
    if (m != nullptr) mutex_word = m->butex;
  }
  seq->lock.unlock();
  atomic_at(seq_word)->fetch_add(1, std::memory_order_release);
  // From here on only butexes (type-stable) are touched, not *cond.
  if (mutex_word == nullptr) {
    // Nobody was linked a moment ago: wake whoever came in since.
    weft::wait::butex_wake_some(seq, INT_MAX, 0);
  } else {
    weft::butex_requeue(seq_word, mutex_word);
  }
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
