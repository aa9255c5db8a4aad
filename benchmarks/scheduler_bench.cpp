// scheduler_bench: weft's scheduler microbenchmarks, each beside a baseline
// measured in the same process (Boost.Fiber, the raw fcontext switch,
// pthreads, futex), so a ratio is read from one run.
//
//   scheduler_bench --benchmark_min_time=0.2                      # default worker count
//   scheduler_bench --benchmark_min_time=0.2 --weft_concurrency=1 # yield numbers
//
// Both --benchmark_* and --weft_* flags are accepted: benchmark::Initialize
// removes its own flags first, then gflags parses (and removes) the rest.
// The runtime's worker count is fixed when it starts (it can only be raised
// later), so every weft benchmark reports it as the "workers" counter.
//
// Benchmarks named .../from_fiber (and yield, the fiber ping-pong, usleep)
// run Google Benchmark's state loop inside a driver fiber that the benchmark
// thread starts and joins. The fiber may move between workers, so those
// benchmarks use real time and process CPU time (a per-thread CPU clock
// would be read on different threads); their CPU column counts every thread
// of the process, spinning workers included.
//
// Where one benchmark iteration is not one operation (a batch of 100,000
// fibers, a pair of yields, a switch round trip), the per-operation figure is
// a counter: ns_per_fiber, ns_per_yield or ns_per_switch. Latencies are
// counters too (p50_us, p99_us), and the RSS benchmark runs this binary again
// (--bench_rss_child) so it measures a fresh process, not stacks that earlier
// benchmarks left resident in the pool.
#include <benchmark/benchmark.h>
#include <errno.h>
#include <gflags/gflags.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/context/detail/fcontext.hpp>
#include <boost/fiber/fiber.hpp>
#include <boost/fiber/operations.hpp>
#include <boost/fiber/pooled_fixedsize_stack.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "scheduler_bench_util.h"
#include "weft/bthread.h"
#include "weft/butex.h"

DEFINE_int32(bench_batch, 100000,
             "Fibers started (then joined) per iteration of the *_batch benchmarks");
DEFINE_int32(bench_rss_fibers, 100000, "Idle SMALL fibers alive when RSS is read");
DEFINE_int32(bench_timeout_s, 600,
             "Abort the whole run (with a message) after this many seconds, so a lost wake-up "
             "in the runtime cannot hang it; 0 disables");
DEFINE_bool(bench_rss_child, false,
            "Internal: run only the RSS measurement and print it (the RSS benchmark runs "
            "this binary again with this flag, so it measures a fresh process)");

