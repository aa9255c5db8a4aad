// bthread_rwlock_*: state guarded by an internal bthread mutex, with one
// sequence butex for waiting readers and one for waiting writers. A writer
// that waits blocks new readers (writer preference), so a stream of
// readers can never starve a writer.
#include <errno.h>

#include <climits>

#include "sync/sync_util.h"
#include "weft/bthread.h"
#include "weft/butex.h"

using weft::sync::atomic_at;
using weft::sync::butex_at;

namespace {

// Waits on `seq` with the state mutex released; re-takes it after. The
// sequence is read under the mutex and bumped under it by unlock, so a wake
// between our unlock and our wait is not lost.
void wait_on(bthread_rwlock_t* rw, int* seq) {
  const int expected = atomic_at(seq)->load(std::memory_order_relaxed);
  bthread_mutex_unlock(&rw->lock);
  bool swallowed = false;
  if (weft::wait::butex_wait_until(butex_at(seq), expected, weft::base::kNoDeadline) != 0 &&
      errno == EINTR) {
    swallowed = true;
  }
  bthread_mutex_lock(&rw->lock);
  if (swallowed) weft::sync::rearm_interrupt();
}

}  // namespace

extern "C" {

int bthread_rwlock_init(bthread_rwlock_t* rw, const bthread_rwlockattr_t*) {
  rw->readers = 0;
  rw->writer = 0;
  rw->waiting_writers = 0;
  rw->read_seq = weft::butex_create_checked<int>();
  rw->write_seq = weft::butex_create_checked<int>();
  const int rc = bthread_mutex_init(&rw->lock, nullptr);
  if (rw->read_seq == nullptr || rw->write_seq == nullptr || rc != 0) {
    weft::butex_destroy(rw->read_seq);
    weft::butex_destroy(rw->write_seq);
    if (rc == 0) bthread_mutex_destroy(&rw->lock);
    return ENOMEM;
  }
  return 0;
}

int bthread_rwlock_destroy(bthread_rwlock_t* rw) {
  weft::butex_destroy(rw->read_seq);
  weft::butex_destroy(rw->write_seq);
  bthread_mutex_destroy(&rw->lock);
  return 0;
}

int bthread_rwlock_rdlock(bthread_rwlock_t* rw) {
  bthread_mutex_lock(&rw->lock);
  while (rw->writer || rw->waiting_writers > 0) wait_on(rw, rw->read_seq);
  ++rw->readers;
  bthread_mutex_unlock(&rw->lock);
  return 0;
}

int bthread_rwlock_tryrdlock(bthread_rwlock_t* rw) {
  bthread_mutex_lock(&rw->lock);
  const bool ok = !rw->writer && rw->waiting_writers == 0;
  if (ok) ++rw->readers;
  bthread_mutex_unlock(&rw->lock);
  return ok ? 0 : EBUSY;
}

int bthread_rwlock_wrlock(bthread_rwlock_t* rw) {
  bthread_mutex_lock(&rw->lock);
  ++rw->waiting_writers;
  while (rw->writer || rw->readers > 0) wait_on(rw, rw->write_seq);
  --rw->waiting_writers;
  rw->writer = 1;
  bthread_mutex_unlock(&rw->lock);
  return 0;
}

int bthread_rwlock_trywrlock(bthread_rwlock_t* rw) {
  bthread_mutex_lock(&rw->lock);
  const bool ok = !rw->writer && rw->readers == 0;
  if (ok) rw->writer = 1;
  bthread_mutex_unlock(&rw->lock);
  return ok ? 0 : EBUSY;
}

int bthread_rwlock_unlock(bthread_rwlock_t* rw) {
  // Read before the state mutex is released: after that a waiter may take
  // the lock, release it and destroy *rw before we wake.
  int* const write_seq = rw->write_seq;
  int* const read_seq = rw->read_seq;
  bthread_mutex_lock(&rw->lock);
  if (rw->writer) {
    rw->writer = 0;
  } else if (rw->readers > 0) {
    --rw->readers;
  } else {
    bthread_mutex_unlock(&rw->lock);
    return EPERM;  // not locked
  }
  bool wake_writer = false;
  bool wake_readers = false;
  if (rw->readers == 0 && rw->waiting_writers > 0) {
    atomic_at(write_seq)->fetch_add(1, std::memory_order_relaxed);
    wake_writer = true;
  } else if (rw->waiting_writers == 0 && !rw->writer) {
    atomic_at(read_seq)->fetch_add(1, std::memory_order_relaxed);
    wake_readers = true;
  }
  bthread_mutex_unlock(&rw->lock);
  if (wake_writer) weft::wait::butex_wake_some(butex_at(write_seq), 1, 0);
  if (wake_readers) weft::wait::butex_wake_some(butex_at(read_seq), INT_MAX, 0);
  return 0;
}

}  // extern "C"
