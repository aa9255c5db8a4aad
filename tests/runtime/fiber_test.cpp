// Fibers and the scheduler: every call of weft/bthread.h's fiber section and
// its error codes, run once per worker count (1, 2 and 8; see CMakeLists).
#include <errno.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/resource.h>
#include <weft/bthread.h>
#include <weft/butex.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "sched/task_meta.h"
#include "test_util.h"
#include "wait/butex_internal.h"

DECLARE_int32(weft_concurrency);

namespace {

using weft::test::kScale;

void* return_arg(void* arg) { return arg; }

TEST(FiberTest, StartBackgroundAndJoinReturnsTheFunctionsValue) {
  int value = 7;
  bthread_t tid = 0;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, return_arg, &value));
  ASSERT_NE(0u, tid);
  void* ret = nullptr;
  ASSERT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(&value, ret);
}

TEST(FiberTest, EveryAttrRunsAndJoins) {
  const bthread_attr_t* attrs[] = {&BTHREAD_ATTR_SMALL, &BTHREAD_ATTR_NORMAL, &BTHREAD_ATTR_LARGE,
                                   &BTHREAD_ATTR_PTHREAD, nullptr};
  for (const bthread_attr_t* attr : attrs) {
    int value = 1;
    bthread_t tid;
    ASSERT_EQ(0, bthread_start_background(&tid, attr, return_arg, &value));
    void* ret = nullptr;
    ASSERT_EQ(0, bthread_join(tid, &ret));
    EXPECT_EQ(&value, ret);
  }
}

TEST(FiberTest, AttrObjectsAreRealAndCopyable) {
  bthread_attr_t attr = BTHREAD_ATTR_SMALL;
  attr.flags |= BTHREAD_NOSIGNAL;
  const bthread_attr_t* addr = &BTHREAD_ATTR_LARGE;
  EXPECT_EQ(BTHREAD_STACKTYPE_LARGE, addr->stack_type);
  bthread_attr_t init;
  ASSERT_EQ(0, bthread_attr_init(&init));
  EXPECT_EQ(BTHREAD_STACKTYPE_NORMAL, init.stack_type);
  EXPECT_EQ(0, bthread_attr_destroy(&init));
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, &attr, return_arg, nullptr));
  bthread_flush();
  EXPECT_EQ(0, bthread_join(tid, nullptr));
}

TEST(FiberTest, BadArgumentsAreRejected) {
  bthread_t tid = 0;
  EXPECT_EQ(EINVAL, bthread_start_background(&tid, nullptr, nullptr, nullptr));
  EXPECT_EQ(EINVAL, bthread_start_urgent(&tid, nullptr, nullptr, nullptr));
  bthread_attr_t bad = BTHREAD_ATTR_NORMAL;
  bad.stack_type = static_cast<bthread_stacktype_t>(99);
  EXPECT_EQ(EINVAL, bthread_start_background(&tid, &bad, return_arg, nullptr));
  EXPECT_EQ(EINVAL, bthread_join(0, nullptr));
  EXPECT_EQ(EINVAL, bthread_join(0xffffffff00ffffffULL, nullptr));  // slot never issued
  EXPECT_EQ(EINVAL, bthread_attr_init(nullptr));
}

TEST(FiberTest, TidMayBeNull) {
  std::atomic<int> ran{0};
  auto fn = [](void* arg) -> void* {
    static_cast<std::atomic<int>*>(arg)->fetch_add(1);
    return nullptr;
  };
  ASSERT_EQ(0, bthread_start_background(nullptr, nullptr, fn, &ran));
  ASSERT_EQ(0, bthread_start_urgent(nullptr, nullptr, fn, &ran));
  ASSERT_TRUE(weft::test::wait_until([&] { return ran.load() == 2; }));
}

