// sync_bench: weft's locks, keys and counters beside their baselines in the
// same process (std::mutex, Boost.Fiber's mutex, thread_local, a shared
// atomic), so a ratio is read from one run.
//
//   sync_bench --benchmark_min_time=0.2
//
// Fiber benchmarks run their loop inside fibers started and joined by the
// benchmark thread and report real time per operation.
#include <benchmark/benchmark.h>
#include <gflags/gflags.h>

#include <atomic>
#include <boost/fiber/all.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "weft/bthread.h"
#include "weft/condition_variable.h"
#include "weft/metrics.h"
#include "weft/mutex.h"

namespace {

using Clock = std::chrono::steady_clock;

// Runs body(i) in `n` fibers at once; returns wall seconds.
template <typename Body>
double run_fibers(int n, Body body) {
  struct Arg {
    Body* body;
    int index;
  };
  std::vector<Arg> args(n);
  std::vector<bthread_t> tids(n);
  const auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    args[i] = Arg{&body, i};
    bthread_start_background(&tids[i], nullptr, [](void* a) -> void* {
      auto* arg = static_cast<Arg*>(a);
      (*arg->body)(arg->index);
      return nullptr;
    }, &args[i]);
  }
  for (auto& t : tids) bthread_join(t, nullptr);
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---- mutex, uncontended ----

void BM_weft_mutex_uncontended(benchmark::State& state) {
  bthread_mutex_t mu;
  bthread_mutex_init(&mu, nullptr);
  for (auto _ : state) {
    bthread_mutex_lock(&mu);
    bthread_mutex_unlock(&mu);
  }
  bthread_mutex_destroy(&mu);
}
BENCHMARK(BM_weft_mutex_uncontended)->Name("weft/mutex_lock_unlock_uncontended");

void BM_std_mutex_uncontended(benchmark::State& state) {
  std::mutex mu;
  for (auto _ : state) {
    mu.lock();
    mu.unlock();
  }
}
BENCHMARK(BM_std_mutex_uncontended)->Name("baseline/std_mutex_lock_unlock_uncontended");

// ---- mutex, 4 contending ----

constexpr int kContenders = 4;

void BM_weft_mutex_4_fibers(benchmark::State& state) {
  weft::Mutex mu;
  long shared = 0;
  const int per = static_cast<int>(state.range(0));
  for (auto _ : state) {
    const double secs = run_fibers(kContenders, [&](int) {
      for (int i = 0; i < per; ++i) {
        std::lock_guard<weft::Mutex> guard(mu);
        ++shared;
      }
    });
    state.SetIterationTime(secs);
  }
  benchmark::DoNotOptimize(shared);
  state.SetItemsProcessed(state.iterations() * kContenders * per);
  state.counters["ns_per_lock_unlock"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kContenders * per),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_weft_mutex_4_fibers)->Name("weft/mutex_4_fibers_contending")->Arg(100000)->UseManualTime();

void BM_std_mutex_4_threads(benchmark::State& state) {
  std::mutex mu;
  long shared = 0;
  const int per = static_cast<int>(state.range(0));
  for (auto _ : state) {
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < kContenders; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < per; ++i) {
          std::lock_guard<std::mutex> guard(mu);
          ++shared;
        }
      });
    }
    for (auto& t : threads) t.join();
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
  }
  benchmark::DoNotOptimize(shared);
  state.counters["ns_per_lock_unlock"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kContenders * per),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_std_mutex_4_threads)->Name("baseline/std_mutex_4_pthreads_contending")->Arg(100000)->UseManualTime();

void BM_boost_fiber_mutex_4_fibers(benchmark::State& state) {
  boost::fibers::mutex mu;
  long shared = 0;
  const int per = static_cast<int>(state.range(0));
  for (auto _ : state) {
    const auto start = Clock::now();
    std::vector<boost::fibers::fiber> fibers;
    for (int t = 0; t < kContenders; ++t) {
      fibers.emplace_back([&] {
        for (int i = 0; i < per; ++i) {
          std::lock_guard<boost::fibers::mutex> guard(mu);
          ++shared;
          if ((i & 63) == 0) boost::this_fiber::yield();  // let the others contend
        }
      });
    }
    for (auto& f : fibers) f.join();
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
  }
  benchmark::DoNotOptimize(shared);
  state.counters["ns_per_lock_unlock"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kContenders * per),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_boost_fiber_mutex_4_fibers)->Name("baseline/boost_fiber_mutex_4_fibers_one_thread")->Arg(100000)->UseManualTime();

