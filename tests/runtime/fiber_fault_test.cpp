// Fiber starts that fail part-way (fault injection) and the fiber counts:
// a failed start leaves its slot reusable and its caller's tid alone, and
// fibers_alive / fibers_created / --weft_max_fibers stay exact under
// concurrent starts. Split from fiber_test.cpp (the fiber API itself).
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <weft/bthread.h>
#include <weft/butex.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "base/fault_injection.h"
#include "sched/fiber_lifecycle.h"
#include "sched/task_meta.h"
#include "test_util.h"
#include "wait/butex_internal.h"

DECLARE_int64(weft_max_fibers);

namespace {

void* return_arg(void* arg) { return arg; }

using weft::sched::task_pool;
using weft::sched::TaskMeta;
using weft::sched::TaskMetaPool;

uint32_t slot_version(uint32_t slot) {
  return static_cast<uint32_t>(task_pool().at(slot)->version_butex->value.load());
}

// Slots this thread took out of the pool so that its next start gets a
// known one; given back at the end. The pool hands out this thread's most
// recently freed index first.
class SlotSteerer {
 public:
  SlotSteerer(const SlotSteerer&) = delete;
  SlotSteerer& operator=(const SlotSteerer&) = delete;
  SlotSteerer() = default;
  ~SlotSteerer() {
    for (uint32_t s : held_) task_pool().free(s);
  }

  // The slot this thread's next start will take: one never used (no
  // per-slot butexes yet) if `fresh`, else whichever comes next.
  uint32_t next(bool fresh) {
    for (int i = 0; i < 10000000; ++i) {
      const uint32_t s = task_pool().alloc();
      if (s == TaskMetaPool::kInvalid) break;
      if (!fresh || task_pool().at(s)->version_butex == nullptr) {
        task_pool().free(s);
        return s;
      }
      held_.push_back(s);
    }
    ADD_FAILURE() << "no fresh slot";
    return TaskMetaPool::kInvalid;
  }