namespace {

using boost::context::detail::fcontext_t;
using boost::context::detail::jump_fcontext;
using boost::context::detail::make_fcontext;
using boost::context::detail::transfer_t;
using weft_bench::check;
using weft_bench::noop_fiber;
using weft_bench::now_ns;
using weft_bench::report_latency;
using weft_bench::run_in_fiber;
using weft_bench::set_workers;

constexpr size_t kBoostStackSize = 32 * 1024;  // same as a weft SMALL stack

// ------------------------------------------- 1. start_background + join batch

void start_batch(std::vector<bthread_t>& tids) {
  for (bthread_t& tid : tids) {
    check(bthread_start_background(&tid, &BTHREAD_ATTR_SMALL, noop_fiber, nullptr),
          "bthread_start_background");
  }
}

void join_batch(const std::vector<bthread_t>& tids) {
  for (bthread_t tid : tids) check(bthread_join(tid, nullptr), "bthread_join");
}

void start_join_batch(benchmark::State& state) {
  const int n = FLAGS_bench_batch;
  std::vector<bthread_t> tids(static_cast<size_t>(n));
  // One untimed batch first: the first use of 100,000 stacks and slots pays
  // page faults (measured separately by the RSS benchmark), not scheduling.
  start_batch(tids);
  join_batch(tids);
  int64_t start_ns = 0;
  int64_t join_ns = 0;
  int64_t batches = 0;
  for (auto _ : state) {
    const int64_t t0 = now_ns();
    start_batch(tids);
    const int64_t t1 = now_ns();
    join_batch(tids);
    const int64_t t2 = now_ns();
    start_ns += t1 - t0;
    join_ns += t2 - t1;
    ++batches;
  }
  const double fibers = static_cast<double>(batches) * n;
  state.SetItemsProcessed(static_cast<int64_t>(fibers));
  state.counters["ns_per_fiber"] = static_cast<double>(start_ns + join_ns) / fibers;
  state.counters["start_ns"] = static_cast<double>(start_ns) / fibers;
  state.counters["join_ns"] = static_cast<double>(join_ns) / fibers;
  state.counters["batch"] = n;
}

void BM_weft_start_background_join_batch_fiber(benchmark::State& state) {
  auto body = [&state] { start_join_batch(state); };
  run_in_fiber(body);
  set_workers(state);
}

void BM_weft_start_background_join_batch_pthread(benchmark::State& state) {
  start_join_batch(state);
  set_workers(state);
}

void boost_noop() {}

void BM_boost_fiber_create_join_batch(benchmark::State& state) {
  const int n = FLAGS_bench_batch;
  // The pool outlives this call and is warmed by one untimed batch, as the
  // weft batches are: a cold batch is dominated by first-touch page faults
  // of 100,000 pooled stacks (seconds on a VM), not by Boost.Fiber itself.
  static auto* salloc = new boost::fibers::pooled_fixedsize_stack(kBoostStackSize);
  std::vector<boost::fibers::fiber> fibers;
  fibers.reserve(static_cast<size_t>(n));
  auto run_batch = [&] {
    for (int i = 0; i < n; ++i) fibers.emplace_back(std::allocator_arg, *salloc, boost_noop);
    for (auto& f : fibers) f.join();
    fibers.clear();
  };
  static bool warmed = false;
  if (!warmed) {
    run_batch();
    warmed = true;
  }
  int64_t total_ns = 0;
  int64_t batches = 0;
  for (auto _ : state) {
    const int64_t t0 = now_ns();
    run_batch();
    total_ns += now_ns() - t0;
    ++batches;
  }
  const double fibers_done = static_cast<double>(batches) * n;
  state.SetItemsProcessed(static_cast<int64_t>(fibers_done));
  state.counters["ns_per_fiber"] = static_cast<double>(total_ns) / fibers_done;
  state.counters["batch"] = n;
}

// --------------------------------------------- 2. start_urgent + join, one by one

void BM_weft_start_urgent_join_fiber(benchmark::State& state) {
  auto body = [&state] {
    for (auto _ : state) {
      bthread_t tid = 0;
      check(bthread_start_urgent(&tid, &BTHREAD_ATTR_SMALL, noop_fiber, nullptr),
            "bthread_start_urgent");
      check(bthread_join(tid, nullptr), "bthread_join");
    }
  };
  run_in_fiber(body);
  set_workers(state);
}

void BM_weft_start_background_join_fiber(benchmark::State& state) {
  auto body = [&state] {
    for (auto _ : state) {
      bthread_t tid = 0;
      check(bthread_start_background(&tid, &BTHREAD_ATTR_SMALL, noop_fiber, nullptr),
            "bthread_start_background");
      check(bthread_join(tid, nullptr), "bthread_join");
    }
  };
  run_in_fiber(body);
  set_workers(state);
}

void BM_boost_fiber_create_join(benchmark::State& state) {
  boost::fibers::pooled_fixedsize_stack salloc(kBoostStackSize);
  for (auto _ : state) {
    boost::fibers::fiber f(std::allocator_arg, salloc, boost_noop);
    f.join();
  }
}

void BM_pthread_create_join(benchmark::State& state) {
  for (auto _ : state) {
    std::thread t([] {});
    t.join();
  }
}

// ------------------------------------------------------------------ 3. yield

struct YieldPair {
  std::atomic<bool> stop{false};
  uint64_t partner_calls = 0;  // written by the partner before it ends
};

void* weft_yield_partner(void* arg) {
  auto* pair = static_cast<YieldPair*>(arg);
  uint64_t calls = 0;
  while (!pair->stop.load(std::memory_order_relaxed)) {
    bthread_yield();
    ++calls;
  }
  pair->partner_calls = calls;
  return nullptr;
}

void report_yield(benchmark::State& state, int64_t elapsed_ns, uint64_t partner_calls) {
  const double driver_calls = static_cast<double>(state.iterations());
  const double calls = driver_calls + static_cast<double>(partner_calls);
  state.counters["ns_per_yield"] = calls > 0 ? static_cast<double>(elapsed_ns) / calls : 0;
  // 1.0 when the two fibers strictly alternate (one worker); far from 1 when
  // they run on different workers and most yields find nothing to switch to.
  state.counters["partner_per_driver"] =
      driver_calls > 0 ? static_cast<double>(partner_calls) / driver_calls : 0;
}

void BM_weft_yield(benchmark::State& state) {
  YieldPair pair;
  int64_t elapsed_ns = 0;
  auto body = [&] {
    bthread_t partner = 0;
    check(bthread_start_background(&partner, &BTHREAD_ATTR_SMALL, weft_yield_partner, &pair),
          "bthread_start_background(partner)");
    const int64_t t0 = now_ns();
    for (auto _ : state) bthread_yield();
    elapsed_ns = now_ns() - t0;
    pair.stop.store(true, std::memory_order_relaxed);
    check(bthread_join(partner, nullptr), "bthread_join(partner)");
  };
  run_in_fiber(body);
  report_yield(state, elapsed_ns, pair.partner_calls);
  set_workers(state);
}

void BM_boost_fiber_yield(benchmark::State& state) {
  bool stop = false;
  uint64_t partner_calls = 0;
  int64_t elapsed_ns = 0;
  boost::fibers::fiber driver([&] {
    const int64_t t0 = now_ns();
    for (auto _ : state) boost::this_fiber::yield();
    elapsed_ns = now_ns() - t0;
    stop = true;
  });
  boost::fibers::fiber partner([&] {
    while (!stop) {
      boost::this_fiber::yield();
      ++partner_calls;
    }
  });
  driver.join();
  partner.join();
  report_yield(state, elapsed_ns, partner_calls);
}

// The floor: two contexts on one pthread jumping to each other.
void raw_pong(transfer_t t) {
  for (;;) t = jump_fcontext(t.fctx, nullptr);
}

void BM_raw_jump_fcontext(benchmark::State& state) {
  constexpr size_t kSize = 64 * 1024;
  void* mem = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    state.SkipWithError("mmap failed");
    return;
  }
  fcontext_t ctx = make_fcontext(static_cast<char*>(mem) + kSize, kSize, raw_pong);
  const int64_t t0 = now_ns();
  for (auto _ : state) ctx = jump_fcontext(ctx, nullptr).fctx;  // there and back: 2 switches
  const int64_t elapsed_ns = now_ns() - t0;
  // raw_pong is left suspended forever; nothing on its stack needs unwinding.
  munmap(mem, kSize);
  state.counters["ns_per_switch"] =
      static_cast<double>(elapsed_ns) / (2.0 * static_cast<double>(state.iterations()));
}

