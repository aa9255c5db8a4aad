#include "weft/butex.h"

#include <errno.h>
#include <sched.h>
#include <stddef.h>

#include <climits>

#include "base/compiler.h"
#include "base/fault_injection.h"
#include "base/futex.h"
#include "base/slot_pool.h"
#include "sched/fiber_lifecycle.h"
#include "sched/task_control.h"
#include "sched/task_group.h"
#include "sched/task_meta.h"
#include "time/timer_thread.h"
#include "wait/butex_internal.h"

namespace weft::wait {

std::atomic<int> g_fault_timer_add{0};

namespace {

using ButexPool = base::SlotPool<Butex>;

// Waits until `done()`, for a store another thread makes in a few
// instructions. That thread may be a preempted pthread (the timer thread, an
// interrupter), so after a short spin give it the CPU.
template <typename Done>
void spin_until(Done done) {
  for (int spins = 0; !done(); ++spins) {
    if (spins < 64) {
      base::cpu_relax();
    } else {
      sched_yield();
    }
  }
}

void link_tail(Butex* b, ButexWaiter* w) {
  w->next = &b->waiters;
  w->prev = b->waiters.prev;
  b->waiters.prev->next = w;
  b->waiters.prev = w;
}

void unlink(ButexWaiter* w) {
  w->prev->next = w->next;
  w->next->prev = w->prev;
  w->prev = w->next = nullptr;
}

bool empty(const Butex* b) { return b->waiters.next == &b->waiters; }

// Resumes a waiter this thread unlinked. For a fiber, the node stays valid
// until make_ready (the fiber cannot run before). For a pthread, the node may
// vanish right after the store: the futex_wake on its address is then at
// worst a spurious wake-up of whatever reuses it, which every futex user
// tolerates.
}  // namespace

void resume_waiter(ButexWaiter* w) {
  if (w->fiber != nullptr) {
    sched::make_ready(w->fiber, sched::ReadyKind::kWoken);
  } else {
    // Release pairs with the acquire load in wait_in_pthread.
    w->futex_word.store(1, std::memory_order_release);
    base::futex_wake(&w->futex_word, 1);
  }
}

namespace {

struct EnqueueArgs {
  Butex* butex;
  int expected;
  ButexWaiter* waiter;
};

// Remained callback of a fiber that suspends in butex_wait: runs on the next
// context, after the waiting fiber's context is saved.
void enqueue_fiber_waiter(void* arg) {
  auto* a = static_cast<EnqueueArgs*>(arg);
  Butex* b = a->butex;
  ButexWaiter* w = a->waiter;
  sched::TaskMeta* m = w->fiber;
  b->lock.lock();
  // Relaxed is enough under the lock: a waker changes the value before it
  // takes this lock to wake, so either we see the new value or it sees us.
  if (b->value.load(std::memory_order_relaxed) != a->expected) {
    b->lock.unlock();
    w->reason = EWOULDBLOCK;
    sched::make_ready(m, sched::ReadyKind::kWoken);
    return;
  }
  link_tail(b, w);
  // Store-then-load, seq_cst: the Dekker handshake with bthread_interrupt
  // (stores interrupted, then loads container) and with the timeout callback
  // (stores timeout_fired, then loads container). One side always sees the
  // other, so neither wake-up is lost.
  w->container.store(b, std::memory_order_seq_cst);
  const bool interrupted = m->interrupted.load(std::memory_order_seq_cst);
  const bool timed_out = w->timeout_fired.load(std::memory_order_seq_cst);
  if (interrupted || timed_out) {
    unlink(w);
    w->container.store(nullptr, std::memory_order_relaxed);
    w->reason = interrupted ? EINTR : ETIMEDOUT;
    b->lock.unlock();
    sched::make_ready(m, sched::ReadyKind::kWoken);
    return;
  }
  b->lock.unlock();
}

void on_wait_timeout(void* arg) {
  auto* w = static_cast<ButexWaiter*>(arg);
  sched::TaskMeta* m = w->fiber;
  w->timeout_fired.store(true, std::memory_order_seq_cst);
  if (erase_waiter(w, ETIMEDOUT)) sched::make_ready(m, sched::ReadyKind::kWoken);
  // Last touch of the node. Release pairs with the acquire spin in
  // wait_in_fiber, which keeps the node alive until this store.
  w->timer_done.store(true, std::memory_order_release);
}

int wait_in_fiber(sched::TaskGroup* g, Butex* b, int expected, int64_t deadline) {
  sched::TaskMeta* m = g->current_task();
  if (m->interrupted.exchange(false, std::memory_order_acq_rel)) {
    errno = EINTR;
    return -1;
  }
  ButexWaiter w;
  w.fiber = m;
  if (deadline != base::kNoDeadline) {
    if (deadline <= base::monotonic_ns()) {
      errno = ETIMEDOUT;
      return -1;
    }
    // Armed before we are enqueued: if it fires first, timeout_fired tells
    // the enqueuer (see enqueue_fiber_waiter).
    const int rc = base::inject_fault(g_fault_timer_add)
                       ? ENOMEM
                       : timer::timer_add(&w.timer_id, deadline, on_wait_timeout, &w);
    if (rc != 0) {
      errno = rc;  // ENOMEM: callers give it back rather than retry
      return -1;
    }
  }
  m->current_waiter.store(&w, std::memory_order_release);
  m->wait_butex.store(&b->value, std::memory_order_relaxed);
  m->wait_deadline.store(deadline == base::kNoDeadline ? 0 : deadline, std::memory_order_relaxed);
  m->state_since.store(base::coarse_monotonic_ns(), std::memory_order_relaxed);
  m->state.store(sched::TaskMeta::kSuspended, std::memory_order_relaxed);
  EnqueueArgs args{b, expected, &w};
  g->set_remained(enqueue_fiber_waiter, &args);
  g->sched();
  // Resumed (maybe on another worker). Keep `w` alive until nobody can
  // touch it: first the timeout callback...
  if (w.timer_id != 0 && timer::timer_del(w.timer_id) != 0) {
    spin_until([&] { return w.timer_done.load(std::memory_order_acquire); });
  }
  // ...then an interrupter holding the token (it puts it back when done).
  spin_until(
      [&] { return m->current_waiter.exchange(nullptr, std::memory_order_acquire) != nullptr; });
  m->wait_butex.store(nullptr, std::memory_order_relaxed);
  if (w.reason == 0) return 0;
  if (w.reason == EINTR) m->interrupted.store(false, std::memory_order_relaxed);
  // Resumed, maybe on another pthread: errno through the opaque accessor.
  *base::errno_location() = w.reason;
  return -1;
}

// `m` is the BTHREAD_ATTR_PTHREAD fiber this pthread runs, or null for a
// plain pthread. Such a fiber is interruptible like any other: it publishes
// its waiter as the interrupt token and runs the same Dekker handshake as
// enqueue_fiber_waiter.
int wait_in_pthread(Butex* b, int expected, int64_t deadline, sched::TaskMeta* m) {
  if (m != nullptr && m->interrupted.exchange(false, std::memory_order_acq_rel)) {
    errno = EINTR;
    return -1;
  }
  ButexWaiter w;
  if (m != nullptr) m->current_waiter.store(&w, std::memory_order_release);
  b->lock.lock();
  if (b->value.load(std::memory_order_relaxed) != expected) {
    b->lock.unlock();
    w.reason = EWOULDBLOCK;
  } else {
    link_tail(b, &w);
    w.container.store(b, std::memory_order_seq_cst);
    if (m != nullptr && m->interrupted.load(std::memory_order_seq_cst)) {
      unlink(&w);
      w.container.store(nullptr, std::memory_order_relaxed);
      w.reason = EINTR;
      w.futex_word.store(1, std::memory_order_relaxed);
    }
    b->lock.unlock();
    while (w.futex_word.load(std::memory_order_acquire) != 1) {
      timespec relative;
      const timespec* prel = nullptr;
      if (deadline != base::kNoDeadline) {
        const int64_t left = deadline - base::monotonic_ns();
        if (left <= 0) {
          if (erase_waiter(&w, ETIMEDOUT)) break;
          // A waker unlinked us first and is about to store futex_word:
          // wait for it, since it still touches our node.
          while (w.futex_word.load(std::memory_order_acquire) != 1) {
            base::futex_wait(&w.futex_word, 0, nullptr);
          }
          break;
        }
        relative = base::ns_to_timespec(left);
        prel = &relative;
      }
      base::futex_wait(&w.futex_word, 0, prel);
    }
  }
  if (m != nullptr) {
    // An interrupter may hold the token (and touch `w`): wait for it back.
    spin_until(
        [&] { return m->current_waiter.exchange(nullptr, std::memory_order_acquire) != nullptr; });
    if (w.reason == EINTR) m->interrupted.store(false, std::memory_order_relaxed);
  }
  if (w.reason == 0) return 0;
  errno = w.reason;
  return -1;
}

}  // namespace

Butex* butex_alloc() {
  const uint32_t slot = ButexPool::instance().alloc();
  if (slot == ButexPool::kInvalid) return nullptr;
  Butex* b = ButexPool::instance().at(slot);
  b->slot = slot;
  b->value.store(0, std::memory_order_relaxed);
  return b;
}

void butex_free(Butex* b) { ButexPool::instance().free(b->slot); }

bool erase_waiter(ButexWaiter* w, int reason) {
  Butex* b = w->container.load(std::memory_order_seq_cst);
  while (b != nullptr) {
    b->lock.lock();
    if (w->container.load(std::memory_order_relaxed) == b) {
      unlink(w);
      w->container.store(nullptr, std::memory_order_relaxed);
      w->reason = reason;
      b->lock.unlock();
      return true;
    }
    b->lock.unlock();
    // Requeued to another butex meanwhile (or unlinked): look again.
    b = w->container.load(std::memory_order_acquire);
  }
  return false;
}

int butex_wait_until(Butex* b, int expected, int64_t deadline) {
  if (b->value.load(std::memory_order_acquire) != expected) {
    errno = EWOULDBLOCK;
    return -1;
  }
  sched::TaskGroup* g = sched::TaskGroup::current();
  if (g != nullptr && g->running_fiber()) return wait_in_fiber(g, b, expected, deadline);
  return wait_in_pthread(b, expected, deadline, g == nullptr ? sched::current_fiber() : nullptr);
}

int butex_wake_some(Butex* b, int max, bthread_t excluded) {
  ButexWaiter* woken = nullptr;  // chained through `next` once unlinked
  int n = 0;
  b->lock.lock();
  ButexWaiter* w = b->waiters.next;
  while (w != &b->waiters && n < max) {
    ButexWaiter* following = w->next;
    if (excluded == 0 || w->fiber == nullptr || w->fiber->tid != excluded) {
      unlink(w);
      w->container.store(nullptr, std::memory_order_relaxed);
      w->next = woken;
      woken = w;
      ++n;
    }
    w = following;
  }
  b->lock.unlock();
  // Resume in FIFO order: reverse the chain first.
  ButexWaiter* ordered = nullptr;
  while (woken != nullptr) {
    ButexWaiter* following = woken->next;
    woken->next = ordered;
    ordered = woken;
    woken = following;
  }
  while (ordered != nullptr) {
    ButexWaiter* following = ordered->next;  // read before the waiter may vanish
    resume_waiter(ordered);
    ordered = following;
  }
  return n;
}

}  // namespace weft::wait

