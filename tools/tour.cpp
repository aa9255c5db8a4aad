// The weft tour: what the runtime does, in one short run.
//   1. 100,000 fibers alive at once, each parked on a butex, then released.
//   2. A butex ping-pong between two fibers.
//   3. Timed sleeps, with the error a stopped sleeper gets.
#include <gflags/gflags.h>
#include <weft/bthread.h>
#include <weft/butex.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// ---- 1. many fibers ----
struct Gate {
  std::atomic<int>* word;
  std::atomic<int>* arrived;
};

void* park_on_gate(void* arg) {
  auto* gate = static_cast<Gate*>(arg);
  gate->arrived->fetch_add(1, std::memory_order_relaxed);
  while (gate->word->load(std::memory_order_acquire) == 0) {
    weft::butex_wait(gate->word, 0, nullptr);
  }
  return nullptr;
}

int many_fibers(int n) {
  auto* word = weft::butex_create_checked<std::atomic<int>>();
  std::atomic<int> arrived{0};
  Gate gate{word, &arrived};
  std::vector<bthread_t> tids(n);
  const auto start = Clock::now();
  for (auto& t : tids) {
    const int rc = bthread_start_background(&t, &BTHREAD_ATTR_SMALL, park_on_gate, &gate);
    if (rc != 0) {
      std::fprintf(stderr, "bthread_start_background: error %d\n", rc);
      return 1;
    }
  }
  while (arrived.load() < n) bthread_usleep(1000);
  const double started_ms = ms_since(start);
  word->store(1, std::memory_order_release);
  weft::butex_wake_all(word);
  for (auto& t : tids) bthread_join(t, nullptr);
  std::printf("1. %d fibers alive at once (SMALL stacks): all parked after %.1f ms, "
              "released and joined after %.1f ms\n",
              n, started_ms, ms_since(start));
  weft::butex_destroy(word);
  return 0;
}

// ---- 2. ping-pong ----
struct PingPong {
  std::atomic<int>* word;  // even: ping's turn, odd: pong's turn
  int rounds;
};

void* player(void* arg, int parity) {
  auto* pp = static_cast<PingPong*>(arg);
  for (;;) {
    int v = pp->word->load(std::memory_order_acquire);
    if (v >= 2 * pp->rounds) break;
    if ((v & 1) != parity) {
      weft::butex_wait(pp->word, v, nullptr);
      continue;
    }
    pp->word->store(v + 1, std::memory_order_release);
    weft::butex_wake(pp->word);
  }
  return nullptr;
}
void* ping(void* arg) { return player(arg, 0); }
void* pong(void* arg) { return player(arg, 1); }

void ping_pong(int rounds) {
  PingPong pp{weft::butex_create_checked<std::atomic<int>>(), rounds};
  const auto start = Clock::now();
  bthread_t a, b;
  bthread_start_background(&a, nullptr, ping, &pp);
  bthread_start_background(&b, nullptr, pong, &pp);
  bthread_join(a, nullptr);
  bthread_join(b, nullptr);
  const double ms = ms_since(start);
  std::printf("2. butex ping-pong between two fibers: %d round trips in %.1f ms (%.0f ns each)\n",
              rounds, ms, ms * 1e6 / rounds);
  weft::butex_destroy(pp.word);
}

// ---- 3. sleeps ----
void* sleep_for(void* arg) {
  const auto us = reinterpret_cast<uintptr_t>(arg);
  const auto start = Clock::now();
  const int rc = bthread_usleep(us);
  const int err = rc == 0 ? 0 : errno;
  std::printf("   fiber %llu slept %6.2f ms of %6.2f ms asked%s\n",
              static_cast<unsigned long long>(bthread_self()), ms_since(start), us / 1000.0,
              err == ESTOP ? " -> woken early by bthread_stop: ESTOP" : "");
  return nullptr;
}

void sleeps() {
  std::printf("3. timed sleeps (the worker keeps running other fibers meanwhile):\n");
  bthread_t tids[3];
  const uintptr_t asked[3] = {1000, 5000, 20000};
  for (int i = 0; i < 3; ++i) {
    bthread_start_background(&tids[i], nullptr, sleep_for, reinterpret_cast<void*>(asked[i]));
  }
  for (bthread_t t : tids) bthread_join(t, nullptr);
  bthread_t sleeper;
  bthread_start_background(&sleeper, nullptr, sleep_for, reinterpret_cast<void*>(10000000));
  bthread_usleep(10000);
  bthread_stop(sleeper);
  bthread_join(sleeper, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("weft tour: 100,000 fibers, a butex ping-pong, timed sleeps");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  std::printf("weft tour on %d workers\n", bthread_getconcurrency());
  if (many_fibers(100000) != 0) return 1;
  ping_pong(200000);
  sleeps();
  return 0;
}