// ------------------------------------------------------ 5. timer add + del

void timer_noop(void*) {}

timespec realtime_after(int64_t ns) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  const int64_t total = static_cast<int64_t>(ts.tv_nsec) + ns;
  ts.tv_sec += static_cast<time_t>(total / 1000000000);
  ts.tv_nsec = static_cast<long>(total % 1000000000);
  return ts;
}

void timer_add_del_loop(benchmark::State& state) {
  int64_t fired_first = 0;
  uint64_t n = 0;
  timespec deadline{};
  for (auto _ : state) {
    // A fresh "1 s from now" every 1024 pairs: the deadline stays ~1 s
    // ahead without a clock read per pair.
    if ((n++ & 1023) == 0) deadline = realtime_after(1000000000);
    bthread_timer_t id = 0;
    check(bthread_timer_add(&id, deadline, timer_noop, nullptr), "bthread_timer_add");
    if (bthread_timer_del(id) != 0) ++fired_first;
  }
  // Should stay 0: a timer 1 s out is always deleted before it runs.
  state.counters["not_deleted"] = static_cast<double>(fired_first);
}

// What bthread_timer_add spends converting its CLOCK_REALTIME abstime to the
// runtime's CLOCK_MONOTONIC deadline: one read of each clock.
void BM_clock_gettime_pair(benchmark::State& state) {
  for (auto _ : state) {
    timespec a;
    timespec b;
    clock_gettime(CLOCK_REALTIME, &a);
    clock_gettime(CLOCK_MONOTONIC, &b);
    benchmark::DoNotOptimize(a);
    benchmark::DoNotOptimize(b);
  }
}

