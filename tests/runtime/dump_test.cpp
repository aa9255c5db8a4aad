// dump_fibers: every live fiber with its state, what it waits on, and the
// call stack of suspended fibers; safe while fibers come and go.
#include <errno.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <weft/bthread.h>
#include <weft/butex.h>
#include <weft/fiber_dump.h>

#include <atomic>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "observe/fiber_dump_hooks.h"
#include "sched/fiber_lifecycle.h"
#include "sched/task_meta.h"
#include "test_util.h"
#include "wait/butex_internal.h"

DECLARE_int32(weft_fiber_dump_signal);

namespace weft::observe {
void install_fiber_dump_signal();
}

// Outside the anonymous namespace so dladdr can name it.
__attribute__((noinline)) void* sleep_deeply(void*) {
  bthread_usleep(60ull * 1000 * 1000);
  return nullptr;
}

__attribute__((noinline)) void* first_tenant(void*) {
  bthread_usleep(60ull * 1000 * 1000);
  return nullptr;
}

__attribute__((noinline)) void* second_tenant(void*) {
  bthread_usleep(60ull * 1000 * 1000);
  return nullptr;
}

namespace {

int count_of(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}


TEST(FiberDumpTest, TenThousandSleepersAreListedWithWhatTheyWaitOnAndTheirStacks) {
  const int n = 10000 / weft::test::kScale;
  std::vector<bthread_t> tids(n);
  for (auto& t : tids) ASSERT_EQ(0, bthread_start_background(&t, &BTHREAD_ATTR_SMALL, sleep_deeply, nullptr));
  void* gate = weft::butex_create();
  bthread_t waiter;
  ASSERT_EQ(0, bthread_start_background(&waiter, nullptr, [](void* g) -> void* {
    weft::butex_wait(g, 0, nullptr);
    return nullptr;
  }, gate));

  std::string text;
  ASSERT_TRUE(weft::test::wait_until([&] {
    std::ostringstream os;
    weft::dump_fibers(os);
    text = os.str();
    return count_of(text, " suspended for ") >= n + 1;
  })) << text.substr(0, 2000);
  EXPECT_GE(count_of(text, "  waits on sleep, deadline in "), n);
  std::ostringstream butex_line;
  butex_line << "  waits on butex " << gate;
  EXPECT_NE(std::string::npos, text.find(butex_line.str()));
  // Each sleeper's block names its own id.
  for (int i = 0; i < n; i += n / 10) {
    EXPECT_NE(std::string::npos, text.find("fiber " + std::to_string(tids[i]) + " suspended"));
  }
  // Stacks: the walk from the saved context reaches weft's own frames and
  // the test's function (test binaries export their symbols).
  EXPECT_GE(count_of(text, "  #0 "), n);
  EXPECT_NE(std::string::npos, text.find("bthread_usleep")) << text.substr(0, 3000);
  EXPECT_NE(std::string::npos, text.find("sleep_deeply"));

  for (auto& t : tids) ASSERT_EQ(0, bthread_stop(t));
  for (auto& t : tids) ASSERT_EQ(0, bthread_join(t, nullptr));
  weft::butex_wake_all(gate);
  ASSERT_EQ(0, bthread_join(waiter, nullptr));
  weft::butex_destroy(gate);
  std::ostringstream after;
  weft::dump_fibers(after);
  for (int i = 0; i < n; i += n / 10) {
    EXPECT_EQ(std::string::npos, after.str().find("fiber " + std::to_string(tids[i]) + " "));
  }
}

TEST(FiberDumpTest, SafeWhileFibersStartRunAndEnd) {
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    while (!stop.load()) {
      std::vector<bthread_t> tids(200);
      for (auto& t : tids) {
        bthread_start_background(&t, &BTHREAD_ATTR_SMALL, [](void*) -> void* {
          bthread_yield();
          bthread_usleep(50);
          return nullptr;
        }, nullptr);
      }
      for (auto& t : tids) bthread_join(t, nullptr);
    }
  });
  for (int i = 0; i < 200 / weft::test::kScale + 5; ++i) {
    std::ostringstream os;
    weft::dump_fibers(os);
    EXPECT_NE(std::string::npos, os.str().find(" live fibers\n"));
  }
  stop.store(true);
  churn.join();
}

// ---- a slot reused while the dump reads it ----

struct Reuse {
  bthread_t first = 0;
  std::atomic<bthread_t> second{0};
  bool fired = false;
};
Reuse* g_reuse = nullptr;

bool suspended_as(bthread_t tid) {
  const weft::sched::TaskMeta* m = weft::sched::task_pool().at(weft::sched::tid_slot(tid));
  return m->version_butex->value.load() == static_cast<int>(weft::sched::tid_version(tid)) &&
         m->state.load() == weft::sched::TaskMeta::kSuspended;
}