TEST(FiberTest, JoiningAnEndedIdAnswersAtOnceWithItsValueUntilTheSlotIsReused) {
  int value = 3;
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, return_arg, &value));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  void* ret = nullptr;
  EXPECT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(&value, ret);
  // Churn until a later fiber takes the same slot; the old id then answers
  // 0 with NULL and never names the new fiber. Freed slots queue up FIFO in
  // the pool, so keep 1,000 fibers in flight per round: that drains the
  // per-thread caches and walks the shared free list until the slot comes
  // round again.
  bool reused = false;
  std::vector<bthread_t> batch(1000);
  for (int round = 0; round < 5000 && !reused; ++round) {
    for (auto& t : batch) {
      ASSERT_EQ(0, bthread_start_background(&t, &BTHREAD_ATTR_SMALL, return_arg, nullptr));
      ASSERT_NE(tid, t);
      if (static_cast<uint32_t>(t) == static_cast<uint32_t>(tid)) reused = true;
    }
    for (auto& t : batch) ASSERT_EQ(0, bthread_join(t, nullptr));
  }
  ASSERT_TRUE(reused);
  ret = &value;
  EXPECT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(nullptr, ret);
}

TEST(FiberTest, JoiningSelfIsEinval) {
  auto fn = [](void*) -> void* {
    return reinterpret_cast<void*>(static_cast<intptr_t>(bthread_join(bthread_self(), nullptr)));
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, fn, nullptr));
  void* ret;
  ASSERT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(EINVAL, static_cast<int>(reinterpret_cast<intptr_t>(ret)));
}

TEST(FiberTest, ManyJoinersFromFibersAndPthreadsAllSeeTheResult) {
  int gate_word = 0;
  void* gate = weft::butex_create();
  static int value = 11;
  struct Target {
    static void* run(void* g) {
      while (*static_cast<std::atomic<int>*>(g) == 0) weft::butex_wait(g, 0, nullptr);
      return &value;
    }
  };
  (void)gate_word;
  bthread_t target;
  ASSERT_EQ(0, bthread_start_background(&target, nullptr, Target::run, gate));
  std::atomic<int> saw_value{0};
  struct JoinArg {
    bthread_t target;
    std::atomic<int>* saw;
  } arg{target, &saw_value};
  auto joiner = [](void* a) -> void* {
    auto* ja = static_cast<JoinArg*>(a);
    void* ret = nullptr;
    if (bthread_join(ja->target, &ret) == 0 && ret == &value) ja->saw->fetch_add(1);
    return nullptr;
  };
  std::vector<bthread_t> fibers(16);
  for (auto& t : fibers) ASSERT_EQ(0, bthread_start_background(&t, nullptr, joiner, &arg));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&] { joiner(&arg); });
  // Let the joiners register before the target ends (not required for
  // correctness: late joiners answer 0 with NULL and are not counted).
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  static_cast<std::atomic<int>*>(gate)->store(1);
  weft::butex_wake_all(gate);
  for (auto& t : fibers) ASSERT_EQ(0, bthread_join(t, nullptr));
  for (auto& t : threads) t.join();
  // Every joiner that was waiting got the value; late ones got NULL.
  EXPECT_GE(saw_value.load(), 1);
  EXPECT_LE(saw_value.load(), 20);
  weft::butex_destroy(gate);
}

TEST(FiberTest, SelfAndEqual) {
  EXPECT_EQ(0u, bthread_self());
  auto fn = [](void* out) -> void* {
    *static_cast<bthread_t*>(out) = bthread_self();
    return nullptr;
  };
  bthread_t seen = 0;
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, fn, &seen));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(tid, seen);
  EXPECT_TRUE(bthread_equal(tid, seen));
  EXPECT_FALSE(bthread_equal(tid, tid + 1));
  ASSERT_EQ(0, bthread_start_background(&tid, &BTHREAD_ATTR_PTHREAD, fn, &seen));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(tid, seen);
}

TEST(FiberTest, IdsAreVersionedNoAbaAfterReuse) {
  bthread_t first;
  ASSERT_EQ(0, bthread_start_background(&first, nullptr, return_arg, nullptr));
  ASSERT_EQ(0, bthread_join(first, nullptr));
  // Churn so the slot is reused; the stale id must never match a new fiber.
  for (int i = 0; i < 1000; ++i) {
    bthread_t t;
    ASSERT_EQ(0, bthread_start_background(&t, nullptr, return_arg, nullptr));
    EXPECT_NE(first, t);
    ASSERT_EQ(0, bthread_join(t, nullptr));
  }
  EXPECT_EQ(EINVAL, bthread_stop(first));
  EXPECT_EQ(EINVAL, bthread_interrupt(first));
  EXPECT_EQ(1, bthread_stopped(first));
  EXPECT_EQ(0, bthread_join(first, nullptr));
}

