#include "sched/task_control.h"

#include <errno.h>
#include <gflags/gflags.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>

#include "base/compiler.h"
#include "base/futex.h"
#include "base/time_util.h"
#include "sched/stack_pool.h"
#include "sched/task_group.h"
#include "sched/worker_hint.h"
#include "sched/worker_monitor.h"
#include "time/timer_thread.h"

DEFINE_int32(weft_concurrency, 0,
             "Worker pthreads that run fibers; 0 means the number of CPUs in the process's "
             "affinity mask. May be raised at run time with bthread_setconcurrency");

DEFINE_int32(weft_search_yield_every, 8,
             "An idle worker looking for work to steal calls sched_yield every this many "
             "steal rounds and pauses between the others, so a process sharing the CPUs (a "
             "client, a load generator) that became runnable gets the CPU within ~10 us "
             "instead of when the search gives up. 1: every round; 0: never. Every round "
             "when the process has fewer CPUs than workers. Read when workers are added");

namespace weft::observe {
void install_fiber_dump_signal();
}

namespace weft::sched {
namespace {

// How long an idle worker keeps looking for work before it parks. Long
// enough to bridge a fiber ping-pong across workers without futex calls,
// short enough that an idle runtime drops to ~0% CPU at once.
constexpr int64_t kSearchNs = 20 * 1000;
// If a timer is due within this long, one searcher keeps searching until
// just after it fires: the fiber it wakes (a bthread_usleep, a butex
// timeout) is then picked up at once, without a cross-CPU futex wake.
constexpr int64_t kTimerSpinNs = 100 * 1000;
constexpr int64_t kTimerGraceNs = 20 * 1000;
// How long a thief lets a fiber sit in the run-next slot of a worker that
// makes no switch before it takes it (Go waits ~3 us). Long enough for the
// usual waker, which blocks right after waking, to run the fiber itself on
// its warm CPU; short against the cross-CPU wake-up a blocked waker forces.
constexpr int64_t kRunnextGraceNs = 5 * 1000;

std::atomic<TaskControl*> g_control{nullptr};
std::mutex g_control_mu;

// The CPUs this process may run on (its affinity mask, which `taskset`,
// cgroups' cpusets and container runtimes set), not the machine's: a worker
// beyond them has no CPU of its own, and every hand-off to it is a
// time-slice switch on a shared one (measured on one pinned CPU: an echo
// server with 1 worker answers 10-20% more calls than with 2). Go's
// GOMAXPROCS and Rust's available_parallelism count the same way.
int default_concurrency() {
  if (FLAGS_weft_concurrency > 0) return FLAGS_weft_concurrency;
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) > 0) {
    return CPU_COUNT(&cpus);
  }
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

thread_local uint32_t tls_pthread_nosignal = 0;
}  // namespace

// Set before the runtime starts (bthread_setconcurrency called early).
std::atomic<int> g_requested_concurrency{0};

TaskControl* TaskControl::get_if_started() { return g_control.load(std::memory_order_acquire); }

int planned_concurrency() {
  int n = g_requested_concurrency.load(std::memory_order_relaxed);
  if (n <= 0) n = default_concurrency();
  return n > TaskControl::kMaxWorkers ? TaskControl::kMaxWorkers : n;
}

TaskControl* TaskControl::get() {
  TaskControl* c = g_control.load(std::memory_order_acquire);
  if (WEFT_LIKELY(c != nullptr)) return c;
  std::lock_guard<std::mutex> guard(g_control_mu);
  c = g_control.load(std::memory_order_relaxed);
  if (c != nullptr) return c;
  // Leaked on purpose: workers run until the process exits.
  c = new TaskControl;
  c->add_workers(planned_concurrency());
  g_control.store(c, std::memory_order_release);
  observe::install_fiber_dump_signal();
  start_worker_monitor(c);
  return c;
}

