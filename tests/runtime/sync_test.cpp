// Locks on butexes: mutual exclusion and exactly-once under stress (fibers
// and pthreads mixed), timeouts, and the C++ wrappers with the standard
// lock adaptors.
#include <errno.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <weft/bthread.h>
#include <weft/butex.h>
#include <weft/condition_variable.h>
#include <weft/countdown_event.h>
#include <weft/mutex.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "base/fault_injection.h"
#include "sched/task_meta.h"
#include "test_util.h"
#include "wait/butex_internal.h"

namespace {

using weft::test::kScale;
using weft::test::realtime_after_ms;

// Runs body(i) in `fibers` fibers and `pthreads` pthreads at once.
template <typename Body>
void run_mixed(int fibers, int pthreads, Body body) {
  struct Arg {
    Body* body;
    int index;
  };
  std::vector<Arg> args(fibers);
  std::vector<bthread_t> tids(fibers);
  for (int i = 0; i < fibers; ++i) {
    args[i] = Arg{&body, i};
    ASSERT_EQ(0, bthread_start_background(
                     &tids[i], nullptr,
                     [](void* a) -> void* {
                       auto* arg = static_cast<Arg*>(a);
                       (*arg->body)(arg->index);
                       return nullptr;
                     },
                     &args[i]));
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < pthreads; ++i) threads.emplace_back([&, i] { body(fibers + i); });
  for (auto& t : tids) ASSERT_EQ(0, bthread_join(t, nullptr));
  for (auto& t : threads) t.join();
}

TEST(MutexTest, MutualExclusionUnderStress) {
  bthread_mutex_t mu;
  ASSERT_EQ(0, bthread_mutex_init(&mu, nullptr));
  const int per = 100000 / kScale;
  long counter = 0;  // plain: the mutex is the only protection
  std::atomic<int> inside{0};
  std::atomic<int> violations{0};
  run_mixed(8, 2, [&](int) {
    for (int i = 0; i < per; ++i) {
      bthread_mutex_lock(&mu);
      if (inside.fetch_add(1) != 0) violations.fetch_add(1);
      ++counter;
      inside.fetch_sub(1);
      bthread_mutex_unlock(&mu);
    }
  });
  EXPECT_EQ(0, violations.load());
  EXPECT_EQ(10L * per, counter);
  bthread_mutex_destroy(&mu);
}

TEST(MutexTest, TrylockAndTimedlock) {
  bthread_mutex_t mu;
  ASSERT_EQ(0, bthread_mutex_init(&mu, nullptr));
  ASSERT_EQ(0, bthread_mutex_trylock(&mu));
  EXPECT_EQ(EBUSY, bthread_mutex_trylock(&mu));
  timespec soon = realtime_after_ms(20);
  EXPECT_EQ(ETIMEDOUT, bthread_mutex_timedlock(&mu, &soon));  // from a pthread
  struct Arg {
    bthread_mutex_t* mu;
    int rc = -1;
  } arg{&mu};
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(
                   &tid, nullptr,
                   [](void* a) -> void* {
                     auto* p = static_cast<Arg*>(a);
                     timespec t = realtime_after_ms(20);
                     p->rc = bthread_mutex_timedlock(p->mu, &t);
                     return nullptr;
                   },
                   &arg));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(ETIMEDOUT, arg.rc);
  ASSERT_EQ(0, bthread_mutex_unlock(&mu));
  timespec later = realtime_after_ms(1000);
  EXPECT_EQ(0, bthread_mutex_timedlock(&mu, &later));
  bthread_mutex_unlock(&mu);
  bthread_mutex_destroy(&mu);
}

TEST(MutexTest, LockIsNotEndedByInterrupts) {
  bthread_mutex_t mu;
  ASSERT_EQ(0, bthread_mutex_init(&mu, nullptr));
  bthread_mutex_lock(&mu);
  struct Arg {
    bthread_mutex_t* mu;
    std::atomic<int> state{0};
  } arg{&mu};
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(
                   &tid, nullptr,
                   [](void* a) -> void* {
                     auto* p = static_cast<Arg*>(a);
                     p->state.store(1);
                     bthread_mutex_lock(p->mu);
                     p->state.store(2);
                     bthread_mutex_unlock(p->mu);
                     return nullptr;
                   },
                   &arg));
  ASSERT_TRUE(weft::test::wait_until([&] { return arg.state.load() == 1; }));
  for (int i = 0; i < 10; ++i) {
    bthread_interrupt(tid);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(1, arg.state.load());
  bthread_mutex_unlock(&mu);
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(2, arg.state.load());
  bthread_mutex_destroy(&mu);
}

