// weft/bthread_sync.h: fiber-aware locks (part of the C API of
// weft/bthread.h, which includes this header).
//
// All are built on butexes: a fiber that blocks is suspended and its worker
// runs other fibers; a pthread that blocks sleeps in the kernel. Every lock
// works from fibers and pthreads alike, and a lock taken in one fiber may be
// released by the same fiber after it migrated to another worker. Functions
// return 0 or an errno value; "may suspend" as in weft/bthread.h.
#ifndef WEFT_BTHREAD_SYNC_H_
#define WEFT_BTHREAD_SYNC_H_

#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bthread_mutex_t {
  unsigned* butex;  // 0 unlocked, 1 locked, 2 locked with waiters
} bthread_mutex_t;
typedef struct bthread_mutexattr_t {
  int reserved;
} bthread_mutexattr_t;

// ENOMEM if no butex could be allocated. attr may be NULL.
int bthread_mutex_init(bthread_mutex_t* mutex, const bthread_mutexattr_t* attr);
int bthread_mutex_destroy(bthread_mutex_t* mutex);
// May suspend. Not ended by interrupts.
int bthread_mutex_lock(bthread_mutex_t* mutex);
// EBUSY when held.
int bthread_mutex_trylock(bthread_mutex_t* mutex);
// ETIMEDOUT when `abstime` (CLOCK_REALTIME) passes first, ENOMEM when no
// timer could be set up for it. May suspend. Not ended by interrupts.
int bthread_mutex_timedlock(bthread_mutex_t* mutex, const struct timespec* abstime);
int bthread_mutex_unlock(bthread_mutex_t* mutex);

typedef struct bthread_cond_t {
  bthread_mutex_t* m;  // the mutex of the latest wait (broadcast requeues onto it)
  int* seq;            // bumped by every signal/broadcast
} bthread_cond_t;
typedef struct bthread_condattr_t {
  int reserved;
} bthread_condattr_t;

int bthread_cond_init(bthread_cond_t* cond, const bthread_condattr_t* attr);
int bthread_cond_destroy(bthread_cond_t* cond);
// Wakes at least one waiter / all waiters. Broadcast wakes one and moves
// the others onto the mutex they wait with, to be woken one by one by its
// unlocks (no thundering herd): all waiters of a condition variable must use
// the same mutex at a time (as POSIX requires). A waiter that returned may
// destroy the condition variable at once, even while a signal or broadcast
// that released it is still running.
int bthread_cond_signal(bthread_cond_t* cond);
int bthread_cond_broadcast(bthread_cond_t* cond);
// Releases `mutex`, waits for a signal, re-acquires `mutex`. Returns 0 also
// when interrupted (as bthread) or woken spuriously: callers re-check their
// predicate. May suspend.
int bthread_cond_wait(bthread_cond_t* cond, bthread_mutex_t* mutex);
// As bthread_cond_wait; ETIMEDOUT when `abstime` passes first, ENOMEM when
// no timer could be set up for it (`mutex` is re-acquired in every case).
int bthread_cond_timedwait(bthread_cond_t* cond, bthread_mutex_t* mutex,
                           const struct timespec* abstime);

typedef struct bthread_sem_t {
  unsigned* butex;  // the count
} bthread_sem_t;

int bthread_sem_init(bthread_sem_t* sem, unsigned value);
int bthread_sem_destroy(bthread_sem_t* sem);
// May suspend. Not ended by interrupts (as in bthread): an interrupt that
// arrives while waiting is re-armed for the fiber's next blocking call.
int bthread_sem_wait(bthread_sem_t* sem);
// EAGAIN when the count is 0.
int bthread_sem_trywait(bthread_sem_t* sem);
// ETIMEDOUT when `abstime` passes first, ENOMEM when no timer could be set
// up for it. Interrupts as in bthread_sem_wait. May suspend.
int bthread_sem_timedwait(bthread_sem_t* sem, const struct timespec* abstime);
// A waiter that got the count may destroy the semaphore at once, even while
// the post that gave it is still running.
int bthread_sem_post(bthread_sem_t* sem);
int bthread_sem_post_n(bthread_sem_t* sem, unsigned n);

// Readers share, writers are exclusive; a waiting writer blocks new
// readers, so writers never starve.
typedef struct bthread_rwlock_t {
  bthread_mutex_t lock;  // guards the fields below
  int readers;           // readers holding the lock
  int writer;            // 1 when a writer holds it
  int waiting_writers;
  int* read_seq;   // butex readers wait on
  int* write_seq;  // butex writers wait on
} bthread_rwlock_t;
typedef struct bthread_rwlockattr_t {
  int reserved;
} bthread_rwlockattr_t;

int bthread_rwlock_init(bthread_rwlock_t* rwlock, const bthread_rwlockattr_t* attr);
int bthread_rwlock_destroy(bthread_rwlock_t* rwlock);
int bthread_rwlock_rdlock(bthread_rwlock_t* rwlock);     // may suspend
int bthread_rwlock_tryrdlock(bthread_rwlock_t* rwlock);  // EBUSY
int bthread_rwlock_wrlock(bthread_rwlock_t* rwlock);     // may suspend
int bthread_rwlock_trywrlock(bthread_rwlock_t* rwlock);  // EBUSY
int bthread_rwlock_unlock(bthread_rwlock_t* rwlock);

typedef struct bthread_once_t {
  int state;  // 0 not run, 1 running, 2 done
} bthread_once_t;
#define BTHREAD_ONCE_INIT {0}

// Runs init_routine exactly once across all callers; the others wait
// (suspending, in fibers) until it has returned.
int bthread_once(bthread_once_t* once_control, void (*init_routine)(void));

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // WEFT_BTHREAD_SYNC_H_