int TaskControl::set_concurrency(int n) {
  if (n < 1 || n > kMaxWorkers) return EINVAL;
  {
    // Under the start's mutex: either the start has not read the request
    // yet and will use this one, or the runtime is up and we raise it.
    std::lock_guard<std::mutex> guard(g_control_mu);
    if (g_control.load(std::memory_order_relaxed) == nullptr) {
      if (g_requested_concurrency.load(std::memory_order_relaxed) > n) return EPERM;
      g_requested_concurrency.store(n, std::memory_order_relaxed);
      return 0;
    }
  }
  TaskControl* c = g_control.load(std::memory_order_acquire);
  if (n < c->concurrency()) return EPERM;
  const int before = c->concurrency();
  const int rc = c->add_workers(n);
  if (c->concurrency() != before) workers_added();
  return rc;
}

int TaskControl::concurrency_or_planned() {
  TaskControl* c = get_if_started();
  if (c != nullptr) return c->concurrency();
  std::lock_guard<std::mutex> guard(g_control_mu);
  c = g_control.load(std::memory_order_relaxed);
  return c != nullptr ? c->concurrency() : planned_concurrency();
}

int TaskControl::add_workers(int target) {
  std::lock_guard<std::mutex> guard(workers_mu_);
  int n = ngroups_.load(std::memory_order_relaxed);
  for (; n < target; ++n) {
    auto* g = new TaskGroup(this, n);
    groups_[n].store(g, std::memory_order_release);
    try {
      threads_.push_back(new std::thread([this, n] { worker_main(n); }));
    } catch (...) {
      groups_[n].store(nullptr, std::memory_order_relaxed);
      delete g;
      return EAGAIN;
    }
    // Release pairs with the acquire loads in steal_task(): a thief that sees
    // the new count sees the group.
    ngroups_.store(n + 1, std::memory_order_release);
  }
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0) {
    cpus_scarce_.store(CPU_COUNT(&cpus) < n, std::memory_order_relaxed);
  }
  const int every =
      cpus_scarce_.load(std::memory_order_relaxed) ? 1 : std::max(0, FLAGS_weft_search_yield_every);
  search_yield_every_.store(static_cast<uint32_t>(every), std::memory_order_relaxed);
  return 0;
}

void TaskControl::worker_main(int index) {
  stack_overflow_protect_thread();
  groups_[index].load(std::memory_order_acquire)->run_main_loop();
}

void TaskControl::push_remote(TaskMeta* m) {
  TaskMeta* head = remote_head_.load(std::memory_order_relaxed);
  do {
    m->remote_next = head;
    // Release publishes m (and its remote_next) to the acquire exchange in
    // pop_remote. Producers only push and the consumer takes the whole
    // stack, so a node is never popped alone and ABA cannot arise.
  } while (!remote_head_.compare_exchange_weak(head, m, std::memory_order_release,
                                               std::memory_order_relaxed));
}

bool TaskControl::pop_remote(TaskGroup* g, TaskMeta** out) {
  // The plain load keeps busy workers off the cache line when it is empty.
  if (remote_head_.load(std::memory_order_relaxed) == nullptr) return false;
  TaskMeta* stack = remote_head_.exchange(nullptr, std::memory_order_acquire);
  if (stack == nullptr) return false;
  // The stack is newest first: reverse it so fibers run in the order they
  // became ready.
  TaskMeta* fifo = nullptr;
  while (stack != nullptr) {
    TaskMeta* below = stack->remote_next;
    stack->remote_next = fifo;
    fifo = stack;
    stack = below;
  }
  *out = fifo;
  size_t rest = 0;
  for (TaskMeta* m = fifo->remote_next; m != nullptr;) {
    TaskMeta* following = m->remote_next;
    g->push_local(m);
    m = following;
    ++rest;
  }
  fifo->remote_next = nullptr;
  // The rest is a backlog on this worker now: let an idle worker share it.
  if (rest != 0) signal_task(1);
  return true;
}

