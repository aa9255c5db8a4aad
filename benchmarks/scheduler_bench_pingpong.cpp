// scheduler_bench, section 4: ping-pong round trips over one word, between
// two fibers (butex) and between two pthreads on the same or on different
// CPUs (butex, and futex and condvar as the floor). See scheduler_bench.cpp.
#include <benchmark/benchmark.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "scheduler_bench_util.h"
#include "weft/bthread.h"
#include "weft/butex.h"

namespace weft_bench {
namespace {

// One word, two parties: ping moves it from even to odd, pong from odd to
// the next even; each waits while the word still holds its own last value.
struct PingPong {
  std::atomic<int>* word = nullptr;
  std::atomic<bool> stop{false};
};

struct ButexOps {
  static void wait(std::atomic<int>* w, int expected) { weft::butex_wait(w, expected, nullptr); }
  static void wake(std::atomic<int>* w) { weft::butex_wake(w); }
};

struct FutexOps {
  static void wait(std::atomic<int>* w, int expected) {
    syscall(SYS_futex, reinterpret_cast<int*>(w), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr,
            0);
  }
  static void wake(std::atomic<int>* w) {
    syscall(SYS_futex, reinterpret_cast<int*>(w), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  }
};

template <typename Ops>
void pong_loop(PingPong* p) {
  int seen = 0;
  for (;;) {
    int v = p->word->load(std::memory_order_acquire);
    while (v == seen) {
      Ops::wait(p->word, seen);
      v = p->word->load(std::memory_order_acquire);
    }
    if (p->stop.load(std::memory_order_acquire)) return;
    p->word->store(v + 1, std::memory_order_release);
    Ops::wake(p->word);
    seen = v + 1;
  }
}

template <typename Ops>
void* pong_fiber(void* arg) {
  pong_loop<Ops>(static_cast<PingPong*>(arg));
  return nullptr;
}

// Runs the state loop; each iteration is one round trip.
template <typename Ops>
void ping_loop(benchmark::State& state, PingPong* p) {
  int cur = 0;
  for (auto _ : state) {
    p->word->store(cur + 1, std::memory_order_release);
    Ops::wake(p->word);
    int v = p->word->load(std::memory_order_acquire);
    while (v == cur + 1) {
      Ops::wait(p->word, cur + 1);
      v = p->word->load(std::memory_order_acquire);
    }
    cur = v;
  }
  p->stop.store(true, std::memory_order_release);
  p->word->store(cur + 1, std::memory_order_release);
  Ops::wake(p->word);
}

void BM_weft_butex_pingpong_fiber(benchmark::State& state) {
  PingPong p;
  p.word = weft::butex_create_checked<std::atomic<int>>();
  if (p.word == nullptr) {
    state.SkipWithError("butex_create failed");
    return;
  }
  auto body = [&] {
    bthread_t partner = 0;
    check(bthread_start_background(&partner, &BTHREAD_ATTR_SMALL, pong_fiber<ButexOps>, &p),
          "bthread_start_background(pong)");
    ping_loop<ButexOps>(state, &p);
    check(bthread_join(partner, nullptr), "bthread_join(pong)");
  };
  run_in_fiber(body);
  weft::butex_destroy(p.word);
  set_workers(state);
}

// Where the two pthreads of a ping-pong run. Left to the kernel, a 2-vCPU
// VM flips between two regimes from run to run (both threads on one CPU: a
// few us per round trip; one on each, with the idle vCPU halting between
// wake-ups: tens of us), so each pthread ping-pong is measured pinned both
// ways, the weft butex beside a raw futex in the same placement.
enum class Placement { kSameCpu, kCrossCpu };

// Pins the calling thread for the lifetime of the object, then restores its
// affinity (threads created meanwhile inherit the pin, so the benchmark
// thread creates none that outlive it).
class ScopedPin {
 public:
  ScopedPin() { ok_ = pthread_getaffinity_np(pthread_self(), sizeof(saved_), &saved_) == 0; }
  ~ScopedPin() {
    if (ok_) pthread_setaffinity_np(pthread_self(), sizeof(saved_), &saved_);
  }
  ScopedPin(const ScopedPin&) = delete;
  ScopedPin& operator=(const ScopedPin&) = delete;

