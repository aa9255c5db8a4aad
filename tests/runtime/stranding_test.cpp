// A fiber made ready by a running fiber is never stranded behind a worker
// whose pthread is blocked (or busy) while another worker is idle, and a
// runtime whose every worker is held says so.
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "test_util.h"
#include "weft/bthread.h"
#include "weft/butex.h"

namespace {

using Clock = std::chrono::steady_clock;

// A fiber parked on a butex until woken; then it runs `on_wake`.
struct Sleeper {
  void* butex = weft::butex_create();
  std::atomic<bool> waiting{false};
  std::atomic<bool> ran{false};
  int pipe_write_fd = -1;

  ~Sleeper() { weft::butex_destroy(butex); }

  static void* main(void* arg) {
    auto* s = static_cast<Sleeper*>(arg);
    auto* word = static_cast<std::atomic<int>*>(s->butex);
    s->waiting.store(true);
    while (word->load() == 0) weft::butex_wait(s->butex, 0, nullptr);
    s->ran.store(true);
    if (s->pipe_write_fd >= 0) {
      const char c = 'x';
      EXPECT_EQ(write(s->pipe_write_fd, &c, 1), 1);
    }
    return nullptr;
  }

  // Wakes the sleeper from the calling fiber: it becomes ready on the
  // caller's worker (its run-next slot), where nothing else would run it
  // while the caller holds the worker.
  void wake() {
    static_cast<std::atomic<int>*>(butex)->store(1);
    weft::butex_wake(butex);
  }
};

void start_and_wait_until_parked(Sleeper* s, bthread_t* tid) {
  ASSERT_EQ(bthread_start_background(tid, nullptr, &Sleeper::main, s), 0);
  while (!s->waiting.load()) bthread_usleep(100);
  // It set the flag just before butex_wait: give it time to be linked.
  bthread_usleep(2000);
}

struct BlockedWakerResult {
  bool woken_in_time = false;
  double wait_ms = 0;
};

// The waker wakes the sleeper, then blocks its own pthread in poll(2) until
// the sleeper writes to a pipe. With the sleeper stranded on the waker's
// worker this never ends (poll gives up after 3 s).
void* blocked_waker(void* arg) {
  auto* result = static_cast<BlockedWakerResult*>(arg);
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  Sleeper s;
  s.pipe_write_fd = fds[1];
  bthread_t tid;
  start_and_wait_until_parked(&s, &tid);
  const auto start = Clock::now();
  s.wake();
  pollfd p{fds[0], POLLIN, 0};
  result->woken_in_time = poll(&p, 1, 3000) == 1;
  result->wait_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  bthread_join(tid, nullptr);
  close(fds[0]);
  close(fds[1]);
  return nullptr;
}

TEST(NeverStranded, WokenFiberRunsWhileItsWakerBlocksThePthread) {
  if (bthread_getconcurrency() < 2) GTEST_SKIP() << "needs an idle worker to run the woken fiber";
  for (int round = 0; round < 10; ++round) {
    BlockedWakerResult result;
    bthread_t waker;
    ASSERT_EQ(bthread_start_background(&waker, nullptr, blocked_waker, &result), 0);
    ASSERT_EQ(bthread_join(waker, nullptr), 0);
    ASSERT_TRUE(result.woken_in_time) << "round " << round << ": the woken fiber waited "
                                      << result.wait_ms << " ms behind its blocked waker";
  }
}

struct SpinningWakerResult {
  bool woken_in_time = false;
};

// The waker wakes the sleeper, then computes without ever yielding until
// the sleeper has run (or 3 s pass).
void* spinning_waker(void* arg) {
  auto* result = static_cast<SpinningWakerResult*>(arg);
  Sleeper s;
  bthread_t tid;
  start_and_wait_until_parked(&s, &tid);
  s.wake();
  const auto give_up = Clock::now() + std::chrono::seconds(3);
  while (!s.ran.load() && Clock::now() < give_up) {
  }
  result->woken_in_time = s.ran.load();
  bthread_join(tid, nullptr);
  return nullptr;
}

TEST(NeverStranded, FiberQueuedBehindAFiberThatNeverBlocksIsStolen) {
  if (bthread_getconcurrency() < 2) GTEST_SKIP() << "needs an idle worker to run the woken fiber";
  for (int round = 0; round < 10; ++round) {
    SpinningWakerResult result;
    bthread_t waker;
    ASSERT_EQ(bthread_start_background(&waker, nullptr, spinning_waker, &result), 0);
    ASSERT_EQ(bthread_join(waker, nullptr), 0);
    ASSERT_TRUE(result.woken_in_time) << "round " << round;
  }
}

// Fibers queued behind a yield-free loop via the ordinary queue (not the
// run-next slot): a fiber started with BTHREAD_NOSIGNAL and never flushed
// wakes nobody, so only the monitor can send it a thief.
void* noop(void* arg) {
  static_cast<std::atomic<bool>*>(arg)->store(true);
  return nullptr;
}

void* spinner_with_unflushed_fiber(void* arg) {
  auto* ok = static_cast<bool*>(arg);
  std::atomic<bool> ran{false};
  bthread_attr_t attr = BTHREAD_ATTR_NORMAL;
  attr.flags |= BTHREAD_NOSIGNAL;
  bthread_t tid;
  EXPECT_EQ(bthread_start_background(&tid, &attr, noop, &ran), 0);
  const auto give_up = Clock::now() + std::chrono::seconds(3);
  while (!ran.load() && Clock::now() < give_up) {
  }
  *ok = ran.load();
  bthread_join(tid, nullptr);
  return nullptr;
}

TEST(NeverStranded, QueuedFiberBehindAFiberThatNeverBlocksIsStolen) {
  if (bthread_getconcurrency() < 2) GTEST_SKIP() << "needs an idle worker to run the queued fiber";
  for (int round = 0; round < 10; ++round) {
    bool ok = false;
    bthread_t spinner;
    ASSERT_EQ(bthread_start_background(&spinner, nullptr, spinner_with_unflushed_fiber, &ok), 0);
    ASSERT_EQ(bthread_join(spinner, nullptr), 0);
    ASSERT_TRUE(ok) << "round " << round;
  }
}

// The monitor runs at nice 19, so its ticks wait for spare CPU time or its
// small CFS share. With every CPU of the process held by a nice-0 pthread
// that never sleeps, it must still get that share and send a thief to a
// fiber only it can see (queued without a wake-up).
TEST(NeverStranded, QueuedFiberIsStolenWhileEveryCpuIsBusy) {
  if (bthread_getconcurrency() < 2) GTEST_SKIP() << "needs an idle worker to run the queued fiber";
  cpu_set_t mask;
  ASSERT_EQ(sched_getaffinity(0, sizeof(mask), &mask), 0);
  std::atomic<bool> stop{false};
  std::vector<std::thread> hogs;
  // Bounded on their own too: at most 30 s even if the test body hangs.
  const auto hog_end = Clock::now() + std::chrono::seconds(30);
  for (int i = 0; i < CPU_COUNT(&mask); ++i) {
    hogs.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed) && Clock::now() < hog_end) {
      }
    });
  }
  int rescued = 0;
  bool started_all = true;
  for (int round = 0; round < 5 && started_all; ++round) {
    bool ok = false;
    bthread_t spinner;
    // No ASSERT here: returning with the hogs joinable would terminate.
    started_all =
        bthread_start_background(&spinner, nullptr, spinner_with_unflushed_fiber, &ok) == 0 &&
        bthread_join(spinner, nullptr) == 0;
    if (ok) ++rescued;
  }
  stop.store(true);
  for (auto& t : hogs) t.join();
  ASSERT_TRUE(started_all);
  EXPECT_EQ(rescued, 5) << "a fiber queued behind a yield-free loop stayed stranded for 3 s "
                           "while other pthreads kept every CPU busy";
}

}  // namespace
