// When every worker is held by one fiber while other fibers are ready, the
// worker monitor logs one warning naming the holders and counts the episode.
#include <gflags/gflags.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "sched/worker_monitor.h"
#include "test_util.h"
#include "weft/bthread.h"

DECLARE_int32(weft_worker_stall_warn_ms);

namespace {

using Clock = std::chrono::steady_clock;

void* noop(void* arg) {
  static_cast<std::atomic<bool>*>(arg)->store(true);
  return nullptr;
}

struct Holder {
  std::atomic<int>* started;
  std::atomic<bool>* release;
};

// Holds its worker's pthread (a plain sleep, as a blocking library would)
// until released.
void* hold_worker(void* arg) {
  auto* h = static_cast<Holder*>(arg);
  h->started->fetch_add(1);
  const auto give_up = Clock::now() + std::chrono::seconds(5);
  while (!h->release->load() && Clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return nullptr;
}

TEST(WorkerStall, EveryWorkerHeldWithWorkQueuedIsReportedOnceAndCounted) {
  // The threshold comes from the command line (tests/CMakeLists.txt): the
  // monitor reads the flag while it runs, so the test must not write it.
  ASSERT_EQ(FLAGS_weft_worker_stall_warn_ms, 100);
  const int n = bthread_getconcurrency();
  std::atomic<int> started{0};
  std::atomic<bool> release{false};
  Holder holder{&started, &release};
  std::vector<bthread_t> holders(static_cast<size_t>(n));
  const uint64_t stalls_before = weft::sched::worker_stalls();
  testing::internal::CaptureStderr();
  for (auto& tid : holders)
    ASSERT_EQ(bthread_start_background(&tid, nullptr, hold_worker, &holder), 0);
  ASSERT_TRUE(weft::test::wait_until([&] { return started.load() == n; }));
  // Work that cannot run: every worker is held.
  std::atomic<bool> queued_ran{false};
  bthread_t queued;
  ASSERT_EQ(bthread_start_background(&queued, nullptr, noop, &queued_ran), 0);
  const bool reported =
      weft::test::wait_until([&] { return weft::sched::worker_stalls() > stalls_before; },
                             std::chrono::milliseconds(3000));
  // One report per episode, however long it lasts.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const uint64_t stalls_after = weft::sched::worker_stalls();
  release.store(true);
  for (bthread_t tid : holders) bthread_join(tid, nullptr);
  bthread_join(queued, nullptr);
  const std::string log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(reported);
  EXPECT_EQ(stalls_after, stalls_before + 1);
  EXPECT_TRUE(queued_ran.load());
  EXPECT_NE(log.find("have run the same fiber"), std::string::npos) << log;
  for (bthread_t tid : holders) {
    EXPECT_NE(log.find("fiber " + std::to_string(tid) + " running"), std::string::npos)
        << "the warning names fiber " << tid << ":\n"
        << log;
  }
}

}  // namespace