TEST(CondTest, ProducerConsumerExactlyOnce) {
  weft::Mutex mu;
  weft::ConditionVariable not_empty;
  std::vector<int> queue;
  const int producers = 4, per = 20000 / kScale;
  std::vector<std::atomic<int>> seen(producers * per);
  std::atomic<int> consumed{0};
  bool done = false;
  // Consumers: 4 fibers + 2 pthreads. Producers: 4 fibers.
  std::vector<bthread_t> producer_tids(producers);
  struct PArg {
    int index, per;
    weft::Mutex* mu;
    weft::ConditionVariable* cv;
    std::vector<int>* queue;
  };
  std::vector<PArg> pargs(producers);
  std::thread consumers_thread([&] {
    run_mixed(4, 2, [&](int) {
      for (;;) {
        std::unique_lock<weft::Mutex> lock(mu);
        not_empty.wait(lock, [&] { return !queue.empty() || done; });
        if (queue.empty()) return;
        const int item = queue.back();
        queue.pop_back();
        lock.unlock();
        seen[item].fetch_add(1);
        consumed.fetch_add(1);
      }
    });
  });
  for (int p = 0; p < producers; ++p) {
    pargs[p] = PArg{p, per, &mu, &not_empty, &queue};
    ASSERT_EQ(0, bthread_start_background(
                     &producer_tids[p], nullptr,
                     [](void* a) -> void* {
                       auto* arg = static_cast<PArg*>(a);
                       for (int i = 0; i < arg->per; ++i) {
                         {
                           std::lock_guard<weft::Mutex> guard(*arg->mu);
                           arg->queue->push_back(arg->index * arg->per + i);
                         }
                         arg->cv->notify_one();
                       }
                       return nullptr;
                     },
                     &pargs[p]));
  }
  for (auto& t : producer_tids) ASSERT_EQ(0, bthread_join(t, nullptr));
  ASSERT_TRUE(weft::test::wait_until([&] { return consumed.load() == producers * per; }));
  {
    std::lock_guard<weft::Mutex> guard(mu);
    done = true;
  }
  not_empty.notify_all();
  consumers_thread.join();
  for (auto& s : seen) ASSERT_EQ(1, s.load());
}

TEST(CondTest, TimedWaitTimesOutAndWorksWithConditionVariableAny) {
  weft::Mutex mu;
  weft::ConditionVariable cv;
  std::unique_lock<weft::Mutex> lock(mu);
  EXPECT_EQ(ETIMEDOUT, cv.wait_until(lock, realtime_after_ms(10)));
  EXPECT_TRUE(lock.owns_lock());
  lock.unlock();
  // std::condition_variable_any accepts any Lockable: weft::Mutex is one.
  std::condition_variable_any any;
  std::unique_lock<weft::Mutex> lock2(mu);
  EXPECT_FALSE(any.wait_for(lock2, std::chrono::milliseconds(5), [] { return false; }));
}

TEST(SemTest, CountsExactlyUnderStress) {
  bthread_sem_t sem;
  ASSERT_EQ(0, bthread_sem_init(&sem, 0));
  const int per = 20000 / kScale;
  std::atomic<int> taken{0};
  std::thread poster([&] {
    for (int i = 0; i < per; ++i) {
      bthread_sem_post(&sem);
      if (i % 1000 == 0) bthread_sem_post_n(&sem, 0);
    }
    bthread_sem_post_n(&sem, static_cast<unsigned>(9 * per));
  });
  run_mixed(8, 2, [&](int) {
    for (int i = 0; i < per; ++i) {
      if (bthread_sem_wait(&sem) == 0) taken.fetch_add(1);
    }
  });
  poster.join();
  EXPECT_EQ(10 * per, taken.load());
  EXPECT_EQ(EAGAIN, bthread_sem_trywait(&sem));
  timespec soon = realtime_after_ms(10);
  EXPECT_EQ(ETIMEDOUT, bthread_sem_timedwait(&sem, &soon));
  bthread_sem_post(&sem);
  EXPECT_EQ(0, bthread_sem_trywait(&sem));
  bthread_sem_destroy(&sem);
}