  // Picks the CPUs of the two parties from the saved mask; false when the
  // placement needs two CPUs and there is one.
  bool choose(Placement where, int* mine, int* theirs) const {
    if (!ok_) return false;
    int found[2] = {-1, -1};
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < 2; ++cpu) {
      if (CPU_ISSET(cpu, &saved_)) found[n++] = cpu;
    }
    if (n == 0 || (where == Placement::kCrossCpu && n < 2)) return false;
    *mine = found[0];
    *theirs = where == Placement::kSameCpu ? found[0] : found[1];
    return true;
  }

 private:
  cpu_set_t saved_;
  bool ok_ = false;
};

bool pin_self(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

// Pins this thread for `where` and says which CPU the partner takes; false
// (the benchmark skipped) when the placement cannot be had.
bool pin_for(benchmark::State& state, const ScopedPin& pin, Placement where, int* theirs) {
  int mine = 0;
  if (!pin.choose(where, &mine, theirs) || !pin_self(mine)) {
    state.SkipWithError("cannot pin threads for this placement");
    return false;
  }
  return true;
}

template <typename Ops>
void pthread_pingpong(benchmark::State& state, PingPong* p, Placement where) {
  ScopedPin pin;
  int theirs = 0;
  if (!pin_for(state, pin, where, &theirs)) return;
  std::thread partner([p, theirs] {
    pin_self(theirs);
    pong_loop<Ops>(p);
  });
  ping_loop<Ops>(state, p);
  partner.join();
}

void BM_weft_butex_pingpong_pthread(benchmark::State& state, Placement where) {
  PingPong p;
  p.word = weft::butex_create_checked<std::atomic<int>>();
  if (p.word == nullptr) {
    state.SkipWithError("butex_create failed");
    return;
  }
  pthread_pingpong<ButexOps>(state, &p, where);
  weft::butex_destroy(p.word);
  set_workers(state);
}

void BM_futex_pingpong_pthread(benchmark::State& state, Placement where) {
  std::atomic<int> word{0};
  PingPong p;
  p.word = &word;
  pthread_pingpong<FutexOps>(state, &p, where);
}

void BM_condvar_pingpong_pthread(benchmark::State& state, Placement where) {
  ScopedPin pin;
  int theirs = 0;
  if (!pin_for(state, pin, where, &theirs)) return;
  std::mutex mu;
  std::condition_variable cv;
  int turn = 0;  // 1: the partner's move, 0: ours
  bool stop = false;
  std::thread partner([&, theirs] {
    pin_self(theirs);
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return turn == 1 || stop; });
      if (stop) return;
      turn = 0;
      cv.notify_one();
    }
  });
  for (auto _ : state) {
    std::unique_lock<std::mutex> lock(mu);
    turn = 1;
    cv.notify_one();
    cv.wait(lock, [&] { return turn == 0; });
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
  }
  cv.notify_one();
  partner.join();
}

}  // namespace

void register_pingpong_benchmarks() {
  using benchmark::RegisterBenchmark;
  RegisterBenchmark("weft/butex_pingpong/fiber_fiber", BM_weft_butex_pingpong_fiber)
      ->UseRealTime()
      ->MeasureProcessCPUTime();
  const struct {
    const char* suffix;
    Placement where;
  } placements[] = {{"same_cpu", Placement::kSameCpu}, {"cross_cpu", Placement::kCrossCpu}};
  for (const auto& pl : placements) {
    const std::string suffix = std::string("/pthread_pthread/") + pl.suffix;
    RegisterBenchmark(("weft/butex_pingpong" + suffix).c_str(), BM_weft_butex_pingpong_pthread,
                      pl.where)
        ->UseRealTime()
        ->MeasureProcessCPUTime();
    RegisterBenchmark(("baseline/futex_pingpong" + suffix).c_str(), BM_futex_pingpong_pthread,
                      pl.where)
        ->UseRealTime()
        ->MeasureProcessCPUTime();
    RegisterBenchmark(("baseline/condvar_pingpong" + suffix).c_str(), BM_condvar_pingpong_pthread,
                      pl.where)
        ->UseRealTime()
        ->MeasureProcessCPUTime();
  }
}

}  // namespace weft_bench