 private:
  std::vector<uint32_t> held_;
};

// Puts a fault countdown back to 0 however the test ends.
struct FaultGuard {
  std::atomic<int>& countdown;
  ~FaultGuard() { countdown.store(0); }
};

struct SlotCheck {
  std::atomic<int> ran{0};
  int usleep_rc = -2;
  bool had_sleep_butex = false;
};

// Uses the slot's private sleep butex, as any fiber may.
void* sleep_a_little(void* arg) {
  auto* c = static_cast<SlotCheck*>(arg);
  TaskMeta* self = weft::sched::current_fiber();
  c->had_sleep_butex = self != nullptr && self->sleep_butex != nullptr;
  if (c->had_sleep_butex) c->usleep_rc = bthread_usleep(1000);
  c->ran.store(1);
  return arg;
}

// A slot whose per-slot butexes could not all be made is handed back; the
// next fiber in it must still have its own index and both butexes.
TEST(FiberFaultTest, APartlyReadiedSlotKeepsItsIndexAndGetsItsButexes) {
  ASSERT_EQ(0, bthread_join(
                   [] {
                     bthread_t t;
                     EXPECT_EQ(0, bthread_start_background(&t, nullptr, return_arg, nullptr));
                     return t;
                   }(),
                   nullptr));                       // the runtime is up
  for (int failing = 1; failing <= 2; ++failing) {  // the slot's first or second butex
    SCOPED_TRACE(failing);
    SlotSteerer steer;
    const uint32_t slot = steer.next(/*fresh=*/true);
    ASSERT_NE(TaskMetaPool::kInvalid, slot);
    FaultGuard guard{weft::sched::g_fault_meta_butex_alloc};
    weft::sched::g_fault_meta_butex_alloc.store(failing);
    const int64_t alive_before = weft::sched::fibers_alive();
    bthread_t tid = 12345;
    SlotCheck unused;
    EXPECT_EQ(EAGAIN, bthread_start_background(&tid, nullptr, sleep_a_little, &unused));
    EXPECT_EQ(0, weft::sched::g_fault_meta_butex_alloc.load()) << "the fault was not hit";
    EXPECT_EQ(12345u, tid);
    EXPECT_EQ(alive_before, weft::sched::fibers_alive());
    EXPECT_EQ(nullptr, task_pool().at(slot)->version_butex) << "a half-readied slot looks ready";
    // The next start on this thread takes the same slot.
    SlotCheck c;
    ASSERT_EQ(0, bthread_start_background(&tid, nullptr, sleep_a_little, &c));
    ASSERT_EQ(slot, weft::sched::tid_slot(tid)) << "the fiber's id names another slot";
    EXPECT_EQ(tid, task_pool().at(slot)->tid);
    void* ret = nullptr;
    ASSERT_EQ(0, bthread_join(tid, &ret));
    EXPECT_EQ(&c, ret);
    EXPECT_TRUE(c.had_sleep_butex);
    EXPECT_EQ(0, c.usleep_rc);
    EXPECT_EQ(0, unused.ran.load());
  }
}

// A BTHREAD_ATTR_PTHREAD start whose pthread_create fails: EAGAIN, *tid
// untouched, and the id it had taken is dead (even version) at once.
TEST(FiberFaultTest, AFailedPthreadCreateEndsTheIdAndLeavesTidAlone) {
  SlotSteerer steer;
  const uint32_t slot = steer.next(/*fresh=*/false);
  ASSERT_NE(TaskMetaPool::kInvalid, slot);
  FaultGuard guard{weft::sched::g_fault_pthread_create};
  weft::sched::g_fault_pthread_create.store(1);
  const int64_t alive_before = weft::sched::fibers_alive();
  const uint64_t created_before = weft::sched::fibers_created();
  bthread_t tid = 12345;
  SlotCheck unused;
  EXPECT_EQ(EAGAIN, bthread_start_background(&tid, &BTHREAD_ATTR_PTHREAD, sleep_a_little, &unused));
  EXPECT_EQ(0, weft::sched::g_fault_pthread_create.load()) << "the fault was not hit";
  EXPECT_EQ(12345u, tid) << "*tid was written by a failed start";
  const uint32_t version = slot_version(slot);
  // (Stop here otherwise: the tests after this one would run on a corrupt slot.)
  ASSERT_EQ(0u, version % 2) << "the slot was freed with a live (odd) version";
  const bthread_t dead = weft::sched::make_tid(version - 1, slot);  // the id it had taken
  EXPECT_EQ(1, bthread_stopped(dead));
  EXPECT_EQ(EINVAL, bthread_interrupt(dead));
  EXPECT_EQ(0, bthread_join(dead, nullptr));  // at once: it ended
  EXPECT_EQ(alive_before, weft::sched::fibers_alive());
  EXPECT_EQ(created_before, weft::sched::fibers_created());
  // The slot is free and works: the next start on this thread takes it with
  // the next odd version.
  SlotCheck c;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, sleep_a_little, &c));
  EXPECT_EQ(slot, weft::sched::tid_slot(tid));
  EXPECT_EQ(version + 1, weft::sched::tid_version(tid));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(0, c.usleep_rc);
  EXPECT_EQ(0, unused.ran.load());
  // And a pthread fiber starts again.
  ASSERT_EQ(0, bthread_start_background(&tid, &BTHREAD_ATTR_PTHREAD, sleep_a_little, &c));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
}

// Fibers that stay alive until released.
struct Gate {
  std::atomic<int>* word = weft::butex_create_checked<std::atomic<int>>();
  ~Gate() { weft::butex_destroy(word); }
  static void* wait_for(void* arg) {
    auto* g = static_cast<Gate*>(arg);
    while (g->word->load() == 0) weft::butex_wait(g->word, 0, nullptr);
    return nullptr;
  }
  void open() {
    word->store(1);
    weft::butex_wake_all(word);
  }
};

