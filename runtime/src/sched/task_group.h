// TaskGroup: one worker pthread and its run queue.
//
// A worker starts in its main context (the pthread's own stack), which runs
// the scheduling loop: find a ready fiber (own queue, remote queue, steal),
// switch to it, and park when there is none. Fibers switch directly to one
// another; only a fiber with nothing to switch to goes back to the main
// context.
//
// Switching protocol: a fiber that gives up the CPU first decides how it
// will be resumed, but must not publish itself (queue or waiter list) while
// it still runs on its stack, or another worker could jump into a context
// that is not saved yet. It leaves that step as a "remained" callback, which
// the context switched to runs right after saving the previous context.
#ifndef WEFT_SCHED_TASK_GROUP_H_
#define WEFT_SCHED_TASK_GROUP_H_

#include <stdint.h>

#include "base/compiler.h"
#include "sched/task_meta.h"
#include "sched/work_stealing_queue.h"

namespace weft::sched {

class TaskControl;
class TaskGroup;

// The calling pthread's group. Read it directly only in code that cannot
// suspend between the read and the last use (see TaskGroup::current()).
extern thread_local WEFT_CONSTINIT TaskGroup* tls_current_group;

class TaskGroup {
 public:
  TaskGroup(TaskControl* control, int index);
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  // The calling pthread's group, or nullptr off workers. Never inlined: a
  // fiber may resume on another worker after any suspension, and a compiler
  // may otherwise reuse a thread-local address computed before it.
  static TaskGroup* current();

  // Runs the scheduling loop; returns only when the runtime stops. Worker
  // pthread only.
  void run_main_loop();

  TaskMeta* current_task() const { return cur_; }
  bool running_fiber() const { return cur_ != &main_meta_; }

  // Leaves the current fiber for the next ready one (or the main loop). The
  // caller has already arranged its resumption (usually with
  // set_remained). Returns when the fiber is resumed, possibly on another
  // worker: callers must re-read TaskGroup::current() afterwards. Fiber only.
  void sched();

  // Switches to `next` now. Same contract as sched(). Fiber or main loop.
  void sched_to(TaskMeta* next);

  // Registers fn(arg) to run on the next context right after the switch.
  // At most one at a time.
  void set_remained(void (*fn)(void*), void* arg) {
    remained_fn_ = fn;
    remained_arg_ = arg;
  }

  // Queues `m` at the tail of this worker's FIFO queue; overflows to the
  // remote queue. Owner only. Returns the local queue length after the push
  // (0 if it overflowed).
  size_t push_local(TaskMeta* m);

  // Puts `m` in the run-next slot, so it runs as soon as the current fiber
  // gives up the CPU (a fiber woken by the running one: its data is hot in
  // this CPU's cache). A fiber already there moves to the queue's tail; the
  // return value says so (true: more than one fiber is now ready here).
  // Owner only.
  bool push_runnext(TaskMeta* m);

  // The owner's pick: the run-next slot (at most kMaxRunnextStreak times in
  // a row, so two fibers waking each other cannot starve the queue), then
  // the queue's oldest fiber. Owner only.
  bool pop_local(TaskMeta** out);

  // Thieves: the queue's oldest fiber.
  bool steal(TaskMeta** out) { return rq_.steal(out); }
  // Thieves: the run-next fiber, taken only by a thief that has watched
  // this worker make no switch for a grace period (see steal_task).
  bool steal_runnext(TaskMeta** out);
  bool has_runnext() const { return runnext_.load(std::memory_order_relaxed) != nullptr; }

  size_t queue_size_hint() const { return rq_.size_hint(); }

  // True when another fiber is ready here (local or remote). Owner only.
  bool has_ready() const;

  int index() const { return index_; }
  TaskControl* control() const { return control_; }
  uint32_t next_random() {
    rand_ ^= rand_ << 13;
    rand_ ^= rand_ >> 17;
    rand_ ^= rand_ << 5;
    return rand_;
  }

  // Set to 1 by the waker that takes this worker off the idle list; the
  // worker sleeps on it (futex) while it is 0.
  std::atomic<int> park_word{0};

  // Fibers queued with BTHREAD_NOSIGNAL since the last flush.
  uint32_t nosignal_pending = 0;
  // Switches performed by this worker (relaxed; read by metrics, the
  // worker monitor and thieves deciding whether the worker is stuck).
  std::atomic<uint64_t> nswitch{0};
  // The fiber this worker runs, 0 in its scheduling loop (relaxed; for the
  // worker monitor's stall report).
  std::atomic<bthread_t> running_tid{0};

  // Thief-side memory of what this worker saw of each victim: its switch
  // count and when that count was first seen. A victim whose count has not
  // moved for kRunnextGraceNs while a fiber waits in its run-next slot is
  // stuck (blocked in a system call, or computing), so the slot is taken.
  // Touched only by this worker while it searches.
  struct VictimSeen {
    uint64_t nswitch = ~uint64_t{0};
    int64_t since_ns = 0;
  };
  VictimSeen* victim_seen() { return victim_seen_; }

  // Entry point of every fiber's stack.
  static void fiber_entry(boost::context::detail::transfer_t t) noexcept;

 private:
  friend class TaskControl;

  // Runs on the context we landed on: saves the previous context, then the
  // pending remained callback.
  static void finish_switch(boost::context::detail::transfer_t t, void* fake_stack);
  static void on_fiber_ended(void* meta);

  TaskMeta* pick_next();
  bool take_runnext(TaskMeta** out);

  TaskControl* const control_;
  const int index_;
  TaskMeta* cur_;
  TaskMeta main_meta_;
  WorkStealingQueue<TaskMeta*> rq_;
  // Written by the owner (exchange, release: publishes the fiber), taken by
  // the owner or by a thief (exchange/CAS, acquire). Whoever swaps the
  // pointer out owns the fiber.
  alignas(64) std::atomic<TaskMeta*> runnext_{nullptr};
  uint32_t runnext_streak_ = 0;  // owner only
  VictimSeen* victim_seen_;      // kMaxWorkers entries, owned
  void (*remained_fn_)(void*) = nullptr;
  void* remained_arg_ = nullptr;
  uint64_t sched_count_ = 0;
  uint32_t rand_;
};

}  // namespace weft::sched

#endif  // WEFT_SCHED_TASK_GROUP_H_
