// weft/bthread.h: the C API of weft's fibers and timers.
//
// Mirrors Apache brpc's bthread name for name. Unless noted, functions return
// 0 on success and an errno value on failure, and may be called from any
// pthread, whether or not it is one of weft's workers. Functions that "may
// suspend" suspend only the calling fiber when called from a fiber (its
// worker keeps running other fibers) and block the pthread otherwise.
#ifndef WEFT_BTHREAD_H_
#define WEFT_BTHREAD_H_

#include <stdint.h>
#include <time.h>

#include "weft/errno.h"

#ifdef __cplusplus
extern "C" {
#endif

// A fiber id. 0 is never valid. Ids are versioned: once a fiber ends, its id
// never names a later fiber, so joining, stopping or interrupting a stale id
// is safe and answers at once.
typedef uint64_t bthread_t;

typedef struct bthread_keytable_pool_t bthread_keytable_pool_t;

typedef enum bthread_stacktype_t {
  BTHREAD_STACKTYPE_UNKNOWN = 0,
  BTHREAD_STACKTYPE_PTHREAD = 1,  // run in a dedicated pthread
  BTHREAD_STACKTYPE_SMALL = 2,    // --weft_stack_size_small (32 KiB)
  BTHREAD_STACKTYPE_NORMAL = 3,   // --weft_stack_size_normal (1 MiB)
  BTHREAD_STACKTYPE_LARGE = 4     // --weft_stack_size_large (8 MiB)
} bthread_stacktype_t;

typedef unsigned bthread_attrflags_t;
// Queue the new fiber but do not wake an idle worker until bthread_flush().
#define BTHREAD_NOSIGNAL 0x01u

typedef struct bthread_attr_t {
  bthread_stacktype_t stack_type;
  bthread_attrflags_t flags;
  bthread_keytable_pool_t* keytable_pool;
} bthread_attr_t;

extern const bthread_attr_t BTHREAD_ATTR_PTHREAD;
extern const bthread_attr_t BTHREAD_ATTR_SMALL;
extern const bthread_attr_t BTHREAD_ATTR_NORMAL;
extern const bthread_attr_t BTHREAD_ATTR_LARGE;

// Starts fn(arg) in a new fiber and switches to it at once on the calling
// worker; the caller is queued and may be stolen by another worker. From a
// pthread that is not a worker it behaves as bthread_start_background.
// attr may be NULL (BTHREAD_ATTR_NORMAL), tid may be NULL. Errors: EINVAL (fn
// is NULL or attr names no stack type), EAGAIN (fiber limit
// --weft_max_fibers reached, or no pthread for BTHREAD_ATTR_PTHREAD), ENOMEM
// (no memory for a stack). Never blocks on a shortage.
int bthread_start_urgent(bthread_t* tid, const bthread_attr_t* attr, void* (*fn)(void*),
                         void* arg);

// Starts fn(arg) in a new fiber and queues it; the caller keeps running.
// Same arguments and errors as bthread_start_urgent.
int bthread_start_background(bthread_t* tid, const bthread_attr_t* attr, void* (*fn)(void*),
                             void* arg);

// Wakes idle workers for the fibers this thread queued with BTHREAD_NOSIGNAL.
void bthread_flush(void);

// Waits until fiber `bt` ends; may suspend. *ret (if ret is not NULL) gets
// the fiber function's return value or the value it gave bthread_exit. An id
// that already ended answers 0 at once: *ret still gets the value while the
// fiber's slot has not been reused by a later fiber, NULL after that.
// EINVAL: bt is 0, was never issued, or is the caller itself. Not ended by
// interrupts.
int bthread_join(bthread_t bt, void** ret);

// The calling fiber's id, or 0 in a pthread that is not running a fiber.
bthread_t bthread_self(void);

// Non-zero when t1 and t2 name the same fiber.
int bthread_equal(bthread_t t1, bthread_t t2);

// Ends the calling fiber now (its stack unwinds, running destructors), with
// retval for bthread_join. In a pthread it is pthread_exit.
void bthread_exit(void* retval) __attribute__((__noreturn__));

// Queues the calling fiber and runs another ready one; returns 0. Returns at
// once when nothing else is ready. In a pthread it is sched_yield.
int bthread_yield(void);

// Sleeps the calling fiber (not its worker) for `microseconds`; may suspend.
// Returns 0, or -1 with errno ESTOP (the fiber was stopped) or EINTR (it was
// interrupted). Sleeps under 20 us, shorter than the kernel's timer latency,
// poll the clock on the worker while yielding to every ready fiber. In a
// pthread it is usleep(3).
int bthread_usleep(uint64_t microseconds);

// Marks fiber `tid` stopped and interrupts its current blocking call
// (bthread_usleep then fails with ESTOP, butex_wait with EINTR). EINVAL: no
// such fiber (it may have ended).
int bthread_stop(bthread_t tid);

// 1 when `tid` was stopped or has ended (or never existed), else 0.
int bthread_stopped(bthread_t tid);

// Wakes fiber `tid` from its current blocking call (usleep, butex_wait) with
// EINTR; if it is not blocked, its next blocking call fails with EINTR.
// Mutex locks and bthread_join are unaffected. EINVAL: no such fiber.
int bthread_interrupt(bthread_t tid);

// Number of worker pthreads that run fibers (--weft_concurrency, default the
// number of CPUs in the process's affinity mask).
int bthread_getconcurrency(void);

// Raises the worker count to `num` (may be called before or after the
// runtime starts). EPERM when num is below the current count (nothing
// changes); EINVAL when num is outside [1, 1024].
int bthread_setconcurrency(int num);

int bthread_attr_init(bthread_attr_t* attr);
int bthread_attr_destroy(bthread_attr_t* attr);

// ---- timers ----
typedef uint64_t bthread_timer_t;

// Runs fn(arg) on the timer thread at or after `abstime` (CLOCK_REALTIME).
// Callbacks run one at a time in deadline order and must be short. Returns
// 0, EINVAL (fn is NULL) or ENOMEM.
int bthread_timer_add(bthread_timer_t* id, struct timespec abstime, void (*on_timer)(void*),
                      void* arg);

// 0: removed before it ran (it never will). 1: running or already ran.
// EINVAL: no such timer, or already deleted. A timer id is reused only after
// its slot goes round the free list; a delete of an id that old answers 1.
int bthread_timer_del(bthread_timer_t id);

#ifdef __cplusplus
}  // extern "C"
#endif

#include "weft/bthread_fd.h"
#include "weft/bthread_id.h"
#include "weft/bthread_key.h"
#include "weft/bthread_sync.h"

#endif  // WEFT_BTHREAD_H_