// The counts are per-thread cells; their sums are exact once nothing starts
// or ends, whichever threads started and ended the fibers, and after the
// threads that started some of them exited.
TEST(FiberCountTest, AliveAndCreatedAreExactWhenQuiescent) {
  const int64_t alive0 = weft::sched::fibers_alive();
  const uint64_t created0 = weft::sched::fibers_created();
  Gate gate;
  std::vector<bthread_t> tids;
  std::mutex mu;
  auto start_some = [&](int n, const bthread_attr_t* attr) {
    for (int i = 0; i < n; ++i) {
      bthread_t t;
      ASSERT_EQ(0, bthread_start_background(&t, attr, Gate::wait_for, &gate));
      std::lock_guard<std::mutex> lock(mu);
      tids.push_back(t);
    }
  };
  start_some(50, nullptr);               // from this pthread
  start_some(3, &BTHREAD_ATTR_PTHREAD);  // each on its own pthread
  std::vector<std::thread> starters;     // from pthreads that exit before the fibers end
  for (int k = 0; k < 4; ++k) starters.emplace_back([&] { start_some(25, nullptr); });
  for (auto& t : starters) t.join();
  struct FromFiber {
    decltype(start_some)* start;
  } from_fiber{&start_some};
  bthread_t starter;  // from a fiber (its worker's cell), itself counted
  ASSERT_EQ(0, bthread_start_background(
                   &starter, nullptr,
                   [](void* a) -> void* {
                     (*static_cast<FromFiber*>(a)->start)(40, nullptr);
                     return nullptr;
                   },
                   &from_fiber));
  ASSERT_EQ(0, bthread_join(starter, nullptr));
  const int n = 50 + 3 + 4 * 25 + 40;
  ASSERT_EQ(static_cast<size_t>(n), tids.size());
  EXPECT_EQ(alive0 + n, weft::sched::fibers_alive());
  EXPECT_EQ(created0 + n + 1, weft::sched::fibers_created());
  gate.open();
  for (bthread_t t : tids) ASSERT_EQ(0, bthread_join(t, nullptr));
  // A joiner that returned saw the fiber ended: it is no longer counted.
  EXPECT_EQ(alive0, weft::sched::fibers_alive());
  EXPECT_EQ(created0 + n + 1, weft::sched::fibers_created());
}

// With --weft_max_fibers set the check is exact even when many threads
// start fibers at once: exactly as many as fit get in.
TEST(FiberCountTest, TheFiberLimitIsExactUnderConcurrentStarts) {
  struct Restore {
    int64_t saved = FLAGS_weft_max_fibers;
    ~Restore() { FLAGS_weft_max_fibers = saved; }
  } restore;
  Gate gate;
  const int64_t alive0 = weft::sched::fibers_alive();
  const int room = 64;
  FLAGS_weft_max_fibers = alive0 + room;
  std::mutex mu;
  std::vector<bthread_t> tids;
  std::atomic<int> eagain{0};
  std::atomic<int64_t> max_seen{0};
  auto race = [&] {
    for (int i = 0; i < 2 * room; ++i) {
      bthread_t t;
      const int rc = bthread_start_background(&t, nullptr, Gate::wait_for, &gate);
      if (rc == EAGAIN) {
        eagain.fetch_add(1);
        continue;
      }
      ASSERT_EQ(0, rc);
      std::lock_guard<std::mutex> lock(mu);
      tids.push_back(t);
      const int64_t now = weft::sched::fibers_alive();
      if (now > max_seen.load()) max_seen.store(now);
    }
  };
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) threads.emplace_back(race);
  for (auto& t : threads) t.join();
  EXPECT_EQ(static_cast<size_t>(room), tids.size());
  EXPECT_EQ(4 * 2 * room - room, eagain.load());
  EXPECT_LE(max_seen.load(), alive0 + room);
  EXPECT_EQ(alive0 + room, weft::sched::fibers_alive());
  FLAGS_weft_max_fibers = restore.saved;
  gate.open();
  for (bthread_t t : tids) ASSERT_EQ(0, bthread_join(t, nullptr));
  EXPECT_EQ(alive0, weft::sched::fibers_alive());
}

}  // namespace
