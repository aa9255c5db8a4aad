// The helpers scheduler_bench's files share: a clock, a fatal check, a
// driver fiber for the state loop, and the counters every weft benchmark
// reports. Internal to the benchmarks.
#pragma once

#include <benchmark/benchmark.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "weft/bthread.h"

namespace weft_bench {

inline int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

inline void check(int rc, const char* what) {
  if (rc != 0) {
    fprintf(stderr, "scheduler_bench: %s failed: %s\n", what, strerror(rc));
    std::abort();
  }
}

inline void* noop_fiber(void*) { return nullptr; }

// Runs f() in a fiber (NORMAL stack) and waits for it from this pthread.
template <typename F>
void run_in_fiber(F& f) {
  bthread_t tid = 0;
  check(bthread_start_background(
            &tid, &BTHREAD_ATTR_NORMAL,
            [](void* arg) -> void* {
              (*static_cast<F*>(arg))();
              return nullptr;
            },
            &f),
        "bthread_start_background(driver)");
  check(bthread_join(tid, nullptr), "bthread_join(driver)");
}

inline void set_workers(benchmark::State& state) {
  state.counters["workers"] = static_cast<double>(bthread_getconcurrency());
}

inline double percentile_us(const std::vector<int64_t>& sorted_ns, double p) {
  if (sorted_ns.empty()) return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(sorted_ns.size()));
  if (i >= sorted_ns.size()) i = sorted_ns.size() - 1;
  return static_cast<double>(sorted_ns[i]) / 1000.0;
}

inline void report_latency(benchmark::State& state, std::vector<int64_t>& samples) {
  std::sort(samples.begin(), samples.end());
  state.counters["p50_us"] = percentile_us(samples, 0.50);
  state.counters["p99_us"] = percentile_us(samples, 0.99);
  state.counters["max_us"] = samples.empty() ? 0 : static_cast<double>(samples.back()) / 1000.0;
}

// Section 4 of scheduler_bench (scheduler_bench_pingpong.cpp): round trips
// over a butex, with futex and condvar for the pthread floor.
void register_pingpong_benchmarks();

}  // namespace weft_bench