TEST(RwlockTest, ReadersShareWritersExclude) {
  bthread_rwlock_t rw;
  ASSERT_EQ(0, bthread_rwlock_init(&rw, nullptr));
  std::atomic<int> readers{0}, writers{0}, max_readers{0}, violations{0};
  long value = 0;
  const int per = 5000 / kScale;
  run_mixed(8, 2, [&](int i) {
    for (int k = 0; k < per; ++k) {
      if ((i + k) % 4 == 0) {
        bthread_rwlock_wrlock(&rw);
        if (writers.fetch_add(1) != 0 || readers.load() != 0) violations.fetch_add(1);
        ++value;
        writers.fetch_sub(1);
        bthread_rwlock_unlock(&rw);
      } else {
        bthread_rwlock_rdlock(&rw);
        const int r = readers.fetch_add(1) + 1;
        int m = max_readers.load();
        while (r > m && !max_readers.compare_exchange_weak(m, r)) {
        }
        if (writers.load() != 0) violations.fetch_add(1);
        readers.fetch_sub(1);
        bthread_rwlock_unlock(&rw);
      }
    }
  });
  EXPECT_EQ(0, violations.load());
  long expected = 0;
  for (int i = 0; i < 10; ++i)
    for (int k = 0; k < per; ++k) expected += (i + k) % 4 == 0;
  EXPECT_EQ(expected, value);
  // Try-variants.
  ASSERT_EQ(0, bthread_rwlock_tryrdlock(&rw));
  EXPECT_EQ(0, bthread_rwlock_tryrdlock(&rw));
  EXPECT_EQ(EBUSY, bthread_rwlock_trywrlock(&rw));
  bthread_rwlock_unlock(&rw);
  bthread_rwlock_unlock(&rw);
  ASSERT_EQ(0, bthread_rwlock_trywrlock(&rw));
  EXPECT_EQ(EBUSY, bthread_rwlock_tryrdlock(&rw));
  bthread_rwlock_unlock(&rw);
  bthread_rwlock_destroy(&rw);
}

TEST(RwlockTest, AWaitingWriterIsNotStarvedByReaders) {
  bthread_rwlock_t rw;
  ASSERT_EQ(0, bthread_rwlock_init(&rw, nullptr));
  std::atomic<bool> stop_readers{false}, writer_done{false};
  std::atomic<int> reader_rounds{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; ++i) {
    readers.emplace_back([&] {
      while (!stop_readers.load()) {
        bthread_rwlock_rdlock(&rw);
        reader_rounds.fetch_add(1);
        std::this_thread::yield();
        bthread_rwlock_unlock(&rw);
      }
    });
  }
  ASSERT_TRUE(weft::test::wait_until([&] { return reader_rounds.load() > 100; }));
  std::thread writer([&] {
    bthread_rwlock_wrlock(&rw);
    writer_done.store(true);
    bthread_rwlock_unlock(&rw);
  });
  EXPECT_TRUE(weft::test::wait_until([&] { return writer_done.load(); }));
  stop_readers.store(true);
  writer.join();
  for (auto& t : readers) t.join();
  bthread_rwlock_destroy(&rw);
}

std::atomic<int> g_once_runs{0};
void once_routine() {
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  g_once_runs.fetch_add(1);
}

TEST(OnceTest, RunsExactlyOnceAndEveryoneSeesItDone) {
  static bthread_once_t once = BTHREAD_ONCE_INIT;
  std::atomic<int> saw_done{0};
  run_mixed(16, 4, [&](int) {
    bthread_once(&once, once_routine);
    if (g_once_runs.load() == 1) saw_done.fetch_add(1);
  });
  EXPECT_EQ(1, g_once_runs.load());
  EXPECT_EQ(20, saw_done.load());
}

TEST(CountdownEventTest, WaitersReleaseAtZero) {
  weft::CountdownEvent ev(10);
  std::atomic<int> released{0};
  std::thread waiter_thread([&] {
    run_mixed(4, 2, [&](int) {
      ev.wait();
      released.fetch_add(1);
    });
  });
  run_mixed(5, 5, [&](int) { ev.signal(); });
  waiter_thread.join();
  EXPECT_EQ(6, released.load());
  ev.reset(1);
  EXPECT_EQ(ETIMEDOUT, ev.timed_wait(realtime_after_ms(10)));
  ev.add_count(1);
  ev.signal(2);
  EXPECT_EQ(0, ev.timed_wait(realtime_after_ms(10)));
}