struct Unwound {
  std::atomic<bool>* flag;
  ~Unwound() { flag->store(true); }
};

TEST(FiberTest, ExitEndsTheFiberUnwindsAndGivesTheValue) {
  static std::atomic<bool> destroyed{false};
  static int value = 5;
  auto fn = [](void*) -> void* {
    Unwound guard{&destroyed};
    bthread_exit(&value);
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, fn, nullptr));
  void* ret = nullptr;
  ASSERT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(&value, ret);
  EXPECT_TRUE(destroyed.load());
}

TEST(FiberTest, ExitInAPthreadFiberToo) {
  static int value = 6;
  auto fn = [](void*) -> void* { bthread_exit(&value); };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, &BTHREAD_ATTR_PTHREAD, fn, nullptr));
  void* ret = nullptr;
  ASSERT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(&value, ret);
}

TEST(FiberTest, StartUrgentRunsTheNewFiberBeforeTheCallerContinues) {
  auto outer = [](void*) -> void* {
    std::atomic<int> step{0};
    auto inner = [](void* s) -> void* {
      static_cast<std::atomic<int>*>(s)->store(1);
      return nullptr;
    };
    bthread_t child;
    if (bthread_start_urgent(&child, nullptr, inner, &step) != 0) return nullptr;
    // The child ran to completion before we got the CPU back.
    const int seen = step.load();
    bthread_join(child, nullptr);
    return reinterpret_cast<void*>(static_cast<intptr_t>(seen));
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, outer, nullptr));
  void* ret;
  ASSERT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(1, static_cast<int>(reinterpret_cast<intptr_t>(ret)));
}

TEST(FiberTest, YieldLetsOthersRunAndReturnsZero) {
  EXPECT_EQ(0, bthread_yield());  // pthread: sched_yield
  struct Shared {
    std::atomic<int> turns{0};
  } shared;
  auto fn = [](void* a) -> void* {
    auto* s = static_cast<Shared*>(a);
    for (int i = 0; i < 1000; ++i) {
      s->turns.fetch_add(1);
      if (bthread_yield() != 0) return reinterpret_cast<void*>(1);
    }
    return nullptr;
  };
  std::vector<bthread_t> tids(4);
  for (auto& t : tids) ASSERT_EQ(0, bthread_start_background(&t, nullptr, fn, &shared));
  for (auto& t : tids) {
    void* ret;
    ASSERT_EQ(0, bthread_join(t, &ret));
    EXPECT_EQ(nullptr, ret);
  }
  EXPECT_EQ(4000, shared.turns.load());
}

TEST(FiberTest, NoSignalFibersRunAfterFlush) {
  std::atomic<int> ran{0};
  auto fn = [](void* a) -> void* {
    static_cast<std::atomic<int>*>(a)->fetch_add(1);
    return nullptr;
  };
  bthread_attr_t attr = BTHREAD_ATTR_SMALL;
  attr.flags = BTHREAD_NOSIGNAL;
  std::vector<bthread_t> tids(100);
  for (auto& t : tids) ASSERT_EQ(0, bthread_start_background(&t, &attr, fn, &ran));
  bthread_flush();
  for (auto& t : tids) ASSERT_EQ(0, bthread_join(t, nullptr));
  EXPECT_EQ(100, ran.load());
}

TEST(FiberTest, ConcurrencyIsTheFlagAndCannotBeLowered) {
  const int n = bthread_getconcurrency();
  if (FLAGS_weft_concurrency > 0) {
    EXPECT_EQ(FLAGS_weft_concurrency, n);
  }
  if (n > 1) {
    EXPECT_EQ(EPERM, bthread_setconcurrency(n - 1));
  }
  EXPECT_EQ(EINVAL, bthread_setconcurrency(0));
  EXPECT_EQ(EINVAL, bthread_setconcurrency(100000));
  EXPECT_EQ(n, bthread_getconcurrency());
}

