// Fair scheduling on one worker: every ready fiber gets the CPU, whatever
// the others do (yield in a loop, or wake each other back and forth).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "weft/bthread.h"
#include "weft/butex.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Yielders {
  static constexpr int kFibers = 3;
  static constexpr long kTarget = 1000;
  std::atomic<long> counts[kFibers] = {};
  std::atomic<bool> stop{false};
};

struct YielderArg {
  Yielders* shared;
  int index;
};

void* yield_loop(void* arg) {
  auto* a = static_cast<YielderArg*>(arg);
  const auto give_up = Clock::now() + std::chrono::seconds(5);
  while (!a->shared->stop.load() && Clock::now() < give_up) {
    a->shared->counts[a->index].fetch_add(1);
    bthread_yield();
  }
  return nullptr;
}

// Starts the yielders from one fiber, so they all queue on its worker.
void* start_yielders(void* arg) {
  auto* shared = static_cast<Yielders*>(arg);
  YielderArg args[Yielders::kFibers];
  bthread_t tids[Yielders::kFibers];
  for (int i = 0; i < Yielders::kFibers; ++i) {
    args[i] = {shared, i};
    EXPECT_EQ(bthread_start_background(&tids[i], nullptr, yield_loop, &args[i]), 0);
  }
  // Wait (yielding too) until every yielder reached the target.
  const auto give_up = Clock::now() + std::chrono::seconds(5);
  for (;;) {
    bool all = true;
    for (auto& c : shared->counts) all = all && c.load() >= Yielders::kTarget;
    if (all || Clock::now() > give_up) break;
    bthread_yield();
  }
  shared->stop.store(true);
  for (bthread_t tid : tids) bthread_join(tid, nullptr);
  return nullptr;
}

TEST(FairScheduling, YieldingFibersAllMakeProgress) {
  Yielders shared;
  bthread_t starter;
  ASSERT_EQ(bthread_start_background(&starter, nullptr, start_yielders, &shared), 0);
  ASSERT_EQ(bthread_join(starter, nullptr), 0);
  for (int i = 0; i < Yielders::kFibers; ++i) {
    EXPECT_GE(shared.counts[i].load(), Yielders::kTarget) << "yielder " << i << " starved";
  }
}

// Two fibers that wake each other through butexes, and a third fiber,
// ready on the same worker, that only wants to run once.
struct PingPong {
  static constexpr int kMaxRounds = 200000;
  void* ping = weft::butex_create();
  void* pong = weft::butex_create();
  std::atomic<bool> third_ran{false};
  int rounds = 0;
  ~PingPong() {
    weft::butex_destroy(ping);
    weft::butex_destroy(pong);
  }
};

std::atomic<int>* word(void* butex) { return static_cast<std::atomic<int>*>(butex); }

// Passes the turn by bumping `to` and waits for `from` to move.
void pass_and_wait(void* to, void* from, int* seen_from) {
  word(to)->fetch_add(1);
  weft::butex_wake(to);
  while (word(from)->load() == *seen_from) weft::butex_wait(from, *seen_from, nullptr);
  *seen_from = word(from)->load();
}

void* ponger(void* arg) {
  auto* p = static_cast<PingPong*>(arg);
  int seen = 0;
  while (word(p->ping)->load() == 0) weft::butex_wait(p->ping, 0, nullptr);
  seen = word(p->ping)->load();
  while (seen < PingPong::kMaxRounds + 1) pass_and_wait(p->pong, p->ping, &seen);
  word(p->pong)->fetch_add(1);
  weft::butex_wake(p->pong);
  return nullptr;
}

void* third(void* arg) {
  static_cast<PingPong*>(arg)->third_ran.store(true);
  return nullptr;
}

void* pinger(void* arg) {
  auto* p = static_cast<PingPong*>(arg);
  bthread_t pong_tid, third_tid;
  EXPECT_EQ(bthread_start_background(&pong_tid, nullptr, ponger, p), 0);
  bthread_usleep(1000);  // the ponger now waits on `ping`
  // Ready on this worker, behind the pair.
  EXPECT_EQ(bthread_start_background(&third_tid, nullptr, third, p), 0);
  int seen = 0;
  while (!p->third_ran.load() && p->rounds < PingPong::kMaxRounds) {
    pass_and_wait(p->ping, p->pong, &seen);
    ++p->rounds;
  }
  // Let the ponger finish: jump its count past the end.
  word(p->ping)->store(PingPong::kMaxRounds + 1);
  weft::butex_wake(p->ping);
  bthread_join(pong_tid, nullptr);
  bthread_join(third_tid, nullptr);
  return nullptr;
}

TEST(FairScheduling, FibersWakingEachOtherDoNotStarveAThird) {
  PingPong p;
  bthread_t tid;
  ASSERT_EQ(bthread_start_background(&tid, nullptr, pinger, &p), 0);
  ASSERT_EQ(bthread_join(tid, nullptr), 0);
  EXPECT_TRUE(p.third_ran.load());
  EXPECT_LT(p.rounds, PingPong::kMaxRounds) << "the third fiber ran only after the pair stopped";
}

}  // namespace