// ---- interrupts: ignored by these waits, and kept for the next call ----

struct InterruptProbe {
  std::function<int()> wait;
  std::atomic<int> phase{0};  // 1: about to wait, 2: the wait returned
  int rc = -1;
  int next_rc = 0, next_errno = 0;
  int64_t next_ms = -1;
};

void* interrupt_probe_fiber(void* arg) {
  auto* p = static_cast<InterruptProbe*>(arg);
  p->phase.store(1);
  p->rc = p->wait();
  p->phase.store(2);
  // The interrupts the wait swallowed must end the next blocking call.
  const auto start = std::chrono::steady_clock::now();
  p->next_rc = bthread_usleep(5 * 1000 * 1000);
  p->next_errno = errno;
  p->next_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - start)
                   .count();
  return nullptr;
}

// Runs `wait` in a fiber, interrupts it while it waits, checks that it goes
// on waiting, then calls `release`: the wait returns 0 and the fiber's next
// blocking call ends at once with EINTR.
void expect_interrupts_ignored_and_rearmed(std::function<int()> wait,
                                           const std::function<void()>& release) {
  InterruptProbe p;
  p.wait = std::move(wait);
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, interrupt_probe_fiber, &p));
  ASSERT_TRUE(weft::test::wait_until([&] { return p.phase.load() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(0, bthread_interrupt(tid));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(1, p.phase.load()) << "an interrupt ended the wait";
  release();
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(0, p.rc);
  EXPECT_EQ(-1, p.next_rc) << "the swallowed interrupt was not re-armed";
  EXPECT_EQ(EINTR, p.next_errno);
  EXPECT_LT(p.next_ms, 1000);
}

TEST(InterruptTest, CountdownEventWaitAndTimedWaitIgnoreAndRearm) {
  static_assert(std::is_same_v<decltype(std::declval<weft::CountdownEvent&>().wait()), int>,
                "CountdownEvent::wait returns int, as bthread's does");
  {
    weft::CountdownEvent ev(1);
    expect_interrupts_ignored_and_rearmed([&] { return ev.wait(); }, [&] { ev.signal(); });
    EXPECT_EQ(0, ev.wait());
  }
  {
    weft::CountdownEvent ev(1);
    expect_interrupts_ignored_and_rearmed([&] { return ev.timed_wait(realtime_after_ms(20000)); },
                                          [&] { ev.signal(); });
  }
}

TEST(InterruptTest, SemWaitAndTimedWaitIgnoreAndRearm) {
  bthread_sem_t sem;
  ASSERT_EQ(0, bthread_sem_init(&sem, 0));
  expect_interrupts_ignored_and_rearmed([&] { return bthread_sem_wait(&sem); },
                                        [&] { bthread_sem_post(&sem); });
  expect_interrupts_ignored_and_rearmed(
      [&] {
        const timespec t = realtime_after_ms(20000);
        return bthread_sem_timedwait(&sem, &t);
      },
      [&] { bthread_sem_post(&sem); });
  EXPECT_EQ(EAGAIN, bthread_sem_trywait(&sem));
  bthread_sem_destroy(&sem);
}

TEST(InterruptTest, MutexLockAndTimedlockIgnoreAndRearm) {
  bthread_mutex_t mu;
  ASSERT_EQ(0, bthread_mutex_init(&mu, nullptr));
  for (int timed = 0; timed < 2; ++timed) {
    bthread_mutex_lock(&mu);
    expect_interrupts_ignored_and_rearmed(
        [&] {
          int rc;
          if (timed) {
            const timespec t = realtime_after_ms(20000);
            rc = bthread_mutex_timedlock(&mu, &t);
          } else {
            rc = bthread_mutex_lock(&mu);
          }
          if (rc == 0) bthread_mutex_unlock(&mu);
          return rc;
        },
        [&] { bthread_mutex_unlock(&mu); });
  }
  bthread_mutex_destroy(&mu);
}

// ---- no timer for a deadline: ENOMEM back, not a retry loop ----
//
// A fiber's timed wait needs a timer; when timer_add fails, butex_wait says
// ENOMEM. Retrying would spin at full CPU for as long as memory is short, so
// every timed wait gives ENOMEM to its caller at once. (Pthreads wait with a
// futex timeout: no timer, no such failure.) The fault is injected into the
// next timer_add only, so a retry would succeed and run to the deadline.

struct EnomemProbe {
  std::function<int()> wait;
  int rc = -1;
  int64_t ms = -1;
  int countdown_after = -1;
};

void* enomem_probe_fiber(void* arg) {
  auto* p = static_cast<EnomemProbe*>(arg);
  const auto start = std::chrono::steady_clock::now();
  weft::wait::g_fault_timer_add.store(1);
  p->rc = p->wait();
  p->countdown_after = weft::wait::g_fault_timer_add.exchange(0);
  p->ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                start)
              .count();
  return nullptr;
}

void expect_enomem_at_once(std::function<int()> wait) {
  EnomemProbe p;
  p.wait = std::move(wait);
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, enomem_probe_fiber, &p));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(0, p.countdown_after) << "the wait set no timer";
  EXPECT_EQ(ENOMEM, p.rc);
  EXPECT_LT(p.ms, 1000) << "the wait went on after the timer failed";
}