// ---- keys ----

bthread_key_t g_key;
thread_local void* tls_value = nullptr;

void BM_weft_getspecific(benchmark::State& state) {
  int v = 0;
  bthread_setspecific(g_key, &v);
  for (auto _ : state) benchmark::DoNotOptimize(bthread_getspecific(g_key));
}
BENCHMARK(BM_weft_getspecific)->Name("weft/getspecific_pthread");

void BM_weft_setspecific(benchmark::State& state) {
  int v = 0;
  for (auto _ : state) bthread_setspecific(g_key, &v);
}
BENCHMARK(BM_weft_setspecific)->Name("weft/setspecific_pthread");

void BM_weft_getspecific_fiber(benchmark::State& state) {
  for (auto _ : state) {
    const long n = 1000000;
    const double secs = run_fibers(1, [&](int) {
      int v = 0;
      bthread_setspecific(g_key, &v);
      for (long i = 0; i < n; ++i) benchmark::DoNotOptimize(bthread_getspecific(g_key));
    });
    state.SetIterationTime(secs);
  }
  state.counters["ns_per_get"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * 1000000.0,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_weft_getspecific_fiber)->Name("weft/getspecific_in_fiber")->UseManualTime();

void BM_weft_setspecific_fiber(benchmark::State& state) {
  for (auto _ : state) {
    const long n = 1000000;
    const double secs = run_fibers(1, [&](int) {
      int v = 0;
      for (long i = 0; i < n; ++i) {
        bthread_setspecific(g_key, &v);
        benchmark::ClobberMemory();
      }
    });
    state.SetIterationTime(secs);
  }
  state.counters["ns_per_set"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * 1000000.0,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_weft_setspecific_fiber)->Name("weft/setspecific_in_fiber")->UseManualTime();

void BM_thread_local_get(benchmark::State& state) {
  int v = 0;
  tls_value = &v;
  for (auto _ : state) {
    benchmark::DoNotOptimize(tls_value);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_thread_local_get)->Name("baseline/thread_local_get");

// ---- cond ping-pong ----

void BM_weft_cond_ping_pong(benchmark::State& state) {
  const long rounds = 100000;
  for (auto _ : state) {
    weft::Mutex mu;
    weft::ConditionVariable cv;
    long turn = 0;
    const double secs = run_fibers(2, [&](int me) {
      for (long r = 0; r < rounds; ++r) {
        std::unique_lock<weft::Mutex> lock(mu);
        cv.wait(lock, [&] { return (turn & 1) == me; });
        ++turn;
        cv.notify_one();
      }
    });
    state.SetIterationTime(secs);
  }
  state.counters["ns_per_round_trip"] = benchmark::Counter(
      static_cast<double>(state.iterations() * rounds) / 2,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_weft_cond_ping_pong)->Name("weft/cond_ping_pong_round_trip")->UseManualTime();

void BM_std_cond_ping_pong(benchmark::State& state) {
  const long rounds = 20000;
  for (auto _ : state) {
    std::mutex mu;
    std::condition_variable cv;
    long turn = 0;
    const auto start = Clock::now();
    auto body = [&](int me) {
      for (long r = 0; r < rounds; ++r) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return (turn & 1) == me; });
        ++turn;
        cv.notify_one();
      }
    };
    std::thread a(body, 0), b(body, 1);
    a.join();
    b.join();
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
  }
  state.counters["ns_per_round_trip"] = benchmark::Counter(
      static_cast<double>(state.iterations() * rounds) / 2,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_std_cond_ping_pong)->Name("baseline/std_cond_ping_pong_round_trip")->UseManualTime();

// ---- counters ----

weft::Counter* g_counter = nullptr;
std::atomic<int64_t> g_shared{0};

void BM_weft_counter_add(benchmark::State& state) {
  for (auto _ : state) g_counter->add(1);
}
BENCHMARK(BM_weft_counter_add)->Name("weft/counter_add")->ThreadRange(1, 8)->UseRealTime();

void BM_shared_atomic_add(benchmark::State& state) {
  for (auto _ : state) g_shared.fetch_add(1, std::memory_order_relaxed);
}
BENCHMARK(BM_shared_atomic_add)->Name("baseline/shared_atomic_add")->ThreadRange(1, 8)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bthread_key_create(&g_key, nullptr);
  g_counter = new weft::Counter("sync_bench_counter");
  benchmark::AddCustomContext("weft_workers", std::to_string(bthread_getconcurrency()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