void TaskControl::signal_task(int n) {
  // Orders the caller's push before the loads below; pairs with the seq_cst
  // updates of nsearching_/nidle_ in wait_task(). Either we see an idle,
  // non-searching worker and wake it, or that worker's re-check after it
  // announced itself sees our push.
  base::full_fence();
  if (nsearching_.load(std::memory_order_seq_cst) > 0) return;
  if (nidle_.load(std::memory_order_seq_cst) == 0) return;
  wake_idle(n);
}

bool TaskControl::wake_idle_worker() {
  base::full_fence();
  if (nidle_.load(std::memory_order_seq_cst) == 0) return false;
  return wake_idle(1) == 1;
}

int TaskControl::wake_idle(int n) {
  TaskGroup* woken[8];
  int count = 0;
  {
    std::lock_guard<std::mutex> guard(idle_mu_);
    while (count < n && count < 8 && !idle_.empty()) {
      woken[count++] = idle_.back();
      idle_.pop_back();
      nidle_.fetch_sub(1, std::memory_order_seq_cst);
      // Counted as searching on its behalf from now on, so the pushes that
      // follow before it gets a CPU do not wake anyone else.
      nsearching_.fetch_add(1, std::memory_order_seq_cst);
    }
  }
  for (int i = 0; i < count; ++i) {
    // Release pairs with the acquire exchange in wait_for_notification().
    woken[i]->park_word.store(1, std::memory_order_release);
    base::futex_wake(&woken[i]->park_word, 1);
  }
  return count;
}

void TaskControl::wait_for_notification(TaskGroup* g) {
  while (g->park_word.exchange(0, std::memory_order_acquire) == 0) {
    base::futex_wait(&g->park_word, 0, nullptr);
  }
}

bool TaskControl::leave_idle(TaskGroup* g) {
  std::lock_guard<std::mutex> guard(idle_mu_);
  for (size_t i = 0; i < idle_.size(); ++i) {
    if (idle_[i] == g) {
      idle_[i] = idle_.back();
      idle_.pop_back();
      nidle_.fetch_sub(1, std::memory_order_seq_cst);
      return true;
    }
  }
  return false;  // a waker took us: it counted us as searching
}

uint64_t TaskControl::total_switches() const {
  uint64_t sum = 0;
  const int n = ngroups_.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    TaskGroup* g = groups_[i].load(std::memory_order_acquire);
    if (g != nullptr) sum += g->nswitch.load(std::memory_order_relaxed);
  }
  return sum;
}

bool TaskControl::any_ready() const {
  if (has_remote()) return true;
  const int n = ngroups_.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    TaskGroup* g = groups_[i].load(std::memory_order_acquire);
    if (g != nullptr && g->queue_size_hint() != 0) return true;
  }
  return false;
}

