// Fiber lifecycle: start, run, end, join, stop and interrupt.
#ifndef WEFT_SCHED_FIBER_LIFECYCLE_H_
#define WEFT_SCHED_FIBER_LIFECYCLE_H_

#include "sched/task_meta.h"
#include "weft/bthread.h"

namespace weft::sched {

// Thrown by bthread_exit; caught at the bottom of the fiber (or of the
// BTHREAD_ATTR_PTHREAD thread) so the stack unwinds.
struct FiberExit {
  void* value;
};

TaskMetaPool& task_pool();

int start_fiber(bthread_t* tid, const bthread_attr_t* attr, void* (*fn)(void*), void* arg,
                bool urgent);

// Runs m->fn(m->arg) and returns its result (or bthread_exit's value).
void* run_fiber_function(TaskMeta* m);

// Called once the fiber's stack is no longer in use: bumps the version,
// wakes joiners, frees the slot (or leaves that to the last joiner).
void fiber_finished(TaskMeta* m);

int join_fiber(bthread_t tid, void** ret);

// bthread_interrupt (stop = false) and bthread_stop (stop = true).
int interrupt_fiber(bthread_t tid, bool stop);
int fiber_stopped(bthread_t tid);

// The calling fiber's meta (also inside BTHREAD_ATTR_PTHREAD threads), or
// nullptr in a plain pthread.
TaskMeta* current_fiber();

// Fibers started and not yet ended, and started in total: sums of
// per-thread cells (a lock and one read per thread), exact when no fiber is
// starting or ending, approximate (by those in flight) otherwise.
int64_t fibers_alive();
uint64_t fibers_created();

}  // namespace weft::sched

#endif  // WEFT_SCHED_FIBER_LIFECYCLE_H_
