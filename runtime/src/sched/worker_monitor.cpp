#include "sched/worker_monitor.h"

#include <gflags/gflags.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/futex.h"
#include "base/time_util.h"
#include "sched/task_control.h"
#include "sched/task_group.h"
#include "weft/fiber_dump.h"

DEFINE_int32(
    weft_worker_stall_warn_ms, 1000,
    "Log a warning (and count weft_worker_stalls) when every worker has run the same fiber "
    "for this long while other fibers wait; 0 disables the warning");

DEFINE_int32(
    weft_worker_monitor_nice, 19,
    "Nice value of the worker monitor's pthread (0..19; 0 keeps the process's). At 19 a tick "
    "never preempts a worker or a peer process on wake-up, so a loaded server no longer pays "
    "a context switch per tick; a stranded fiber is still rescued within a few hundred us "
    "while a CPU is free, and within a few ms when other processes keep every CPU busy. Not "
    "applied while there are more workers than CPUs (they time-slice, and the monitor's "
    "rescues keep them moving). Read when the runtime starts");

namespace weft::sched {
namespace {

// 1 while the monitor sleeps because every worker was parked. The monitor
// stores 1 then loads nidle_; a worker decrements nidle_ (seq_cst, in
// signal_task or leave_idle) then loads this word: one side always sees
// the other, so the monitor never sleeps through a worker's wake-up.
std::atomic<int> g_monitor_asleep{0};
std::atomic<uint64_t> g_stalls{0};
// Bumped (then woken) when workers are added, so a monitor in its long
// lone-worker sleep starts ticking for stranding at once.
std::atomic<int> g_workers_changed{0};

// With one worker no fiber can be stranded (there is no other worker to
// take it), so the monitor only watches for stalls, at a fraction of the
// warning's threshold.
int64_t lone_worker_tick_ns() {
  const int64_t warn_ns = static_cast<int64_t>(FLAGS_weft_worker_stall_warn_ms) * 1000000;
  constexpr int64_t kLongestNs = 50 * 1000000;
  return warn_ns > 0 && warn_ns / 4 < kLongestNs ? std::max<int64_t>(warn_ns / 4, kMonitorTickNs)
                                                 : kLongestNs;
}

struct WorkerSample {
  uint64_t nswitch = ~uint64_t{0};
  int64_t since_ns = 0;  // when nswitch last moved
  bool crowded = false;  // two or more fibers queued at the last tick
};

bool everyone_parked(TaskControl* c) { return c->nidle() == c->concurrency() && !c->has_remote(); }

void sleep_while_everyone_parked(TaskControl* c) {
  g_monitor_asleep.store(1, std::memory_order_seq_cst);
  if (!everyone_parked(c)) {
    g_monitor_asleep.store(0, std::memory_order_relaxed);
    return;
  }
  while (g_monitor_asleep.load(std::memory_order_acquire) == 1) {
    base::futex_wait(&g_monitor_asleep, 1, nullptr);
  }
}

// The fiber-dump blocks of `tids`, so the warning shows what they are
// (state, what they wait on) in the dump's own words.
std::string dump_blocks_of(const std::vector<bthread_t>& tids) {
  std::ostringstream all;
  dump_fibers(all);
  std::istringstream lines(all.str());
  std::string line, out;
  bool keep = false;
  while (std::getline(lines, line)) {
    if (line.rfind("fiber ", 0) == 0) {
      keep = false;
      for (bthread_t tid : tids) {
        if (line.rfind("fiber " + std::to_string(tid) + " ", 0) == 0) keep = true;
      }
    }
    if (keep) out += line + '\n';
  }
  return out;
}

void report_stall(const std::vector<bthread_t>& tids, int64_t stalled_ns) {
  g_stalls.fetch_add(1, std::memory_order_relaxed);
  std::string names;
  for (bthread_t tid : tids) names += ' ' + std::to_string(tid);
  const std::string blocks = dump_blocks_of(tids);
  std::fprintf(stderr,
               "weft: all %zu workers have run the same fiber for %lld ms while other fibers are "
               "ready; nothing else runs until one of them blocks on a weft primitive or yields. "
               "Fibers holding the workers:%s\n%s"
               "(a fiber that blocks its pthread in a system call, a std::mutex or a foreign "
               "library holds its worker: raise --weft_concurrency or use weft's waits)\n",
               tids.size(), static_cast<long long>(stalled_ns / 1000000), names.c_str(),
               blocks.c_str());
}

// The stall warning for a runtime of one worker: its fiber has not
// switched for the threshold while others wait.
void check_lone_worker(TaskControl* c, WorkerSample& s, bool* stall_reported) {
  TaskGroup* g = c->group(0);
  if (g == nullptr) return;
  const int64_t now = base::monotonic_ns();
  const int64_t stall_ns = static_cast<int64_t>(FLAGS_weft_worker_stall_warn_ms) * 1000000;
  const uint64_t switches = g->nswitch.load(std::memory_order_relaxed);
  if (switches != s.nswitch) {
    s.nswitch = switches;
    s.since_ns = now;
    *stall_reported = false;
    return;
  }
  const bool queued = g->queue_size_hint() != 0 || g->has_runnext() || c->has_remote();
  const bthread_t tid = g->running_tid.load(std::memory_order_relaxed);
  if (stall_ns > 0 && queued && tid != 0 && now - s.since_ns >= stall_ns) {
    if (!*stall_reported) report_stall({tid}, now - s.since_ns);
    *stall_reported = true;
  } else {
    *stall_reported = false;
  }
}

void monitor_main(TaskControl* c) {
  prctl(PR_SET_NAME, "weft_monitor");
  // The default 50 us slack would stretch every tick by a fifth.
  prctl(PR_SET_TIMERSLACK, 1000UL);
  // Every tick used to preempt whatever ran on its CPU: a worker or, on a
  // small machine, the peer the server talks to. Under load that was ~5% of
  // weft-http's samples and doubled the context switches of both it and
  // wrk. At nice 19 CFS's wake-up granularity, scaled by the thread's tiny
  // weight, exceeds any lag a sleeper can build up, so a tick no longer
  // preempts on wake-up: it runs on spare CPU time, or at a scheduler tick
  // once its 1.5% share is due. A worker blocked in a system call leaves
  // its CPU free, so that case is still caught at once. (SCHED_IDLE, with a
  // fifth of that share, stranded fibers for 27 ms (p50) under two CPU hogs,
  // against 3.5 ms here and 0.5 ms at nice 0; RESULTS.md.) Failure keeps the
  // process's priority: slower, never wrong.
  //
  // With more workers than CPUs the workers time-slice the CPUs, and the
  // monitor's rescues are what keeps fibers queued behind a descheduled
  // worker moving; there it keeps the process's priority (a TSan run of
  // 8 workers on 2 CPUs beside another test stalled for 10 minutes at nice
  // 19). Checked each tick, since bthread_setconcurrency can add workers.
  const id_t self = static_cast<id_t>(syscall(SYS_gettid));
  const int process_nice = getpriority(PRIO_PROCESS, self);
  int applied_nice = process_nice;
  const auto apply_priority = [&] {
    const int want = FLAGS_weft_worker_monitor_nice > 0 && !c->cpus_scarce()
                         ? std::max(process_nice, std::min(FLAGS_weft_worker_monitor_nice, 19))
                         : process_nice;
    if (want == applied_nice) return;
    if (setpriority(PRIO_PROCESS, self, want) == 0) {
      applied_nice = want;
    } else if (want > applied_nice) {
      std::fprintf(stderr, "weft: the worker monitor keeps its priority: setpriority(%d) failed\n",
                   want);
      applied_nice = want;  // do not retry every tick
    }
  };
  std::vector<WorkerSample> samples(TaskControl::kMaxWorkers);
  std::vector<bthread_t> stuck_tids;
  bool stall_reported = false;
  for (;;) {
    apply_priority();
    if (c->concurrency() >= 2) {
      const timespec tick = base::ns_to_timespec(kMonitorTickNs);
      nanosleep(&tick, nullptr);
    } else {
      // The lone worker: a slow tick instead of parking with it. Parking
      // would make every unpark of the worker pay a futex wake of this
      // thread on the worker's own CPU (~4% of a pinned echo server's
      // samples), for nothing to do. Acquire pairs with the release bump
      // in workers_added(): seeing the bump, we see the new count.
      const int seen = g_workers_changed.load(std::memory_order_acquire);
      if (c->concurrency() < 2) {
        const timespec tick = base::ns_to_timespec(lone_worker_tick_ns());
        base::futex_wait(&g_workers_changed, seen, &tick);
      }
      if (c->concurrency() < 2) {
        check_lone_worker(c, samples[0], &stall_reported);
        continue;
      }
    }
    if (everyone_parked(c)) {
      sleep_while_everyone_parked(c);
      stall_reported = false;
      continue;
    }
    const int n = c->concurrency();
    const int64_t now = base::monotonic_ns();
    const int64_t stall_ns = static_cast<int64_t>(FLAGS_weft_worker_stall_warn_ms) * 1000000;
    bool stranded = false;
    bool work_queued = c->has_remote();
    bool all_stalled = stall_ns > 0;
    int64_t stalled_for = INT64_MAX;
    stuck_tids.clear();
    for (int i = 0; i < n; ++i) {
      TaskGroup* g = c->group(i);
      if (g == nullptr) {
        all_stalled = false;
        continue;
      }
      const uint64_t switches = g->nswitch.load(std::memory_order_relaxed);
      const size_t nqueued = g->queue_size_hint();
      const bool queued = nqueued != 0 || g->has_runnext();
      work_queued = work_queued || queued;
      WorkerSample& s = samples[static_cast<size_t>(i)];
      // A backlog: fibers queued at two ticks in a row on a worker that
      // runs (its fibers start others without waking anyone, as the
      // messenger's batches do). Two or more, so a lone fiber that keeps
      // yielding to its worker's work (a polling dispatcher) is not one.
      const bool crowded = nqueued >= 2;
      if (crowded && s.crowded) stranded = true;
      s.crowded = crowded;
      if (switches != s.nswitch) {
        s.nswitch = switches;
        s.since_ns = now;
        all_stalled = false;
        continue;
      }
      if (queued) stranded = true;
      const bthread_t tid = g->running_tid.load(std::memory_order_relaxed);
      if (tid == 0 || now - s.since_ns < stall_ns) {
        all_stalled = false;
      } else {
        stuck_tids.push_back(tid);
        if (now - s.since_ns < stalled_for) stalled_for = now - s.since_ns;
      }
    }
    // A searcher will find the fibers itself; otherwise wake one.
    if (stranded && c->nsearching() == 0) c->wake_idle_worker();
    if (all_stalled && work_queued) {
      if (!stall_reported) report_stall(stuck_tids, stalled_for);
      stall_reported = true;
    } else {
      stall_reported = false;
    }
  }
}

}  // namespace

void start_worker_monitor(TaskControl* c) {
  std::thread([c] { monitor_main(c); }).detach();
}

void worker_unparked() {
  if (g_monitor_asleep.load(std::memory_order_seq_cst) != 0 &&
      g_monitor_asleep.exchange(0, std::memory_order_seq_cst) == 1) {
    base::futex_wake(&g_monitor_asleep, 1);
  }
}

void workers_added() {
  g_workers_changed.fetch_add(1, std::memory_order_release);
  base::futex_wake(&g_workers_changed, 1);
}

uint64_t worker_stalls() { return g_stalls.load(std::memory_order_relaxed); }

}  // namespace weft::sched