bool TaskControl::steal_task(TaskGroup* self, TaskMeta** out, int64_t now) {
  if (pop_remote(self, out)) return true;
  const int n = ngroups_.load(std::memory_order_acquire);
  if (n <= 1) return false;
  const int start = static_cast<int>(self->next_random() % static_cast<uint32_t>(n));
  TaskGroup::VictimSeen* seen = self->victim_seen();
  for (int i = 0; i < n; ++i) {
    const int index = (start + i) % n;
    TaskGroup* victim = groups_[index].load(std::memory_order_acquire);
    if (victim == nullptr || victim == self) continue;
    if (victim->steal(out)) {
      nsteals.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    if (!victim->has_runnext()) continue;
    // A fiber waits in the victim's run-next slot. Take it only once the
    // victim has made no switch for the grace period: it is then stuck in
    // its current fiber, which is not going to run the woken one soon.
    const uint64_t switches = victim->nswitch.load(std::memory_order_relaxed);
    if (seen[index].nswitch != switches) {
      seen[index].nswitch = switches;
      seen[index].since_ns = now;
    } else if (now - seen[index].since_ns >= kRunnextGraceNs && victim->steal_runnext(out)) {
      nsteals.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

bool TaskControl::wait_task(TaskGroup* g, TaskMeta** out) {
  // Whether this worker holds a count in nsearching_: it takes one to
  // search, and a waker takes one on its behalf when it wakes it.
  bool searching = false;
  bool force_search = false;
  for (;;) {
    if (g->pop_local(out) || pop_remote(g, out)) {
      if (searching) end_search(/*found=*/true);
      return true;
    }

    // Search, unless half the busy workers already do (Go's cap): with
    // more workers than CPUs, a crowd of spinning searchers only takes CPU
    // time from the workers that have something to run. A worker woken on
    // somebody's behalf (searching already) always searches.
    bool found = false;
    if (!searching) {
      const int busy = concurrency() - nidle_.load(std::memory_order_seq_cst);
      if (force_search || 2 * nsearching_.load(std::memory_order_seq_cst) < busy) {
        nsearching_.fetch_add(1, std::memory_order_seq_cst);
        searching = true;
      }
      force_search = false;
    }
    if (searching) {
      int64_t now = base::monotonic_ns();
      int64_t give_up = now + kSearchNs;
      bool timer_spinner = false;
      for (int round = 0;; ++round) {
        if (steal_task(g, out, now)) {
          found = true;
          break;
        }
        // Between steal rounds: now and then give the CPU away, else
        // pause. Another process, or the victim (always so with fewer CPUs
        // than workers), may be waiting for this CPU. Every round would
        // cost a pair of processes that both poll (weft client and server,
        // unpinned) their ping-pong; never, a client sharing the CPUs
        // waits out the whole search (--weft_search_yield_every). Before
        // the give-up check, which falls on the same rounds: a search
        // whose 8 rounds outlast kSearchNs (a slow CPU, a sanitizer, many
        // victims) still yields once before it parks.
        if (search_yields_after(static_cast<uint32_t>(round))) {
          search_yields_.fetch_add(1, std::memory_order_relaxed);
          sched_yield();
        } else {
          for (int i = 0; i < 32; ++i) base::cpu_relax();
        }
        now = base::monotonic_ns();
        if ((round & 7) == 7) {
          if (now > give_up) {
            const int64_t due = timer::next_deadline_hint();
            if (due - now > kTimerSpinNs || now - due > kTimerGraceNs) break;
            if (!timer_spinner && timer_spinning_.exchange(true, std::memory_order_relaxed)) break;
            timer_spinner = true;
            give_up = due + kTimerGraceNs;
          }
        }
      }
      if (timer_spinner) timer_spinning_.store(false, std::memory_order_relaxed);
      end_search(found);
      searching = false;
      if (found) return true;
    }

    // Park: announce ourselves idle, re-check every queue, then sleep on our
    // own futex word until a waker takes us off the idle list.
    {
      std::lock_guard<std::mutex> guard(idle_mu_);
      idle_.push_back(g);
      nidle_.fetch_add(1, std::memory_order_seq_cst);
    }
    // The store-load barrier of the handshake with signal_task(): our
    // nidle_ increment must be visible before the queue loads of the
    // re-check (relaxed loads, which a locked RMW orders on x86 but not on
    // weaker CPUs). signal_task() has the mirror fence between its push and
    // its nidle_ load.
    base::full_fence();
    if (any_ready() && leave_idle(g)) {
      worker_unparked();
      force_search = true;  // work is visible: look for it, cap or not
      continue;
    }
    nparks.fetch_add(1, std::memory_order_relaxed);
    wait_for_notification(g);
    searching = true;  // the waker counted us
    worker_unparked();
  }
}

void TaskControl::end_search(bool found) {
  const bool last_searcher = nsearching_.fetch_sub(1, std::memory_order_seq_cst) == 1;
  // The last searcher to find work hands the search on if more work waits,
  // so a backlog never sits next to an idle worker.
  if (found && last_searcher && any_ready()) signal_task(1);
}

void requeue_local(TaskMeta* m) {
  TaskGroup* g = TaskGroup::current();
  m->state.store(TaskMeta::kReady, std::memory_order_relaxed);
  // The queue's tail, not the run-next slot: a yield lets every other ready
  // fiber run first.
  if (g->push_local(m) != 1) g->control()->signal_task(1);
}

void requeue_local_quietly(TaskMeta* m) {
  TaskGroup* g = TaskGroup::current();
  m->state.store(TaskMeta::kReady, std::memory_order_relaxed);
  // No signal_task: the fibers ahead of it were queued by whoever made them
  // ready, with whatever wake-up that called for; this fiber adds no work.
  g->push_local(m);
}

namespace {
void requeue_quietly(void* meta) { requeue_local_quietly(static_cast<TaskMeta*>(meta)); }
}  // namespace

void yield_quietly() {
  TaskGroup* g = TaskGroup::current();
  if (g == nullptr || !g->running_fiber() || !g->has_ready()) return;
  g->set_remained(requeue_quietly, g->current_task());
  g->sched();
}

void requeue_local_next(TaskMeta* m) {
  TaskGroup* g = TaskGroup::current();
  m->state.store(TaskMeta::kReady, std::memory_order_relaxed);
  if (g->push_runnext(m)) g->control()->signal_task(1);
}

void make_ready(TaskMeta* m, ReadyKind kind) {
  m->state.store(TaskMeta::kReady, std::memory_order_relaxed);
  m->state_since.store(base::coarse_monotonic_ns(), std::memory_order_relaxed);
  TaskGroup* g = TaskGroup::current();
  if (g != nullptr) {
    switch (kind) {
      case ReadyKind::kNew:
        g->push_local(m);
        g->control()->signal_task(1);
        break;
      case ReadyKind::kWoken:
        // Only a backlog (the slot was taken, so two fibers now wait here)
        // is worth a cross-CPU wake-up.
        if (g->push_runnext(m)) g->control()->signal_task(1);
        break;
      case ReadyKind::kNoSignal:
        g->push_local(m);
        ++g->nosignal_pending;
        break;
    }
    return;
  }
  TaskControl* c = TaskControl::get();
  c->push_remote(m);
  if (kind == ReadyKind::kNoSignal) {
    ++tls_pthread_nosignal;
  } else {
    c->signal_task(1);
  }
}

}  // namespace weft::sched

namespace weft::sched {

void yield_quietly_then_flush(uint32_t started) {
  TaskGroup* g = TaskGroup::current();
  if (g == nullptr || !g->running_fiber()) {
    flush_nosignal();
    return;
  }
  if (g->has_ready()) {
    g->set_remained(requeue_quietly, g->current_task());
    g->sched();
    if (TaskGroup::current() == g) {
      // Back on the same worker, from the tail of its FIFO queue: every
      // fiber queued there before the yield, the caller's `started` among
      // them, has been taken since (run here or stolen). Their wake-ups
      // are void. What is queued now came after, with its own waker's
      // policy; in particular a fiber that yields quietly (the polling
      // dispatcher) must not count, or every batch would wake a worker
      // just to steal the dispatcher.
      g->nosignal_pending -= started < g->nosignal_pending ? started : g->nosignal_pending;
      return;
    }
    g = TaskGroup::current();  // stolen: the fibers started before are gone too
  }
  // Nothing else was ready (the started fibers were stolen already), or
  // this fiber moved: wake only for what still waits here.
  if (g->nosignal_pending == 0) return;
  const size_t queued = g->queue_size_hint();
  const int n = static_cast<int>(queued < g->nosignal_pending ? queued : g->nosignal_pending);
  g->nosignal_pending = 0;
  if (n > 0) g->control()->signal_task(n);
}

void flush_nosignal() {
  TaskGroup* g = TaskGroup::current();
  uint32_t* pending = g != nullptr ? &g->nosignal_pending : &tls_pthread_nosignal;
  if (*pending == 0) return;
  const int n = static_cast<int>(*pending);
  *pending = 0;
  TaskControl* c = TaskControl::get_if_started();
  if (c != nullptr) c->signal_task(n);
}

}  // namespace weft::sched