TEST(FiberTest, UsleepSleepsTheFiberForAtLeastTheTime) {
  auto fn = [](void*) -> void* {
    const auto start = std::chrono::steady_clock::now();
    if (bthread_usleep(20000) != 0) return reinterpret_cast<void*>(-1);
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    return reinterpret_cast<void*>(static_cast<intptr_t>(us));
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, fn, nullptr));
  void* ret;
  ASSERT_EQ(0, bthread_join(tid, &ret));
  EXPECT_GE(reinterpret_cast<intptr_t>(ret), 20000);
  EXPECT_EQ(0, bthread_usleep(100));  // pthread: usleep(3)
}

TEST(FiberTest, ManySleepersDoNotHoldTheirWorkers) {
  // 2,000 fibers sleep 50 ms each. If a sleep held its worker this would
  // take 2000 * 50 ms / workers; the test only checks they all finish.
  const int n = 2000 / kScale;
  std::vector<bthread_t> tids(n);
  auto fn = [](void*) -> void* {
    return reinterpret_cast<void*>(static_cast<intptr_t>(bthread_usleep(50000)));
  };
  for (auto& t : tids) ASSERT_EQ(0, bthread_start_background(&t, &BTHREAD_ATTR_SMALL, fn, nullptr));
  for (auto& t : tids) {
    void* ret;
    ASSERT_EQ(0, bthread_join(t, &ret));
    EXPECT_EQ(nullptr, ret);
  }
}

struct StopProbe {
  std::atomic<int> started{0};
  std::atomic<int> rc{1};
  std::atomic<int> err{0};
};

void* sleep_long(void* a) {
  auto* p = static_cast<StopProbe*>(a);
  p->started.store(1);
  const int rc = bthread_usleep(60ull * 1000 * 1000);
  p->err.store(errno);
  p->rc.store(rc);
  return nullptr;
}

TEST(FiberTest, StopWakesUsleepWithEstop) {
  StopProbe probe;
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, sleep_long, &probe));
  ASSERT_TRUE(weft::test::wait_until([&] { return probe.started.load() == 1; }));
  EXPECT_EQ(0, bthread_stopped(tid));
  ASSERT_EQ(0, bthread_stop(tid));
  EXPECT_EQ(1, bthread_stopped(tid));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(-1, probe.rc.load());
  EXPECT_EQ(ESTOP, probe.err.load());
}

TEST(FiberTest, InterruptWakesUsleepWithEintr) {
  StopProbe probe;
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, sleep_long, &probe));
  ASSERT_TRUE(weft::test::wait_until([&] { return probe.started.load() == 1; }));
  ASSERT_EQ(0, bthread_interrupt(tid));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(-1, probe.rc.load());
  EXPECT_EQ(EINTR, probe.err.load());
  EXPECT_EQ(1, bthread_stopped(tid));  // ended
}

TEST(FiberTest, AnInterruptSentBeforeBlockingEndsTheNextBlockingCall) {
  struct Probe {
    std::atomic<int> phase{0};
    std::atomic<int> err{0};
  } probe;
  auto fn = [](void* a) -> void* {
    auto* p = static_cast<Probe*>(a);
    p->phase.store(1);
    while (p->phase.load() != 2) bthread_yield();
    const int rc = bthread_usleep(60ull * 1000 * 1000);
    p->err.store(rc == -1 ? errno : 0);
    return nullptr;
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, fn, &probe));
  ASSERT_TRUE(weft::test::wait_until([&] { return probe.phase.load() == 1; }));
  ASSERT_EQ(0, bthread_interrupt(tid));
  probe.phase.store(2);
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(EINTR, probe.err.load());
}

TEST(FiberTest, StopAndInterruptWakeButexWaitWithEintr) {
  for (bool stop : {false, true}) {
    struct Probe {
      void* butex;
      std::atomic<int> started{0};
      std::atomic<int> err{0};
      std::atomic<int> stopped{-1};
    } probe;
    probe.butex = weft::butex_create();
    auto fn = [](void* a) -> void* {
      auto* p = static_cast<Probe*>(a);
      p->started.store(1);
      const int rc = weft::butex_wait(p->butex, 0, nullptr);
      p->err.store(rc == -1 ? errno : 0);
      p->stopped.store(bthread_stopped(bthread_self()));
      return nullptr;
    };
    bthread_t tid;
    ASSERT_EQ(0, bthread_start_background(&tid, nullptr, fn, &probe));
    ASSERT_TRUE(weft::test::wait_until([&] { return probe.started.load() == 1; }));
    ASSERT_EQ(0, stop ? bthread_stop(tid) : bthread_interrupt(tid));
    ASSERT_EQ(0, bthread_join(tid, nullptr));
    EXPECT_EQ(EINTR, probe.err.load());
    EXPECT_EQ(stop ? 1 : 0, probe.stopped.load());
    weft::butex_destroy(probe.butex);
  }
}

