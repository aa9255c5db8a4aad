// dump_fibers: every live fiber with its state, what it waits on, and the
// call stack of suspended fibers; safe while fibers come and go.
#include <gtest/gtest.h>
#include <weft/bthread.h>
#include <weft/butex.h>
#include <weft/fiber_dump.h>

#include <atomic>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

// Outside the anonymous namespace so dladdr can name it.
__attribute__((noinline)) void* sleep_deeply(void*) {
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

}  // namespace