// Runs inside dump_fibers right after it read a slot's version: ends the
// fiber in that slot and starts another one there, as a worker may at any
// moment.
void end_and_reuse_the_slot(uint32_t slot) {
  Reuse* r = g_reuse;
  if (r == nullptr || r->fired || slot != weft::sched::tid_slot(r->first)) return;
  r->fired = true;
  weft::sched::TaskMeta* m = weft::sched::task_pool().at(slot);
  // The last joiner frees the slot into its own thread's cache, from which
  // that thread's next start takes it again.
  std::thread joiner([r] {
    bthread_join(r->first, nullptr);
    bthread_t t = 0;
    if (bthread_start_background(&t, &BTHREAD_ATTR_LARGE, second_tenant, nullptr) == 0) {
      r->second.store(t);
    }
  });
  ASSERT_TRUE(weft::test::wait_until([&] {
    m->lock.lock();
    const int n = m->njoiners;
    m->lock.unlock();
    return n == 1;
  }));
  ASSERT_EQ(0, bthread_stop(r->first));
  joiner.join();
  ASSERT_NE(0u, r->second.load());
  ASSERT_TRUE(weft::test::wait_until([&] { return suspended_as(r->second.load()); }));
}

TEST(FiberDumpTest, AFiberWhoseSlotIsReusedMidDumpIsNotWalkedWithTheNewStack) {
  Reuse reuse;
  ASSERT_EQ(0, bthread_start_background(&reuse.first, &BTHREAD_ATTR_SMALL, first_tenant, nullptr));
  ASSERT_TRUE(weft::test::wait_until([&] { return suspended_as(reuse.first); }));
  g_reuse = &reuse;
  weft::observe::g_dump_after_version_read = end_and_reuse_the_slot;
  std::ostringstream os;
  weft::dump_fibers(os);
  weft::observe::g_dump_after_version_read = nullptr;
  g_reuse = nullptr;
  ASSERT_TRUE(reuse.fired);
  const bthread_t second = reuse.second.load();
  ASSERT_NE(0u, second);
  ASSERT_EQ(weft::sched::tid_slot(reuse.first), weft::sched::tid_slot(second))
      << "the slot was not reused";
  const std::string text = os.str();
  // The ended fiber's id must not be reported with the new tenant's stack.
  EXPECT_EQ(std::string::npos, text.find("fiber " + std::to_string(reuse.first) + " "))
      << text.substr(0, 3000);
  ASSERT_EQ(0, bthread_stop(second));
  ASSERT_EQ(0, bthread_join(second, nullptr));
}

// ---- the dump signal ----

// In a death-test child: stderr goes to a pipe nobody reads, so the dump
// thread soon blocks writing a dump and the signal pipe fills. The handler
// must then drop requests instead of blocking, and leave errno alone.
// Leaves without flushing stdio: the stuck dump thread holds stderr's lock
// (TSan's _exit flushes streams first and would wait for it for ever).
[[noreturn]] void exit_now(int code) {
  syscall(SYS_exit_group, code);
  _exit(code);
}

void raise_dump_signals_with_the_dump_thread_stuck() {
  int sink[2];
  if (pipe(sink) != 0 || dup2(sink[1], STDERR_FILENO) < 0) exit_now(10);
  FLAGS_weft_fiber_dump_signal = SIGUSR2;
  weft::observe::install_fiber_dump_signal();
  struct sigaction sa;
  if (sigaction(SIGUSR2, nullptr, &sa) != 0) exit_now(11);
  // Workers run on small alternate stacks; a fiber's stack may be nearly
  // full when the signal lands.
  if (!(sa.sa_flags & SA_ONSTACK)) exit_now(2);
  std::atomic<int> done{0};
  std::atomic<int> clobbered{0};
  std::thread raiser([&] {
    for (int i = 0; i < 200000; ++i) {
      errno = EDOM;
      raise(SIGUSR2);
      if (errno != EDOM) clobbered.fetch_add(1);
    }
    done.store(1);
  });
  if (!weft::test::wait_until([&] { return done.load() == 1; }, std::chrono::milliseconds(30000))) {
    exit_now(3);  // blocked in the handler
  }
  raiser.join();
  exit_now(clobbered.load() == 0 ? 0 : 4);
}

TEST(FiberDumpDeathTest, DumpSignalHandlerNeverBlocksKeepsErrnoAndUsesTheAltStack) {
  // Exit codes: 2 no SA_ONSTACK, 3 the handler blocked, 4 errno changed.
  EXPECT_EXIT(raise_dump_signals_with_the_dump_thread_stuck(), testing::ExitedWithCode(0), "");
}

}  // namespace