TEST(FiberTest, JoinIsNotEndedByInterrupts) {
  struct Probe {
    void* gate;
    bthread_t target;
    std::atomic<int> joined{0};
  } probe;
  probe.gate = weft::butex_create();
  auto target = [](void* g) -> void* {
    while (static_cast<std::atomic<int>*>(g)->load() == 0) weft::butex_wait(g, 0, nullptr);
    return nullptr;
  };
  auto joiner = [](void* a) -> void* {
    auto* p = static_cast<Probe*>(a);
    const int rc = bthread_join(p->target, nullptr);
    p->joined.store(rc == 0 ? 1 : -1);
    return nullptr;
  };
  ASSERT_EQ(0, bthread_start_background(&probe.target, nullptr, target, probe.gate));
  bthread_t j;
  ASSERT_EQ(0, bthread_start_background(&j, nullptr, joiner, &probe));
  for (int i = 0; i < 20; ++i) {
    bthread_interrupt(j);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(0, probe.joined.load());  // still waiting
  static_cast<std::atomic<int>*>(probe.gate)->store(1);
  weft::butex_wake_all(probe.gate);
  ASSERT_EQ(0, bthread_join(j, nullptr));
  EXPECT_EQ(1, probe.joined.load());
  weft::butex_destroy(probe.gate);
}

// ---- scheduler ----

TEST(SchedulerTest, OneMillionStartJoinOneAtATimeFromAFiber) {
  auto driver = [](void*) -> void* {
    int value = 0;
    for (int i = 0; i < 1000000 / kScale; ++i) {
      bthread_t tid;
      if (bthread_start_background(&tid, &BTHREAD_ATTR_SMALL, return_arg, &value) != 0) {
        return reinterpret_cast<void*>(1);
      }
      void* ret = nullptr;
      if (bthread_join(tid, &ret) != 0 || ret != &value) return reinterpret_cast<void*>(2);
    }
    return nullptr;
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, driver, nullptr));
  void* ret;
  ASSERT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(nullptr, ret);
}

// From a pthread every start+join crosses to a worker and back through the
// kernel (~15 us), so this one is 100,000 rather than a million.
TEST(SchedulerTest, HundredThousandStartJoinFromAPthread) {
  const int n = 100000 / kScale;
  int value = 0;
  for (int i = 0; i < n; ++i) {
    bthread_t tid;
    ASSERT_EQ(0, bthread_start_background(&tid, &BTHREAD_ATTR_SMALL, return_arg, &value));
    void* ret;
    ASSERT_EQ(0, bthread_join(tid, &ret));
    ASSERT_EQ(&value, ret);
  }
}

TEST(SchedulerTest, OneMillionStartJoinInBatchesFromAFiber) {
  auto driver = [](void*) -> void* {
    const int batch = 1000;
    std::vector<bthread_t> tids(batch);
    for (int round = 0; round < 1000 / kScale; ++round) {
      for (auto& t : tids) {
        if (bthread_start_background(&t, &BTHREAD_ATTR_SMALL, return_arg, nullptr) != 0) {
          return reinterpret_cast<void*>(1);
        }
      }
      for (auto& t : tids) {
        if (bthread_join(t, nullptr) != 0) return reinterpret_cast<void*>(2);
      }
    }
    return nullptr;
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, driver, nullptr));
  void* ret;
  ASSERT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(nullptr, ret);
}