namespace weft {

using wait::Butex;

void* butex_create() {
  Butex* b = wait::butex_alloc();
  return b == nullptr ? nullptr : &b->value;
}

void butex_destroy(void* butex) {
  if (butex != nullptr) wait::butex_free(wait::butex_of(butex));
}

int butex_wait(void* butex, int expected, const timespec* abstime) {
  const int64_t deadline =
      abstime == nullptr ? base::kNoDeadline : base::realtime_to_monotonic_deadline(*abstime);
  return wait::butex_wait_until(wait::butex_of(butex), expected, deadline);
}

int butex_wake(void* butex) { return wait::butex_wake_some(wait::butex_of(butex), 1, 0); }

int butex_wake_all(void* butex) { return wait::butex_wake_some(wait::butex_of(butex), INT_MAX, 0); }

int butex_wake_except(void* butex, bthread_t excluded) {
  return wait::butex_wake_some(wait::butex_of(butex), INT_MAX, excluded);
}

int butex_requeue(void* src_word, void* dst_word) {
  Butex* src = wait::butex_of(src_word);
  Butex* dst = wait::butex_of(dst_word);
  if (src == dst) return butex_wake(src_word);
  // Lock in address order so two opposite requeues cannot deadlock.
  Butex* first = src < dst ? src : dst;
  Butex* second = src < dst ? dst : src;
  first->lock.lock();
  second->lock.lock();
  wait::ButexWaiter* to_wake = nullptr;
  if (src->waiters.next != &src->waiters) {
    to_wake = src->waiters.next;
    wait::unlink(to_wake);
    to_wake->container.store(nullptr, std::memory_order_relaxed);
  }
  while (!wait::empty(src)) {
    wait::ButexWaiter* w = src->waiters.next;
    wait::unlink(w);
    wait::link_tail(dst, w);
    w->container.store(dst, std::memory_order_release);
  }
  second->lock.unlock();
  first->lock.unlock();
  if (to_wake == nullptr) return 0;
  wait::resume_waiter(to_wake);
  return 1;
}

}  // namespace weft