TEST(TimerFailureTest, TimedWaitsReturnEnomem) {
  const int kDeadlineMs = 2000;
  bthread_mutex_t mu;
  ASSERT_EQ(0, bthread_mutex_init(&mu, nullptr));
  {
    SCOPED_TRACE("bthread_mutex_timedlock");
    bthread_mutex_lock(&mu);  // held by this pthread: the fiber must wait
    expect_enomem_at_once([&] {
      const timespec t = realtime_after_ms(kDeadlineMs);
      return bthread_mutex_timedlock(&mu, &t);
    });
    bthread_mutex_unlock(&mu);
    EXPECT_EQ(0, bthread_mutex_trylock(&mu));  // still a working mutex
    bthread_mutex_unlock(&mu);
  }
  {
    SCOPED_TRACE("bthread_cond_timedwait");
    bthread_cond_t cond;
    ASSERT_EQ(0, bthread_cond_init(&cond, nullptr));
    expect_enomem_at_once([&] {
      bthread_mutex_lock(&mu);
      const timespec t = realtime_after_ms(kDeadlineMs);
      const int rc = bthread_cond_timedwait(&cond, &mu, &t);
      const bool held = bthread_mutex_trylock(&mu) == EBUSY;  // re-acquired
      bthread_mutex_unlock(&mu);
      return held ? rc : -1;
    });
    bthread_cond_destroy(&cond);
  }
  {
    SCOPED_TRACE("bthread_sem_timedwait");
    bthread_sem_t sem;
    ASSERT_EQ(0, bthread_sem_init(&sem, 0));
    expect_enomem_at_once([&] {
      const timespec t = realtime_after_ms(kDeadlineMs);
      return bthread_sem_timedwait(&sem, &t);
    });
    bthread_sem_destroy(&sem);
  }
  {
    SCOPED_TRACE("CountdownEvent::timed_wait");
    weft::CountdownEvent ev(1);
    expect_enomem_at_once([&] { return ev.timed_wait(realtime_after_ms(kDeadlineMs)); });
  }
  bthread_mutex_destroy(&mu);
}

// ---- broadcast requeues onto the mutex ----

// Waiters (fibers and pthreads, some with short timed waits that keep timing
// out) wait for the generation to move; each round every one of them must
// get through after one broadcast, made with the mutex held or not.
TEST(CondTest, BroadcastLetsEveryWaiterThroughNoneLost) {
  struct Rig {
    bthread_mutex_t mu;
    bthread_cond_t cond;
    int gen = 0;      // guarded by mu
    int waiting = 0;  // guarded by mu
    int passed = 0;   // guarded by mu
    int rounds = 0;
  } rig;
  ASSERT_EQ(0, bthread_mutex_init(&rig.mu, nullptr));
  ASSERT_EQ(0, bthread_cond_init(&rig.cond, nullptr));
  rig.rounds = 300 / kScale;
  const int fibers = 8, pthreads = 3;
  const int n = fibers + pthreads;
  std::thread waiters([&] {
    run_mixed(fibers, pthreads, [&](int i) {
      const bool timed = i % 3 == 0;
      for (int r = 0; r < rig.rounds; ++r) {
        bthread_mutex_lock(&rig.mu);
        const int mine = rig.gen;
        ++rig.waiting;
        while (rig.gen == mine) {
          if (timed) {
            const timespec t = realtime_after_ms(1);
            bthread_cond_timedwait(&rig.cond, &rig.mu, &t);
          } else {
            bthread_cond_wait(&rig.cond, &rig.mu);
          }
        }
        ++rig.passed;
        bthread_mutex_unlock(&rig.mu);
      }
    });
  });
  auto locked = [&](auto f) {
    bthread_mutex_lock(&rig.mu);
    const auto v = f();
    bthread_mutex_unlock(&rig.mu);
    return v;
  };
  for (int r = 0; r < rig.rounds; ++r) {
    ASSERT_TRUE(weft::test::wait_until([&] { return locked([&] { return rig.waiting == n; }); }))
        << "round " << r;
    bthread_mutex_lock(&rig.mu);
    rig.waiting = 0;
    ++rig.gen;
    if (r % 2 == 0) bthread_cond_broadcast(&rig.cond);  // mutex held
    bthread_mutex_unlock(&rig.mu);
    if (r % 2 == 1) bthread_cond_broadcast(&rig.cond);  // mutex free
    ASSERT_TRUE(weft::test::wait_until([&] {
      return locked([&] { return rig.passed == n * (r + 1); });
    })) << "round "
        << r << ": " << n * (r + 1) - rig.passed << " waiter(s) lost";
  }
  waiters.join();
  bthread_cond_destroy(&rig.cond);
  bthread_mutex_destroy(&rig.mu);
}

