// TaskControl: the set of workers, the remote queue, and the rules for
// waking idle workers.
//
// Wake-up policy (the one Go's and Tokio's schedulers use): a worker that
// runs out of work first searches (steals) for a short while, then parks on
// a futex. A producer wakes a parked worker only when no worker is already
// searching, since a searcher will find the new work. A fiber woken by a
// running fiber goes to the waker's run-next slot and wakes nobody: a
// cross-CPU wake-up costs far more than the hand-off it saves when the
// waker blocks soon after, as it usually does. When the waker does not
// (it blocks its pthread in a system call, or computes), the fiber must not
// be stranded next to an idle worker: searching thieves take a run-next
// fiber from a worker that has not switched for kRunnextGraceNs, and the
// worker monitor (worker_monitor.h) wakes a parked worker for any worker
// whose queue has not moved for one of its ticks.
#ifndef WEFT_SCHED_TASK_CONTROL_H_
#define WEFT_SCHED_TASK_CONTROL_H_

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "sched/task_meta.h"

namespace weft::sched {

class TaskGroup;

// Why a fiber became ready; decides whether an idle worker is woken.
enum class ReadyKind {
  kNew,       // a new fiber: wake an idle worker if none is searching
  kWoken,     // woken by a running fiber: stay here unless there is a backlog
  kNoSignal,  // BTHREAD_NOSIGNAL: wait for bthread_flush
};

// Makes `m` runnable. Any thread.
void make_ready(TaskMeta* m, ReadyKind kind);

// The fast path of make_ready(m, kWoken) for a fiber that just switched
// away on this worker (yield, start_urgent's caller): no timestamp for the
// fiber dump. Worker only, from a remained callback.
void requeue_local(TaskMeta* m);
// The same into the run-next slot (start_urgent's caller).
void requeue_local_next(TaskMeta* m);
// The queue's tail like requeue_local, but wakes nobody: for a fiber that
// yields only to let this worker's own ready fibers run first (net's
// polling dispatcher).
void requeue_local_quietly(TaskMeta* m);

// Wakes workers for the fibers this thread queued with kNoSignal.
void flush_nosignal();

class TaskControl {
 public:
  static constexpr int kMaxWorkers = 1024;

  // The runtime, started with --weft_concurrency workers on first use.
  static TaskControl* get();
  // The runtime if started, else nullptr.
  static TaskControl* get_if_started();

  // bthread_setconcurrency: before the start, records the worker count to
  // start with (serialised with the start, so a request is never lost);
  // after it, raises the count. 0, EINVAL, EPERM (lowering) or EAGAIN.
  static int set_concurrency(int n);
  // bthread_getconcurrency: the workers running, or that will run once the
  // runtime starts. Never starts it.
  static int concurrency_or_planned();

  // Fewer CPUs in the affinity mask than workers (see cpus_scarce_).
  bool cpus_scarce() const { return cpus_scarce_.load(std::memory_order_relaxed); }
  // Whether a searching worker gives its CPU away (sched_yield) after its
  // steal round `round` instead of pausing: every
  // --weft_search_yield_every rounds, every round when CPUs are scarce.
  bool search_yields_after(uint32_t round) const {
    const uint32_t every = search_yield_every_.load(std::memory_order_relaxed);
    return every != 0 && round % every == every - 1;
  }
  // sched_yield calls made by searching workers so far (a statistic).
  uint64_t search_yields() const { return search_yields_.load(std::memory_order_relaxed); }
  int concurrency() const { return ngroups_.load(std::memory_order_acquire); }
  // Raises the worker count to `target`. Returns 0 or EAGAIN (no pthread).
  int add_workers(int target);
  TaskGroup* group(int i) const { return groups_[i].load(std::memory_order_acquire); }

  // Remote queue: fibers made ready off the workers (or overflowing a full
  // local queue). A lock-free stack that producers push one fiber at a time
  // (CAS on the head) and a worker empties whole (one exchange): it runs
  // the oldest fiber and queues the rest locally, where thieves can take
  // them. push_remote: any thread. pop_remote: worker `g` only.
  void push_remote(TaskMeta* m);
  bool pop_remote(TaskGroup* g, TaskMeta** out);
  bool has_remote() const { return remote_head_.load(std::memory_order_acquire) != nullptr; }

  // Wakes up to `n` parked workers unless some worker is already searching.
  // Must follow the push it signals (the full fence inside orders them).
  void signal_task(int n);
  // Wakes one parked worker whatever the searchers do (the worker monitor,
  // for a stuck worker). False when none is parked.
  bool wake_idle_worker();

  int nidle() const { return nidle_.load(std::memory_order_seq_cst); }
  int nsearching() const { return nsearching_.load(std::memory_order_seq_cst); }

  // The main loop's wait: returns a ready fiber, or false when stopping.
  bool wait_task(TaskGroup* g, TaskMeta** out);

  // Context switches of all workers (relaxed sum).
  uint64_t total_switches() const;

  // Counters (relaxed; for benchmarks and the runtime metrics).
  std::atomic<uint64_t> nsteals{0};
  std::atomic<uint64_t> nparks{0};

 private:
  TaskControl() = default;
  bool steal_task(TaskGroup* g, TaskMeta** out, int64_t now);
  int wake_idle(int n);
  void end_search(bool found);
  void wait_for_notification(TaskGroup* g);
  bool leave_idle(TaskGroup* g);
  bool any_ready() const;
  void worker_main(int index);

  std::mutex workers_mu_;  // serialises add_workers
  std::atomic<TaskGroup*> groups_[kMaxWorkers] = {};
  std::atomic<int> ngroups_{0};
  std::vector<std::thread*> threads_;

  // Head of the remote stack, linked through TaskMeta::remote_next.
  alignas(64) std::atomic<TaskMeta*> remote_head_{nullptr};
  alignas(64) std::atomic<int> nsearching_{0};
  // Idle (parked) workers. A waker pops one, counts it as searching and
  // sets its park_word; the worker sleeps on its own word.
  std::mutex idle_mu_;
  std::vector<TaskGroup*> idle_;  // guarded by idle_mu_
  alignas(64) std::atomic<int> nidle_{0};
  std::atomic<bool> timer_spinning_{false};  // one searcher waits out a close timer
  // More workers than CPUs this process may run on (sched_getaffinity,
  // read when workers are added): a searching worker then yields its CPU
  // between steal rounds instead of spinning, since the worker it would
  // steal from may be waiting for that very CPU.
  std::atomic<bool> cpus_scarce_{false};
  // See search_yields_after(); set with cpus_scarce_.
  std::atomic<uint32_t> search_yield_every_{0};
  // Counted next to each search's sched_yield. Relaxed: only a statistic,
  // nothing is published through it.
  alignas(64) std::atomic<uint64_t> search_yields_{0};
};

}  // namespace weft::sched

#endif  // WEFT_SCHED_TASK_CONTROL_H_
