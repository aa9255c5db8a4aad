// The C API of weft/bthread.h: thin shims over the scheduler.
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>

#include "base/compiler.h"
#include "base/time_util.h"
#include "sched/fiber_lifecycle.h"
#include "sched/task_control.h"
#include "sched/task_group.h"
#include "time/timer_thread.h"
#include "wait/butex_internal.h"
#include "weft/bthread.h"

using weft::sched::TaskControl;
using weft::sched::TaskGroup;
using weft::sched::TaskMeta;

extern "C" {

const bthread_attr_t BTHREAD_ATTR_PTHREAD = {BTHREAD_STACKTYPE_PTHREAD, 0, nullptr};
const bthread_attr_t BTHREAD_ATTR_SMALL = {BTHREAD_STACKTYPE_SMALL, 0, nullptr};
const bthread_attr_t BTHREAD_ATTR_NORMAL = {BTHREAD_STACKTYPE_NORMAL, 0, nullptr};
const bthread_attr_t BTHREAD_ATTR_LARGE = {BTHREAD_STACKTYPE_LARGE, 0, nullptr};

int bthread_start_urgent(bthread_t* tid, const bthread_attr_t* attr, void* (*fn)(void*),
                         void* arg) {
  return weft::sched::start_fiber(tid, attr, fn, arg, /*urgent=*/true);
}

int bthread_start_background(bthread_t* tid, const bthread_attr_t* attr, void* (*fn)(void*),
                             void* arg) {
  return weft::sched::start_fiber(tid, attr, fn, arg, /*urgent=*/false);
}

void bthread_flush(void) { weft::sched::flush_nosignal(); }

int bthread_join(bthread_t bt, void** ret) { return weft::sched::join_fiber(bt, ret); }

bthread_t bthread_self(void) {
  TaskMeta* m = weft::sched::current_fiber();
  return m != nullptr ? m->tid : 0;
}

int bthread_equal(bthread_t t1, bthread_t t2) { return t1 == t2; }

void bthread_exit(void* retval) {
  if (weft::sched::current_fiber() != nullptr) throw weft::sched::FiberExit{retval};
  pthread_exit(retval);
}

static void requeue_yielder(void* meta) {
  weft::sched::requeue_local(static_cast<TaskMeta*>(meta));
}

int bthread_yield(void) {
  TaskGroup* g = TaskGroup::current();
  if (g == nullptr || !g->running_fiber()) return sched_yield();
  if (!g->has_ready()) return 0;  // nothing else to run: keep going
  g->set_remained(requeue_yielder, g->current_task());
  g->sched();
  return 0;
}


// Sleeps shorter than the kernel's timer latency on these VMs (~15 us for a
// futex timeout) cannot be served by the timer thread in time. For those a
// fiber on a worker yields to any ready fiber and otherwise polls the clock:
// the worker is never held from other fibers, and stop/interrupt still end
// the sleep.
static constexpr uint64_t kShortSleepNs = 20 * 1000;

static int short_sleep(TaskMeta* m, int64_t deadline) {
  for (;;) {
    // errno through the opaque accessor: this loop yields, so the fiber
    // may be on another pthread than in the previous round.
    if (m->stop.load(std::memory_order_acquire)) {
      *weft::base::errno_location() = ESTOP;
      return -1;
    }
    if (m->interrupted.exchange(false, std::memory_order_acq_rel)) {
      *weft::base::errno_location() = EINTR;
      return -1;
    }
    if (weft::base::monotonic_ns() >= deadline) return 0;
    TaskGroup* g = TaskGroup::current();
    if (g->has_ready()) {
      bthread_yield();
    } else {
      for (int i = 0; i < 16; ++i) weft::base::cpu_relax();
    }
  }
}

int bthread_usleep(uint64_t microseconds) {
  // Fibers on workers and BTHREAD_ATTR_PTHREAD fibers sleep on their private
  // butex (so stop/interrupt end the sleep); plain pthreads use usleep(3).
  TaskMeta* m = weft::sched::current_fiber();
  if (m == nullptr) return usleep(static_cast<useconds_t>(microseconds));
  if (m->stop.load(std::memory_order_acquire)) {
    errno = ESTOP;
    return -1;
  }
  if (microseconds == 0) return bthread_yield();
  const int64_t deadline = weft::base::monotonic_ns() + static_cast<int64_t>(microseconds) * 1000;
  TaskGroup* g = TaskGroup::current();
  if (g != nullptr && microseconds * 1000 <= kShortSleepNs) return short_sleep(m, deadline);
  // Nobody wakes the private sleep butex: only the deadline or an interrupt
  // ends the wait.
  // A sleep that ends at its deadline succeeds and leaves the caller's
  // errno as it was (the butex wait reports the deadline as ETIMEDOUT).
  // errno is reached through the opaque accessor after each suspension.
  const int saved_errno = *weft::base::errno_location();
  for (;;) {
    if (weft::wait::butex_wait_until(m->sleep_butex, 0, deadline) == 0) continue;
    int* err = weft::base::errno_location();
    if (*err == ETIMEDOUT) {
      *err = saved_errno;
      return 0;
    }
    if (*err == EINTR && m->stop.load(std::memory_order_acquire)) *err = ESTOP;
    return -1;
  }
}

int bthread_stop(bthread_t tid) { return weft::sched::interrupt_fiber(tid, /*stop=*/true); }

int bthread_stopped(bthread_t tid) { return weft::sched::fiber_stopped(tid); }

int bthread_interrupt(bthread_t tid) { return weft::sched::interrupt_fiber(tid, /*stop=*/false); }

int bthread_getconcurrency(void) { return TaskControl::concurrency_or_planned(); }

int bthread_setconcurrency(int num) { return TaskControl::set_concurrency(num); }

int bthread_attr_init(bthread_attr_t* attr) {
  if (attr == nullptr) return EINVAL;
  *attr = BTHREAD_ATTR_NORMAL;
  return 0;
}

int bthread_attr_destroy(bthread_attr_t* attr) { return attr == nullptr ? EINVAL : 0; }

int bthread_timer_add(bthread_timer_t* id, struct timespec abstime, void (*on_timer)(void*),
                      void* arg) {
  if (on_timer == nullptr || id == nullptr) return EINVAL;
  return weft::timer::timer_add(id, weft::base::realtime_to_monotonic_deadline(abstime), on_timer,
                                arg);
}

int bthread_timer_del(bthread_timer_t id) { return weft::timer::timer_del(id); }

}  // extern "C"