// The yardstick timer add+del is read against in the same run: one
// uncontended lock+unlock of a std::mutex (two atomic read-modify-writes).
void BM_std_mutex_lock_unlock(benchmark::State& state) {
  std::mutex mu;
  for (auto _ : state) {
    mu.lock();
    mu.unlock();
  }
}

void BM_weft_timer_add_del_pthread(benchmark::State& state) {
  timer_add_del_loop(state);
  set_workers(state);
}

void BM_weft_timer_add_del_fiber(benchmark::State& state) {
  auto body = [&state] { timer_add_del_loop(state); };
  run_in_fiber(body);
  set_workers(state);
}

// ------------------------------------------------------ 6. usleep(1) latency

void BM_weft_usleep_1us_fiber(benchmark::State& state) {
  std::vector<int64_t> samples;
  samples.reserve(1 << 16);
  auto body = [&] {
    for (auto _ : state) {
      const int64_t t0 = now_ns();
      bthread_usleep(1);
      samples.push_back(now_ns() - t0);
    }
  };
  run_in_fiber(body);
  report_latency(state, samples);
  set_workers(state);
}

void BM_pthread_usleep_1us(benchmark::State& state) {
  // Same 1 ns timer slack as weft's timer thread, so the kernel's default
  // 50 us slack does not decide the comparison.
  const int old_slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  std::vector<int64_t> samples;
  samples.reserve(1 << 16);
  for (auto _ : state) {
    const int64_t t0 = now_ns();
    usleep(1);
    samples.push_back(now_ns() - t0);
  }
  if (old_slack > 0) prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(old_slack), 0, 0, 0);
  report_latency(state, samples);
}

// ------------------------------------------------- 7. RSS per idle SMALL fiber

