// worker_hint.h: may the calling fiber block its worker's pthread for a
// while (net's event dispatcher in "worker" mode blocks in epoll_wait)?
// Internal; net/ includes it.
#ifndef WEFT_SCHED_WORKER_HINT_H_
#define WEFT_SCHED_WORKER_HINT_H_

#include "sched/task_control.h"
#include "sched/task_group.h"

namespace weft::sched {

// True when blocking now holds no ready fiber back: the caller runs on a
// worker with no other fiber ready (queue, run-next slot, remote queue),
// and some other worker is parked or searching, so a fiber made ready
// meanwhile (a new one, or one woken from off the workers: they go to the
// remote queue and wake a parked worker) is run by that worker, exactly as
// if this one were busy. A blocked worker cannot be woken by the scheduler
// (it does not sleep on its park word), hence the second condition: with
// every other worker busy, or just one worker, the answer is false.
// A snapshot (seq_cst loads of the idle and searching counts, relaxed
// queue hints): callers still bound their block with a timeout.
inline bool worker_may_block() {
  TaskGroup* g = TaskGroup::current();
  if (g == nullptr || !g->running_fiber() || g->has_ready()) return false;
  const TaskControl* c = g->control();
  return c->nidle() > 0 || c->nsearching() > 0;
}

// True when the calling fiber runs on a worker where another fiber is ready
// (its queue, its run-next slot, or the remote queue). False off a worker.
inline bool worker_has_other_ready() {
  TaskGroup* g = TaskGroup::current();
  return g != nullptr && g->running_fiber() && g->has_ready();
}

// True when the process may use fewer CPUs than it has workers: a polling
// loop should then give its CPU away (sched_yield) between polls instead of
// spinning, since the thread it waits for may need this very CPU.
inline bool cpus_scarce() {
  TaskGroup* g = TaskGroup::current();
  return g != nullptr && g->control()->cpus_scarce();
}

// Lets the other fibers ready on this worker run, then resumes the caller:
// like bthread_yield, but the caller goes to the tail of this worker's
// queue without waking an idle worker (the caller brings no new work, so a
// cross-CPU wake-up for it would be pure cost). A thief that is searching
// anyway may still take it. Returns at once when nothing else is ready.
void yield_quietly();

// yield_quietly, then bthread_flush for the `started` fibers the caller
// queued with BTHREAD_NOSIGNAL before the call, waking only for those that
// may still wait: none when the caller resumes on its worker (the queue is
// FIFO: they ran or were stolen while it waited behind them), else as many
// as are queued where it resumed. From a pthread: bthread_flush.
void yield_quietly_then_flush(uint32_t started);

}  // namespace weft::sched

#endif  // WEFT_SCHED_WORKER_HINT_H_
