// stranding_bench: how long a fiber woken by a running fiber waits when its
// waker then holds the worker (blocks its pthread in poll(2), as a blocking
// library would), beside the same wake-up when the waker blocks on a weft
// wait instead (the worker is free at once: the floor of a wake-up) and a
// pthread waking a pthread through a condition variable.
//
//   stranding_bench --weft_concurrency=2
//
// The latency is from the butex_wake to the woken fiber's first
// instruction; counters p50_us, p99_us and max_us over the iterations. The
// worker monitor (runtime/src/sched/worker_monitor.h) bounds the first row
// at about two monitor ticks plus a wake-up.
#include <benchmark/benchmark.h>
#include <gflags/gflags.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "weft/bthread.h"
#include "weft/butex.h"

namespace {

using Clock = std::chrono::steady_clock;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

enum class WakerBlocks { kInPoll, kOnWeft };

struct Round {
  void* butex = weft::butex_create();
  std::atomic<bool> parked{false};
  std::atomic<int64_t> woke_at{0};
  std::atomic<int64_t> ran_at{0};
  int fds[2] = {-1, -1};
  ~Round() { weft::butex_destroy(butex); }
};

void* sleeper(void* arg) {
  auto* r = static_cast<Round*>(arg);
  auto* word = static_cast<std::atomic<int>*>(r->butex);
  r->parked.store(true);
  while (word->load() == 0) weft::butex_wait(r->butex, 0, nullptr);
  r->ran_at.store(now_ns());
  const char c = 'x';
  if (write(r->fds[1], &c, 1) != 1) abort();
  return nullptr;
}

struct WakerArg {
  WakerBlocks how;
  int64_t latency_ns = 0;
};

void* waker(void* arg) {
  auto* w = static_cast<WakerArg*>(arg);
  Round r;
  if (pipe(r.fds) != 0) abort();
  bthread_t tid;
  bthread_start_background(&tid, nullptr, sleeper, &r);
  while (!r.parked.load()) bthread_usleep(50);
  bthread_usleep(500);  // linked on the butex by now
  r.woke_at.store(now_ns());
  static_cast<std::atomic<int>*>(r.butex)->store(1);
  weft::butex_wake(r.butex);
  if (w->how == WakerBlocks::kInPoll) {
    pollfd p{r.fds[0], POLLIN, 0};
    poll(&p, 1, 5000);
  } else {
    bthread_fd_wait(r.fds[0], POLLIN);
  }
  bthread_join(tid, nullptr);
  w->latency_ns = r.ran_at.load() - r.woke_at.load();
  close(r.fds[0]);
  close(r.fds[1]);
  return nullptr;
}

void report(benchmark::State& state, std::vector<int64_t>* ns) {
  if (ns->empty()) return;
  std::sort(ns->begin(), ns->end());
  auto at = [&](double q) {
    return static_cast<double>(
               (*ns)[static_cast<size_t>(q * static_cast<double>(ns->size() - 1))]) /
           1000.0;
  };
  state.counters["p50_us"] = at(0.5);
  state.counters["p99_us"] = at(0.99);
  state.counters["max_us"] = static_cast<double>(ns->back()) / 1000.0;
  state.counters["workers"] = bthread_getconcurrency();
}

void BM_woken_fiber_latency(benchmark::State& state, WakerBlocks how) {
  std::vector<int64_t> ns;
  for (auto _ : state) {
    WakerArg w{how};
    bthread_t tid;
    bthread_start_background(&tid, nullptr, waker, &w);
    bthread_join(tid, nullptr);
    ns.push_back(w.latency_ns);
  }
  report(state, &ns);
}

void BM_pthread_condvar_wake_latency(benchmark::State& state) {
  std::vector<int64_t> ns;
  for (auto _ : state) {
    std::mutex mu;
    std::condition_variable cv;
    bool go = false;
    int64_t ran_at = 0;
    std::thread t([&] {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return go; });
      ran_at = now_ns();
    });
    std::this_thread::sleep_for(std::chrono::microseconds(500));
    int64_t woke_at;
    {
      std::lock_guard<std::mutex> lock(mu);
      go = true;
      woke_at = now_ns();
    }
    cv.notify_one();
    t.join();
    ns.push_back(ran_at - woke_at);
  }
  report(state, &ns);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RegisterBenchmark("weft/woken_fiber_latency/waker_blocks_in_poll",
                               BM_woken_fiber_latency, WakerBlocks::kInPoll)
      ->Iterations(300)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("weft/woken_fiber_latency/waker_waits_on_weft",
                               BM_woken_fiber_latency, WakerBlocks::kOnWeft)
      ->Iterations(300)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("baseline/pthread_condvar_wake_latency",
                               BM_pthread_condvar_wake_latency)
      ->Iterations(300)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