long rss_kib() {
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long size = 0;
  long resident = 0;
  const int got = fscanf(f, "%ld %ld", &size, &resident);
  fclose(f);
  if (got != 2) return -1;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

struct IdleFibers {
  std::atomic<int>* word = nullptr;
  std::atomic<int> blocked{0};
};

void* idle_fiber(void* arg) {
  auto* idle = static_cast<IdleFibers*>(arg);
  idle->blocked.fetch_add(1, std::memory_order_relaxed);
  while (idle->word->load(std::memory_order_acquire) == 0) weft::butex_wait(idle->word, 0, nullptr);
  return nullptr;
}

// Child mode: in a fresh process, starts the runtime, reads RSS, parks
// --bench_rss_fibers SMALL fibers on one butex, reads RSS again, then wakes
// and joins them. Prints "before_kib after_kib fibers".
int rss_child_main() {
  alarm(120);  // a runtime that never wakes a fiber must not hang the parent
  const int n = FLAGS_bench_rss_fibers;
  IdleFibers idle;
  idle.word = weft::butex_create_checked<std::atomic<int>>();
  if (idle.word == nullptr) return 1;
  std::vector<bthread_t> tids(static_cast<size_t>(n));  // zeroed, so already resident
  // Start the workers (and a first stack slab) before the "before" reading.
  bthread_t warm = 0;
  check(bthread_start_background(&warm, &BTHREAD_ATTR_SMALL, noop_fiber, nullptr), "start");
  check(bthread_join(warm, nullptr), "join");
  const long before = rss_kib();
  for (int i = 0; i < n; ++i) {
    check(bthread_start_background(&tids[static_cast<size_t>(i)], &BTHREAD_ATTR_SMALL, idle_fiber,
                                   &idle),
          "bthread_start_background");
  }
  while (idle.blocked.load(std::memory_order_relaxed) < n) usleep(1000);
  usleep(50 * 1000);  // let the last ones finish suspending
  const long after = rss_kib();
  idle.word->store(1, std::memory_order_release);
  weft::butex_wake_all(idle.word);
  for (int i = 0; i < n; ++i) check(bthread_join(tids[static_cast<size_t>(i)], nullptr), "join");
  weft::butex_destroy(idle.word);
  printf("%ld %ld %d\n", before, after, n);
  return 0;
}

void BM_weft_rss_idle_small_fiber(benchmark::State& state) {
  char exe[4096];
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (len <= 0) {
    state.SkipWithError("readlink(/proc/self/exe) failed");
    return;
  }
  exe[len] = '\0';
  std::string small;
  gflags::GetCommandLineOption("weft_stack_size_small", &small);
  const std::string cmd = std::string("'") + exe + "' --bench_rss_child --bench_rss_fibers=" +
                          std::to_string(FLAGS_bench_rss_fibers) +
                          " --weft_concurrency=" + std::to_string(bthread_getconcurrency()) +
                          " --weft_stack_size_small=" + small;
  long before = -1;
  long after = -1;
  int n = 0;
  for (auto _ : state) {
    FILE* child = popen(cmd.c_str(), "r");
    if (child == nullptr) {
      state.SkipWithError("popen failed");
      return;
    }
    const int got = fscanf(child, "%ld %ld %d", &before, &after, &n);
    const int status = pclose(child);
    if (got != 3 || status != 0 || before < 0 || after < 0 || n <= 0) {
      state.SkipWithError("RSS child failed");
      return;
    }
  }
  state.counters["kib_per_fiber"] = static_cast<double>(after - before) / n;
  state.counters["rss_before_mib"] = static_cast<double>(before) / 1024.0;
  state.counters["rss_after_mib"] = static_cast<double>(after) / 1024.0;
  state.counters["fibers"] = n;
  set_workers(state);
}

// ------------------------------------------------------------ registration

void register_benchmarks() {
  using benchmark::kMicrosecond;
  using benchmark::kMillisecond;
  using benchmark::RegisterBenchmark;

  // 1. Batches of --bench_batch fibers.
  RegisterBenchmark("weft/start_background_join_batch/from_fiber",
                    BM_weft_start_background_join_batch_fiber)
      ->UseRealTime()
      ->MeasureProcessCPUTime()
      ->Unit(kMillisecond);
  RegisterBenchmark("weft/start_background_join_batch/from_pthread",
                    BM_weft_start_background_join_batch_pthread)
      ->UseRealTime()
      ->MeasureProcessCPUTime()
      ->Unit(kMillisecond);
  RegisterBenchmark("boost_fiber/create_join_batch", BM_boost_fiber_create_join_batch)
      ->UseRealTime()
      ->Unit(kMillisecond);

  // 2. One fiber at a time.
  RegisterBenchmark("weft/start_urgent_join/from_fiber", BM_weft_start_urgent_join_fiber)
      ->UseRealTime()
      ->MeasureProcessCPUTime();
  RegisterBenchmark("weft/start_background_join/from_fiber", BM_weft_start_background_join_fiber)
      ->UseRealTime()
      ->MeasureProcessCPUTime();
  RegisterBenchmark("boost_fiber/create_join", BM_boost_fiber_create_join)->UseRealTime();
  RegisterBenchmark("baseline/pthread_create_join", BM_pthread_create_join)
      ->UseRealTime()
      ->Unit(kMicrosecond);

  // 3. Yield and the switch floor.
  RegisterBenchmark("weft/yield", BM_weft_yield)->UseRealTime()->MeasureProcessCPUTime();
  RegisterBenchmark("boost_fiber/yield", BM_boost_fiber_yield)->UseRealTime();
  RegisterBenchmark("baseline/raw_jump_fcontext", BM_raw_jump_fcontext)->UseRealTime();

  // 4. Round trips over a butex (futex and condvar for the pthread floor).
  weft_bench::register_pingpong_benchmarks();

  // 5. Timers.
  RegisterBenchmark("weft/timer_add_del/from_pthread", BM_weft_timer_add_del_pthread)
      ->UseRealTime();
  RegisterBenchmark("weft/timer_add_del/from_fiber", BM_weft_timer_add_del_fiber)
      ->UseRealTime()
      ->MeasureProcessCPUTime();
  RegisterBenchmark("baseline/clock_gettime_realtime_monotonic", BM_clock_gettime_pair)
      ->UseRealTime();
  RegisterBenchmark("baseline/std_mutex_lock_unlock_uncontended", BM_std_mutex_lock_unlock)
      ->UseRealTime();

  // 6. Sleep latency.
  RegisterBenchmark("weft/usleep_1us/from_fiber", BM_weft_usleep_1us_fiber)
      ->UseRealTime()
      ->MeasureProcessCPUTime()
      ->Unit(kMicrosecond);
  RegisterBenchmark("baseline/pthread_usleep_1us", BM_pthread_usleep_1us)
      ->UseRealTime()
      ->Unit(kMicrosecond);

  // 7. Memory: one run in a fresh child process.
  RegisterBenchmark("weft/rss_idle_small_fiber", BM_weft_rss_idle_small_fiber)
      ->Iterations(1)
      ->UseRealTime()
      ->Unit(kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  // Google Benchmark takes (and removes) its --benchmark_* flags first and
  // leaves the rest; gflags then takes the --weft_* and --bench_* flags and
  // rejects anything unknown.
  benchmark::Initialize(&argc, argv);
  gflags::SetUsageMessage(
      "weft scheduler microbenchmarks. Accepts --benchmark_* (Google Benchmark) and --weft_* "
      "flags; pass --weft_concurrency=1 for the one-worker yield numbers.");
  gflags::ParseCommandLineFlags(&argc, &argv, /*remove_flags=*/true);
  if (FLAGS_bench_rss_child) return rss_child_main();
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (FLAGS_bench_batch <= 0 || FLAGS_bench_rss_fibers <= 0) {
    fprintf(stderr, "scheduler_bench: --bench_batch and --bench_rss_fibers must be positive\n");
    return 1;
  }

  if (FLAGS_bench_timeout_s > 0) {
    // Started before any benchmark pins the benchmark thread, so it is never
    // pinned itself.
    std::thread([] {
      std::this_thread::sleep_for(std::chrono::seconds(FLAGS_bench_timeout_s));
      fprintf(stderr, "scheduler_bench: still running after --bench_timeout_s=%d s; aborting\n",
              FLAGS_bench_timeout_s);
      std::abort();
    }).detach();
  }

  benchmark::AddCustomContext("weft_workers", std::to_string(bthread_getconcurrency()));
  std::string small;
  gflags::GetCommandLineOption("weft_stack_size_small", &small);
  benchmark::AddCustomContext("weft_stack_size_small", small);
  register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
