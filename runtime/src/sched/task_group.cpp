#include "sched/task_group.h"

#include <stdlib.h>

#include "base/compiler.h"
#include "base/sanitizer.h"
#include "sched/fiber_lifecycle.h"
#include "sched/task_control.h"

namespace weft::sched {

thread_local WEFT_CONSTINIT TaskGroup* tls_current_group = nullptr;

using boost::context::detail::jump_fcontext;
using boost::context::detail::transfer_t;

namespace {
// 65,536 queued fibers per worker before new ones spill to the remote queue.
constexpr size_t kRunQueueCapacity = 1u << 16;
// Every 64th pick looks at the remote queue first, so fibers made ready by
// pthreads are not starved by a worker that always has local work.
constexpr uint64_t kRemoteFairnessMask = 63;
// Consecutive picks from the run-next slot before the queue gets a turn.
constexpr uint32_t kMaxRunnextStreak = 16;
}  // namespace

TaskGroup::TaskGroup(TaskControl* control, int index)
    : control_(control),
      index_(index),
      cur_(&main_meta_),
      rq_(kRunQueueCapacity),
      victim_seen_(new VictimSeen[TaskControl::kMaxWorkers]),
      rand_(0x9e3779b9u * static_cast<uint32_t>(index + 1)) {
  main_meta_.is_main = true;
}

WEFT_NOINLINE TaskGroup* TaskGroup::current() {
  // The empty asm keeps the compiler from assuming the TLS address is
  // unchanged across calls.
  asm volatile("" ::: "memory");
  return tls_current_group;
}

void TaskGroup::run_main_loop() {
  tls_current_group = this;
  main_meta_.tsan_fiber = base::tsan_current_fiber();
  TaskMeta* next = nullptr;
  while (control_->wait_task(this, &next)) {
    sched_to(next);
    // Back on the main context. It never migrates: only fibers running on
    // this pthread jump to it.
  }
  tls_current_group = nullptr;
}

size_t TaskGroup::push_local(TaskMeta* m) {
  if (WEFT_UNLIKELY(!rq_.push(m))) {
    control_->push_remote(m);
    return 0;
  }
  return rq_.size_hint();
}

bool TaskGroup::push_runnext(TaskMeta* m) {
  // Release publishes `m` (its saved context included) to whoever takes it.
  // Only the owner makes the slot non-null, so an empty slot stays empty
  // until this store and a plain store suffices; a full one may be emptied
  // by a thief at any moment, so it is swapped, and what comes back (if
  // anything) is ours to queue.
  if (runnext_.load(std::memory_order_relaxed) == nullptr) {
    runnext_.store(m, std::memory_order_release);
    return false;
  }
  TaskMeta* displaced = runnext_.exchange(m, std::memory_order_acq_rel);
  if (displaced == nullptr) return false;
  push_local(displaced);
  return true;
}

bool TaskGroup::take_runnext(TaskMeta** out) {
  if (runnext_.load(std::memory_order_relaxed) == nullptr) return false;
  // Acquire pairs with the release exchange in push_runnext. A thief may
  // have emptied the slot since the load: then there is nothing to take.
  TaskMeta* m = runnext_.exchange(nullptr, std::memory_order_acquire);
  if (m == nullptr) return false;
  *out = m;
  return true;
}

bool TaskGroup::steal_runnext(TaskMeta** out) {
  TaskMeta* m = runnext_.load(std::memory_order_relaxed);
  // Acquire pairs with the owner's release exchange; the CAS decides who
  // owns the fiber when the owner takes it at the same moment.
  if (m == nullptr || !runnext_.compare_exchange_strong(m, nullptr, std::memory_order_acquire,
                                                        std::memory_order_relaxed)) {
    return false;
  }
  *out = m;
  return true;
}

bool TaskGroup::pop_local(TaskMeta** out) {
  if (runnext_streak_ < kMaxRunnextStreak && take_runnext(out)) {
    ++runnext_streak_;
    return true;
  }
  runnext_streak_ = 0;
  return rq_.pop_oldest(out) || take_runnext(out);
}

bool TaskGroup::has_ready() const {
  return rq_.size_hint() != 0 || has_runnext() || control_->has_remote();
}

TaskMeta* TaskGroup::pick_next() {
  TaskMeta* next = nullptr;
  if ((++sched_count_ & kRemoteFairnessMask) == 0 && control_->pop_remote(this, &next)) return next;
  if (pop_local(&next)) return next;
  if (control_->pop_remote(this, &next)) return next;
  return &main_meta_;
}

void TaskGroup::sched() { sched_to(pick_next()); }

void TaskGroup::sched_to(TaskMeta* next) {
  TaskMeta* prev = cur_;
  cur_ = next;
  next->state.store(TaskMeta::kRunning, std::memory_order_relaxed);
  nswitch.store(nswitch.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  running_tid.store(next->tid, std::memory_order_relaxed);
  // errno belongs to the fiber, not to the pthread it happens to run on.
  prev->saved_errno = *base::errno_location();
  void* fake_stack = nullptr;
  // An ended fiber never comes back: tell ASan to drop its fake stack.
  const bool prev_ends = remained_fn_ == &TaskGroup::on_fiber_ended;
  base::asan_start_switch(prev_ends ? nullptr : &fake_stack, next->asan_stack_bottom,
                          next->asan_stack_size);
  base::tsan_switch_to_fiber(next->tsan_fiber);
  transfer_t t = jump_fcontext(next->ctx, prev);
  // Resumed, perhaps on another worker: `this` may no longer be ours.
  finish_switch(t, fake_stack);
  // After the remained callback, which ran on our behalf and may have set
  // errno. errno_location() is re-evaluated: we may be on another pthread.
  *base::errno_location() = prev->saved_errno;
}

void TaskGroup::finish_switch(transfer_t t, void* fake_stack) {
  TaskMeta* from = static_cast<TaskMeta*>(t.data);
  const void* from_bottom = nullptr;
  size_t from_size = 0;
  base::asan_finish_switch(fake_stack, &from_bottom, &from_size);
  if (from->is_main) {
    // A main context's bounds are learnt the first time it switches away.
    from->asan_stack_bottom = from_bottom;
    from->asan_stack_size = from_size;
  }
  // Saving the context before running the remained callback is what makes
  // publishing `from` (in that callback) safe.
  from->ctx = t.fctx;
  TaskGroup* g = current();
  if (g->remained_fn_ != nullptr) {
    void (*fn)(void*) = g->remained_fn_;
    g->remained_fn_ = nullptr;
    fn(g->remained_arg_);
  }
}

void TaskGroup::fiber_entry(transfer_t t) noexcept {
  finish_switch(t, nullptr);
  *base::errno_location() = 0;  // a new fiber starts with errno 0
  TaskMeta* m = current()->cur_;
  void* result = run_fiber_function(m);
  TaskGroup* g = current();  // the fiber may have migrated
  m->result = result;
  g->set_remained(&TaskGroup::on_fiber_ended, m);
  g->sched();
  abort();  // an ended fiber is never resumed
}

void TaskGroup::on_fiber_ended(void* meta) {
  TaskMeta* m = static_cast<TaskMeta*>(meta);
  stack_release(m->stack);
  base::tsan_destroy_fiber(m->tsan_fiber);
  m->tsan_fiber = nullptr;
  fiber_finished(m);
}

}  // namespace weft::sched
