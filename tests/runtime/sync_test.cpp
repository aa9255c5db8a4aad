// Locks on butexes: mutual exclusion and exactly-once under stress (fibers
// and pthreads mixed), timeouts, and the C++ wrappers with the standard
// lock adaptors.
#include <errno.h>
#include <gtest/gtest.h>
#include <weft/bthread.h>
#include <weft/condition_variable.h>
#include <weft/countdown_event.h>
#include <weft/mutex.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "test_util.h"

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

}  // namespace