// One broadcast with the mutex held: one waiter is woken and the others are
// moved onto the mutex's butex without running (a woken fiber would have
// re-queued itself there as a locker, its wait target then the mutex word).
// Then every unlock hands the mutex on, and all get through.
TEST(CondTest, BroadcastMovesWaitersOntoTheMutexInsteadOfWakingThem) {
  struct Rig {
    bthread_mutex_t mu;
    bthread_cond_t cond;
    bool go = false;  // guarded by mu
    int waiting = 0;  // guarded by mu
    std::atomic<int> passed{0};
  } rig;
  ASSERT_EQ(0, bthread_mutex_init(&rig.mu, nullptr));
  ASSERT_EQ(0, bthread_cond_init(&rig.cond, nullptr));
  const int fibers = 8, pthreads = 2;
  const int n = fibers + pthreads;
  std::thread waiters([&] {
    run_mixed(fibers, pthreads, [&](int) {
      bthread_mutex_lock(&rig.mu);
      ++rig.waiting;
      while (!rig.go) bthread_cond_wait(&rig.cond, &rig.mu);
      rig.passed.fetch_add(1);
      bthread_mutex_unlock(&rig.mu);
    });
  });
  auto* mutex_butex = reinterpret_cast<weft::wait::Butex*>(rig.mu.butex);
  auto* seq_word = reinterpret_cast<const void*>(rig.cond.seq);
  struct Linked {
    int all = 0, fibers_still_on_cond = 0;
  };
  auto on_mutex = [&] {
    Linked l;
    mutex_butex->lock.lock();
    for (auto* w = mutex_butex->waiters.next; w != &mutex_butex->waiters; w = w->next) {
      ++l.all;
      if (w->fiber != nullptr && w->fiber->wait_butex.load() == seq_word) ++l.fibers_still_on_cond;
    }
    mutex_butex->lock.unlock();
    return l;
  };
  for (;;) {  // all n inside bthread_cond_wait, and linked into the cond's butex
    bthread_mutex_lock(&rig.mu);
    if (rig.waiting == n) break;
    bthread_mutex_unlock(&rig.mu);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto* seq_butex = reinterpret_cast<weft::wait::Butex*>(rig.cond.seq);
  ASSERT_TRUE(weft::test::wait_until([&] {
    int linked = 0;
    seq_butex->lock.lock();
    for (auto* w = seq_butex->waiters.next; w != &seq_butex->waiters; w = w->next) ++linked;
    seq_butex->lock.unlock();
    return linked == n;
  }));
  rig.go = true;
  bthread_cond_broadcast(&rig.cond);
  // Everyone ends up on the mutex (the woken one as a locker: we hold it).
  Linked l;
  EXPECT_TRUE(weft::test::wait_until([&] { return (l = on_mutex()).all == n; }))
      << l.all << " of " << n << " on the mutex";
  EXPECT_GE(l.fibers_still_on_cond, fibers - 1)
      << "broadcast woke the waiters instead of moving them";
  bthread_mutex_unlock(&rig.mu);
  waiters.join();
  EXPECT_EQ(n, rig.passed.load());
  bthread_cond_destroy(&rig.cond);
  bthread_mutex_destroy(&rig.mu);
}

}  // namespace