TEST(SchedulerTest, AFiberQueuedOnABusyWorkerIsStolen) {
  if (bthread_getconcurrency() < 2) GTEST_SKIP() << "stealing needs a second worker";
  // The parent queues a child on its own worker and then spins without
  // yielding until the child has run: only another worker can run it.
  struct Probe {
    std::atomic<int> child_ran{0};
    std::atomic<pthread_t> child_thread{};
    pthread_t parent_thread{};
  } probe;
  static void* (*const child)(void*) = [](void* a) -> void* {
    auto* p = static_cast<Probe*>(a);
    p->child_thread.store(pthread_self());
    p->child_ran.store(1);
    return nullptr;
  };
  auto parent = [](void* a) -> void* {
    auto* p = static_cast<Probe*>(a);
    p->parent_thread = pthread_self();
    bthread_t c;
    if (bthread_start_background(&c, nullptr, child, p) != 0) return reinterpret_cast<void*>(1);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (p->child_ran.load() == 0) {
      if (std::chrono::steady_clock::now() > end) return reinterpret_cast<void*>(2);
    }
    bthread_join(c, nullptr);
    return nullptr;
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, parent, &probe));
  void* ret;
  ASSERT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(nullptr, ret) << "the child was never stolen";
  EXPECT_FALSE(pthread_equal(probe.parent_thread, probe.child_thread.load()));
}

TEST(SchedulerTest, UrgentCallerIsStolenByAWorkerLookingForWork) {
  if (bthread_getconcurrency() < 2) GTEST_SKIP() << "stealing needs a second worker";
  // The child spins until the caller (queued by start_urgent before the
  // child's body runs) runs again: only another worker can resume it. The
  // child first starts a background fiber, which wakes an idle worker; that
  // worker steals the oldest queued fiber, the caller.
  struct Probe {
    std::atomic<int> caller_resumed{0};
    bthread_t bg = 0;
  } probe;
  static void* (*const child)(void*) = [](void* a) -> void* {
    auto* p = static_cast<Probe*>(a);
    if (bthread_start_background(&p->bg, nullptr, return_arg, nullptr) != 0) {
      return reinterpret_cast<void*>(3);
    }
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (p->caller_resumed.load() == 0) {
      if (std::chrono::steady_clock::now() > end) return reinterpret_cast<void*>(1);
    }
    return nullptr;
  };
  auto caller = [](void* a) -> void* {
    auto* p = static_cast<Probe*>(a);
    bthread_t c;
    if (bthread_start_urgent(&c, nullptr, child, p) != 0) return reinterpret_cast<void*>(2);
    p->caller_resumed.store(1);
    void* ret;
    bthread_join(c, &ret);
    bthread_join(p->bg, nullptr);
    return ret;
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, caller, &probe));
  void* ret;
  ASSERT_EQ(0, bthread_join(tid, &ret));
  EXPECT_EQ(nullptr, ret);
}

TEST(SchedulerTest, FibersFromManyPthreadsAllRun) {
  std::atomic<int> ran{0};
  auto fn = [](void* a) -> void* {
    static_cast<std::atomic<int>*>(a)->fetch_add(1);
    bthread_yield();
    return nullptr;
  };
  std::vector<std::thread> threads;
  const int per_thread = 20000 / kScale;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::vector<bthread_t> tids(per_thread);
      for (auto& tid : tids)
        ASSERT_EQ(0, bthread_start_background(&tid, &BTHREAD_ATTR_SMALL, fn, &ran));
      for (auto& tid : tids) ASSERT_EQ(0, bthread_join(tid, nullptr));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(4 * per_thread, ran.load());
}

TEST(SchedulerTest, AnIdleRuntimeUsesAlmostNoCpu) {
  // Warm up every worker, then measure the process's CPU time while idle.
  std::vector<bthread_t> tids(64);
  for (auto& t : tids) ASSERT_EQ(0, bthread_start_background(&t, nullptr, return_arg, nullptr));
  for (auto& t : tids) ASSERT_EQ(0, bthread_join(t, nullptr));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  rusage before, after;
  getrusage(RUSAGE_SELF, &before);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  getrusage(RUSAGE_SELF, &after);
  auto us = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000000LL + r.ru_utime.tv_usec +
           r.ru_stime.tv_usec;
  };
  // Parked workers sleep in the kernel: far below 10% of one core.
  EXPECT_LT(us(after) - us(before), 50000);
}

}  // namespace
