#include "sched/task_group.h"

#include <stdlib.h>

#include "base/compiler.h"
#include "base/sanitizer.h"
#include "sched/fiber_lifecycle.h"
#include "sched/task_control.h"

namespace weft::sched {

thread_local TaskGroup* tls_current_group = nullptr;

using boost::context::detail::jump_fcontext;
using boost::context::detail::transfer_t;

namespace {
// 65,536 queued fibers per worker before new ones spill to the remote queue.
constexpr size_t kRunQueueCapacity = 1u << 16;
// Every 64th pick looks at the remote queue first, so fibers made ready by
// pthreads are not starved by a worker that always has local work.
constexpr uint64_t kRemoteFairnessMask = 63;
}  // namespace

TaskGroup::TaskGroup(TaskControl* control, int index)
    : control_(control),
      index_(index),
      cur_(&main_meta_),
      rq_(kRunQueueCapacity),
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

bool TaskGroup::has_ready() const { return rq_.size_hint() != 0 || control_->has_remote(); }

TaskMeta* TaskGroup::pick_next() {
  TaskMeta* next = nullptr;
  if ((++sched_count_ & kRemoteFairnessMask) == 0 && control_->pop_remote(&next)) return next;
  if (rq_.pop(&next)) return next;
  if (control_->pop_remote(&next)) return next;
  return &main_meta_;
}

void TaskGroup::sched() { sched_to(pick_next()); }

void TaskGroup::sched_to(TaskMeta* next) {
  TaskMeta* prev = cur_;
  cur_ = next;
  next->state.store(TaskMeta::kRunning, std::memory_order_relaxed);
  nswitch.store(nswitch.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  void* fake_stack = nullptr;
  // An ended fiber never comes back: tell ASan to drop its fake stack.
  const bool prev_ends = remained_fn_ == &TaskGroup::on_fiber_ended;
  base::asan_start_switch(prev_ends ? nullptr : &fake_stack, next->asan_stack_bottom,
                          next->asan_stack_size);
  base::tsan_switch_to_fiber(next->tsan_fiber);
  transfer_t t = jump_fcontext(next->ctx, prev);
  // Resumed, perhaps on another worker: `this` may no longer be ours.
  finish_switch(t, fake_stack);
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
