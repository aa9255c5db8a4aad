#include "sched/fiber_lifecycle.h"

#include <errno.h>
#include <gflags/gflags.h>
#include <pthread.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "base/compiler.h"
#include "base/fault_injection.h"
#include "base/sanitizer.h"
#include "base/time_util.h"
#include "local/key_table.h"
#include "sched/task_control.h"
#include "sched/task_group.h"
#include "sched/service_fiber.h"
#include "wait/butex_internal.h"

DEFINE_bool(weft_usercode_in_pthread, false,
            "Run every new fiber on a dedicated pthread, as BTHREAD_ATTR_PTHREAD does");
DEFINE_int64(weft_max_fibers, 0,
             "Fibers alive at once before bthread_start_* fails with EAGAIN; 0 means no limit "
             "beyond the id space (16M)");

namespace weft::sched {

std::atomic<int> g_fault_meta_butex_alloc{0};
std::atomic<int> g_fault_pthread_create{0};

namespace {

thread_local TaskMeta* tls_pthread_fiber = nullptr;

// ---- fiber counts: per-thread cells ----
//
// Every start and end bumps a cell of the calling thread: a relaxed load and
// store by the only writer, so no locked instruction and no shared cache
// line. Readers add up the cells of every thread under `mu`; a thread that
// exits folds its cells into the retired sums (under `mu` too, so a reader
// counts them once) and leaves the zeroed cells for the next thread.
// All three counts only grow; alive = begun - ended.
struct alignas(64) FiberCells {
  std::atomic<int64_t> begun{0};    // starts that passed the limit check
  std::atomic<int64_t> ended{0};    // fibers ended, and starts that then failed
  std::atomic<int64_t> created{0};  // starts that succeeded
};

struct CellRegistry {
  std::mutex mu;
  std::vector<FiberCells*> live;   // guarded by mu
  std::vector<FiberCells*> spare;  // guarded by mu; zeroed, from exited threads
  // Exited threads' counts, and bumps made by a thread past its cells'
  // destruction (rare: thread-exit code that starts or ends a fiber).
  std::atomic<int64_t> retired_begun{0};
  std::atomic<int64_t> retired_ended{0};
  std::atomic<int64_t> retired_created{0};
};

CellRegistry& cell_registry() {
  static auto* r = new CellRegistry;  // leaked: threads exit after main returns
  return *r;
}

struct CellsOwner {
  FiberCells* cells = nullptr;
  ~CellsOwner();
};

// The fast path reads only this trivially destructible pointer; the owner,
// with its destructor, is touched once per thread.
thread_local FiberCells* tls_cells = nullptr;
thread_local bool tls_cells_gone = false;
thread_local CellsOwner tls_cells_owner;

CellsOwner::~CellsOwner() {
  tls_cells = nullptr;
  tls_cells_gone = true;
  if (cells == nullptr) return;
  CellRegistry& r = cell_registry();
  std::lock_guard<std::mutex> guard(r.mu);
  r.retired_begun.fetch_add(cells->begun.load(std::memory_order_relaxed),
                            std::memory_order_relaxed);
  r.retired_ended.fetch_add(cells->ended.load(std::memory_order_relaxed),
                            std::memory_order_relaxed);
  r.retired_created.fetch_add(cells->created.load(std::memory_order_relaxed),
                              std::memory_order_relaxed);
  cells->begun.store(0, std::memory_order_relaxed);
  cells->ended.store(0, std::memory_order_relaxed);
  cells->created.store(0, std::memory_order_relaxed);
  for (size_t i = 0; i < r.live.size(); ++i) {
    if (r.live[i] == cells) {
      r.live[i] = r.live.back();
      r.live.pop_back();
      break;
    }
  }
  r.spare.push_back(cells);
  cells = nullptr;
}

// Null once this thread's cells are gone (thread exit).
WEFT_NOINLINE FiberCells* adopt_cells() {
  if (tls_cells_gone) return nullptr;
  CellRegistry& r = cell_registry();
  FiberCells* c;
  {
    std::lock_guard<std::mutex> guard(r.mu);
    if (!r.spare.empty()) {
      c = r.spare.back();
      r.spare.pop_back();
    } else {
      c = new FiberCells;
    }
    r.live.push_back(c);
  }
  tls_cells_owner.cells = c;
  tls_cells = c;
  return c;
}

inline FiberCells* my_cells() {
  FiberCells* c = tls_cells;
  return WEFT_LIKELY(c != nullptr) ? c : adopt_cells();
}

// Release: the limit check reads `ended` with acquire before `begun`, so an
// end it counts comes with the start that preceded it.
inline void bump(std::atomic<int64_t> FiberCells::*cell,
                 std::atomic<int64_t> CellRegistry::*retired) {
  FiberCells* c = my_cells();
  if (WEFT_LIKELY(c != nullptr)) {
    std::atomic<int64_t>& v = c->*cell;
    v.store(v.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  } else {
    (cell_registry().*retired).fetch_add(1, std::memory_order_release);
  }
}
void count_begun() { bump(&FiberCells::begun, &CellRegistry::retired_begun); }
void count_ended() { bump(&FiberCells::ended, &CellRegistry::retired_ended); }
void count_created() { bump(&FiberCells::created, &CellRegistry::retired_created); }

struct FiberCounts {
  int64_t begun, ended, created;
};

// Caller holds cell_registry().mu. Every `ended` is read (acquire) before
// any `begun`: each end counted was preceded by its start, whose bump is
// then visible too, so begun - ended never undercounts the fibers alive.
FiberCounts sum_cells_locked(CellRegistry& r) {
  FiberCounts s{0, 0, 0};
  s.ended = r.retired_ended.load(std::memory_order_acquire);
  for (FiberCells* c : r.live) s.ended += c->ended.load(std::memory_order_acquire);
  s.begun = r.retired_begun.load(std::memory_order_acquire);
  for (FiberCells* c : r.live) s.begun += c->begun.load(std::memory_order_acquire);
  s.created = r.retired_created.load(std::memory_order_relaxed);
  for (FiberCells* c : r.live) s.created += c->created.load(std::memory_order_relaxed);
  return s;
}

FiberCounts sum_cells() {
  CellRegistry& r = cell_registry();
  std::lock_guard<std::mutex> guard(r.mu);
  return sum_cells_locked(r);
}

uint32_t current_version(const TaskMeta* m) {
  return static_cast<uint32_t>(m->version_butex->value.load(std::memory_order_acquire));
}

wait::Butex* alloc_slot_butex() {
  return base::inject_fault(g_fault_meta_butex_alloc) ? nullptr : wait::butex_alloc();
}

// Takes a slot and readies its per-slot butexes (created once per slot,
// kept forever: the slot is type-stable and so are they).
TaskMeta* alloc_meta() {
  const uint32_t slot = task_pool().alloc();
  if (slot == TaskMetaPool::kInvalid) return nullptr;
  TaskMeta* m = task_pool().at(slot);
  // Before anything can fail: a slot handed back below and taken again must
  // still know its index (it is written once; every later use finds it set).
  if (WEFT_UNLIKELY(m->slot != slot)) m->slot = slot;
  if (WEFT_UNLIKELY(m->version_butex == nullptr)) {
    // version_butex goes last: non-null means the slot is complete (join,
    // interrupt and the fiber dump test it). A butex allocated before a
    // failure stays with the slot for its next use.
    if (m->sleep_butex == nullptr) m->sleep_butex = alloc_slot_butex();
    wait::Butex* version = m->sleep_butex == nullptr ? nullptr : alloc_slot_butex();
    if (version == nullptr) {
      task_pool().free(slot);
      return nullptr;
    }
    __atomic_store_n(&m->version_butex, version, __ATOMIC_RELEASE);
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
  m->user_tag = 0;
}

// Counts a start in (false: --weft_max_fibers reached). Without a limit
// (the default) that is a bump of this thread's cell. With one, the check
// must be exact: starts are serialized under the registry's lock and each
// adds up every thread's cells (a cost per start that grows with the
// thread count, paid only when the limit is set). A fiber ending meanwhile
// may still be counted: at worst EAGAIN while the last one is on its way
// out, as when it had not ended yet.
bool reserve_alive(const bthread_attr_t& attr) {
  const int64_t max = FLAGS_weft_max_fibers;
  // A service fiber is counted but never refused (service_fiber.h).
  if (WEFT_LIKELY(max <= 0) || (attr.flags & kServiceFiber) != 0) {
    count_begun();
    return true;
  }
  my_cells();  // a thread's first cells are adopted under the lock taken below
  CellRegistry& r = cell_registry();
  std::lock_guard<std::mutex> guard(r.mu);
  const FiberCounts s = sum_cells_locked(r);
  if (s.begun - s.ended >= max) return false;
  count_begun();  // under the lock: the next start sees it
  return true;
}

// Gives back a reservation whose start then failed.
void unreserve_alive() { count_ended(); }

// Moves the slot's version on to even under the lock (the id is dead from
// then on for join, interrupt and the dump), then wakes the joiners, the last
// of which frees the slot once it has read the result, or frees it now.
void end_version(TaskMeta* m) {
  m->lock.lock();
  const uint32_t next = current_version(m) + 1;  // even: ended (0 after a wrap)
  // Release pairs with the acquire loads of joiners: they see `result`.
  m->version_butex->value.store(static_cast<int>(next), std::memory_order_release);
  const bool has_joiners = m->njoiners != 0;
  m->lock.unlock();
  if (has_joiners) {
    wait::butex_wake_some(m->version_butex, INT32_MAX, 0);
  } else {
    task_pool().free(m->slot);
  }
}

// Ends a slot's fiber that never ran (its thread could not be made): the
// version moves on to even under the lock, as in fiber_finished, so the id
// is dead at once for join, interrupt and the dump; then the slot is free.
void abandon_meta(TaskMeta* m) {
  // Nobody had the id, so nobody can be joining; the shared ending keeps
  // the invariant anyway.
  end_version(m);
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
  if (!reserve_alive(attr)) return EAGAIN;
  TaskMeta* m = alloc_meta();
  if (m == nullptr) {
    unreserve_alive();
    return EAGAIN;
  }
  init_meta(m, attr, fn, arg);
  m->in_pthread = true;
  // The id is stored before the thread starts, so the fiber may read *tid
  // (as with any fiber); a failed start puts the caller's value back. Read
  // from m only before pthread_create: the fiber may end and its slot be
  // reused before pthread_create returns.
  const bthread_t id = m->tid;
  const bthread_t saved = tid != nullptr ? *tid : 0;
  if (tid != nullptr) *tid = id;
  pthread_attr_t pattr;
  pthread_attr_init(&pattr);
  pthread_attr_setdetachstate(&pattr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  const int rc = base::inject_fault(g_fault_pthread_create)
                     ? EAGAIN
                     : pthread_create(&thread, &pattr, pthread_fiber_main, m);
  pthread_attr_destroy(&pattr);
  if (rc != 0) {
    if (tid != nullptr) *tid = saved;
    abandon_meta(m);
    unreserve_alive();
    return EAGAIN;
  }
  count_created();
  return 0;
}

// The caller of start_urgent runs next once the new fiber gives up the CPU
// (it was running a moment ago: its data is hot here).
void requeue_caller(void* meta) { requeue_local_next(static_cast<TaskMeta*>(meta)); }

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
  if (!reserve_alive(attr)) return EAGAIN;
  TaskMeta* m = alloc_meta();
  if (m == nullptr) {
    unreserve_alive();
    return EAGAIN;
  }
  const int rc = stack_acquire(cls, &m->stack);
  if (rc != 0) {
    task_pool().free(m->slot);
    unreserve_alive();
    return rc;
  }
  init_meta(m, attr, fn, arg);
  m->in_pthread = false;
  m->ctx = boost::context::detail::make_fcontext(
      static_cast<char*>(m->stack.bottom) + m->stack.size, m->stack.size, &TaskGroup::fiber_entry);
  m->asan_stack_bottom = m->stack.bottom;
  m->asan_stack_size = m->stack.size;
  m->tsan_fiber = base::tsan_create_fiber();
  if (tid != nullptr) *tid = m->tid;
  count_created();  // before the switch below: this thread's cell

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
  // Counted before the version moves: whoever sees the fiber ended (a
  // joiner) also sees it gone from fibers_alive() and from the limit.
  count_ended();
  end_version(m);
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
  while (static_cast<uint32_t>(m->version_butex->value.load(std::memory_order_acquire)) ==
         version) {
    if (wait::butex_wait_until(m->version_butex, static_cast<int>(version), base::kNoDeadline) !=
            0 &&
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

int64_t fibers_alive() {
  const FiberCounts s = sum_cells();
  return s.begun - s.ended;
}
uint64_t fibers_created() { return static_cast<uint64_t>(sum_cells().created); }

}  // namespace weft::sched
