#include "sched/fiber_lifecycle.h"

#include <errno.h>
#include <gflags/gflags.h>
#include <pthread.h>

#include <atomic>

#include "base/compiler.h"
#include "base/sanitizer.h"
#include "base/time_util.h"
#include "local/key_table.h"
#include "sched/task_control.h"
#include "sched/task_group.h"
#include "wait/butex_internal.h"

DEFINE_bool(weft_usercode_in_pthread, false,
            "Run every new fiber on a dedicated pthread, as BTHREAD_ATTR_PTHREAD does");
DEFINE_int64(weft_max_fibers, 0,
             "Fibers alive at once before bthread_start_* fails with EAGAIN; 0 means no limit "
             "beyond the id space (16M)");

namespace weft::sched {
namespace {

std::atomic<int64_t> g_alive{0};
std::atomic<uint64_t> g_created{0};
thread_local TaskMeta* tls_pthread_fiber = nullptr;

uint32_t current_version(const TaskMeta* m) {
  return static_cast<uint32_t>(m->version_butex->value.load(std::memory_order_acquire));
}

// Takes a slot and readies its per-slot butexes (created once per slot,
// kept forever: the slot is type-stable and so are they).
TaskMeta* alloc_meta() {
  const uint32_t slot = task_pool().alloc();
  if (slot == TaskMetaPool::kInvalid) return nullptr;
  TaskMeta* m = task_pool().at(slot);
  if (WEFT_UNLIKELY(m->version_butex == nullptr)) {
    m->version_butex = wait::butex_alloc();
    m->sleep_butex = wait::butex_alloc();
    if (m->version_butex == nullptr || m->sleep_butex == nullptr) {
      task_pool().free(slot);
      return nullptr;
    }
    m->slot = slot;
  }
  return m;
}

void init_meta(TaskMeta* m, const bthread_attr_t& attr, void* (*fn)(void*), void* arg) {
  m->fn = fn;
  m->arg = arg;
  m->attr = attr;
  // Odd versions are running fibers, even ones ended fibers whose result is
  // still in the slot. Taking the slot for a new fiber moves to the next odd
  // version and drops the old result, under the lock joiners read it with.
  m->lock.lock();
  uint32_t version = current_version(m) + 1;
  if (version == 0) version = 1;
  m->version_butex->value.store(static_cast<int>(version), std::memory_order_release);
  m->result = nullptr;
  m->lock.unlock();
  m->stop.store(false, std::memory_order_relaxed);
  m->interrupted.store(false, std::memory_order_relaxed);
  m->current_waiter.store(nullptr, std::memory_order_relaxed);
  m->tid = make_tid(current_version(m), m->slot);
  m->keytable = nullptr;
}

bool reserve_alive() {
  const int64_t now = g_alive.fetch_add(1, std::memory_order_relaxed) + 1;
  if (FLAGS_weft_max_fibers > 0 && now > FLAGS_weft_max_fibers) {
    g_alive.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void* pthread_fiber_main(void* arg) {
  auto* m = static_cast<TaskMeta*>(arg);
  tls_pthread_fiber = m;
  m->result = run_fiber_function(m);
  tls_pthread_fiber = nullptr;
  fiber_finished(m);
  return nullptr;
}

int start_in_pthread(bthread_t* tid, const bthread_attr_t& attr, void* (*fn)(void*), void* arg) {
  if (!reserve_alive()) return EAGAIN;
  TaskMeta* m = alloc_meta();
  if (m == nullptr) {
    g_alive.fetch_sub(1, std::memory_order_relaxed);
    return EAGAIN;
  }
  init_meta(m, attr, fn, arg);
  m->in_pthread = true;
  if (tid != nullptr) *tid = m->tid;
  pthread_attr_t pattr;
  pthread_attr_init(&pattr);
  pthread_attr_setdetachstate(&pattr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  const int rc = pthread_create(&thread, &pattr, pthread_fiber_main, m);
  pthread_attr_destroy(&pattr);
  if (rc != 0) {
    task_pool().free(m->slot);
    g_alive.fetch_sub(1, std::memory_order_relaxed);
    return EAGAIN;
  }
  g_created.fetch_add(1, std::memory_order_relaxed);
  return 0;
}

void requeue_caller(void* meta) { requeue_local(static_cast<TaskMeta*>(meta)); }

int stack_class_of(bthread_stacktype_t type) {
  switch (type) {
    case BTHREAD_STACKTYPE_SMALL:
      return kStackSmall;
    case BTHREAD_STACKTYPE_NORMAL:
      return kStackNormal;
    case BTHREAD_STACKTYPE_LARGE:
      return kStackLarge;
    default:
      return -1;
  }
}

}  // namespace

TaskMetaPool& task_pool() { return TaskMetaPool::instance(); }

int start_fiber(bthread_t* tid, const bthread_attr_t* attr_in, void* (*fn)(void*), void* arg,
                bool urgent) {
  if (fn == nullptr) return EINVAL;
  const bthread_attr_t attr = attr_in != nullptr ? *attr_in : BTHREAD_ATTR_NORMAL;
  if (attr.stack_type == BTHREAD_STACKTYPE_PTHREAD || FLAGS_weft_usercode_in_pthread) {
    return start_in_pthread(tid, attr, fn, arg);
  }
  const int cls = stack_class_of(attr.stack_type);
  if (cls < 0) return EINVAL;
  TaskControl::get();  // starts the workers on first use
  if (!reserve_alive()) return EAGAIN;
  TaskMeta* m = alloc_meta();
  if (m == nullptr) {
    g_alive.fetch_sub(1, std::memory_order_relaxed);
    return EAGAIN;
  }
  const int rc = stack_acquire(cls, &m->stack);
  if (rc != 0) {
    task_pool().free(m->slot);
    g_alive.fetch_sub(1, std::memory_order_relaxed);
    return rc;
  }
  init_meta(m, attr, fn, arg);
  m->in_pthread = false;
  m->ctx = boost::context::detail::make_fcontext(static_cast<char*>(m->stack.bottom) + m->stack.size,
                                                 m->stack.size, &TaskGroup::fiber_entry);
  m->asan_stack_bottom = m->stack.bottom;
  m->asan_stack_size = m->stack.size;
  m->tsan_fiber = base::tsan_create_fiber();
  if (tid != nullptr) *tid = m->tid;
  g_created.fetch_add(1, std::memory_order_relaxed);

  TaskGroup* g = urgent ? TaskGroup::current() : nullptr;
  if (g != nullptr && g->running_fiber()) {
    // Run the new fiber now; the caller is queued once its context is saved.
    g->set_remained(requeue_caller, g->current_task());
    g->sched_to(m);
    return 0;
  }
  make_ready(m, (attr.flags & BTHREAD_NOSIGNAL) ? ReadyKind::kNoSignal : ReadyKind::kNew);
  return 0;
}

void* run_fiber_function(TaskMeta* m) {
  void* result;
  try {
    result = m->fn(m->arg);
  } catch (const FiberExit& e) {
    result = e.value;
  }
  // Still on the fiber's stack: key destructors may block.
  local::on_fiber_exit(m);
  return result;
}

void fiber_finished(TaskMeta* m) {
  m->lock.lock();
  const uint32_t next = current_version(m) + 1;  // even: ended (0 after a wrap)
  // Release pairs with the acquire loads of joiners: they see `result`.
  m->version_butex->value.store(static_cast<int>(next), std::memory_order_release);
  const bool has_joiners = m->njoiners != 0;
  m->lock.unlock();
  g_alive.fetch_sub(1, std::memory_order_relaxed);
  if (has_joiners) {
    // The last joiner frees the slot once it has read the result.
    wait::butex_wake_some(m->version_butex, INT32_MAX, 0);
  } else {
    task_pool().free(m->slot);
  }
}

int join_fiber(bthread_t tid, void** ret) {
  const uint32_t slot = tid_slot(tid);
  const uint32_t version = tid_version(tid);
  if (version == 0 || slot >= task_pool().allocated()) return EINVAL;
  TaskMeta* m = task_pool().at(slot);
  if (m == nullptr || m->version_butex == nullptr) return EINVAL;
  TaskMeta* self = current_fiber();
  if (self != nullptr && self->tid == tid) return EINVAL;

  m->lock.lock();
  const uint32_t current = current_version(m);
  if (current != version) {
    // Ended. If the slot was not reused since, its result is still there.
    if (ret != nullptr) *ret = current == version + 1 ? m->result : nullptr;
    m->lock.unlock();
    return 0;
  }
  ++m->njoiners;
  m->lock.unlock();

  bool swallowed_interrupt = false;
  while (static_cast<uint32_t>(m->version_butex->value.load(std::memory_order_acquire)) == version) {
    if (wait::butex_wait_until(m->version_butex, static_cast<int>(version), base::kNoDeadline) != 0 &&
        errno == EINTR) {
      swallowed_interrupt = true;
    }
  }
  if (ret != nullptr) *ret = m->result;
  m->lock.lock();
  const bool last = --m->njoiners == 0;
  m->lock.unlock();
  if (last) task_pool().free(m->slot);
  if (swallowed_interrupt && self != nullptr) {
    // Joins ignore interrupts; keep it for the fiber's next blocking call.
    self->interrupted.store(true, std::memory_order_release);
  }
  return 0;
}

int interrupt_fiber(bthread_t tid, bool stop) {
  const uint32_t slot = tid_slot(tid);
  const uint32_t version = tid_version(tid);
  if (version == 0 || slot >= task_pool().allocated()) return EINVAL;
  TaskMeta* m = task_pool().at(slot);
  if (m == nullptr || m->version_butex == nullptr) return EINVAL;
  m->lock.lock();
  if (current_version(m) != version) {
    m->lock.unlock();
    return EINVAL;
  }
  if (stop) m->stop.store(true, std::memory_order_release);
  // Store-then-load, seq_cst: pairs with the enqueuer's store of container
  // then load of interrupted (butex.cpp).
  m->interrupted.store(true, std::memory_order_seq_cst);
  // Holding the token keeps the fiber inside its blocking call (so `w` and
  // the fiber stay alive) until we hand it back.
  wait::ButexWaiter* w = m->current_waiter.exchange(nullptr, std::memory_order_seq_cst);
  m->lock.unlock();
  if (w != nullptr) {
    if (wait::erase_waiter(w, EINTR)) wait::resume_waiter(w);
    m->current_waiter.store(w, std::memory_order_release);
  }
  return 0;
}

int fiber_stopped(bthread_t tid) {
  const uint32_t slot = tid_slot(tid);
  const uint32_t version = tid_version(tid);
  if (version == 0 || slot >= task_pool().allocated()) return 1;
  TaskMeta* m = task_pool().at(slot);
  if (m == nullptr || m->version_butex == nullptr) return 1;
  m->lock.lock();
  const bool ended = current_version(m) != version;
  const bool stopped = m->stop.load(std::memory_order_acquire);
  m->lock.unlock();
  return ended || stopped ? 1 : 0;
}

TaskMeta* current_fiber() {
  TaskGroup* g = TaskGroup::current();
  if (g != nullptr) return g->running_fiber() ? g->current_task() : nullptr;
  return tls_pthread_fiber;
}

int64_t fibers_alive() { return g_alive.load(std::memory_order_relaxed); }
uint64_t fibers_created() { return g_created.load(std::memory_order_relaxed); }

}  // namespace weft::sched
