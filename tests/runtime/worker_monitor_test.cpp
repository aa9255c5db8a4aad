// The worker monitor's priority: nice 19 by default, so its ticks never
// preempt a worker or a peer process on wake-up; the process's own with
// --weft_worker_monitor_nice=0 or with more workers than CPUs. Each case starts a runtime in a
// forked child (the monitor starts once, with the runtime).
#include <dirent.h>
#include <errno.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "test_util.h"
#include "weft/bthread.h"

DECLARE_int32(weft_worker_monitor_nice);

namespace {

void* noop(void*) { return nullptr; }

// The nice value of this process's thread named `name`; false if none is.
bool nice_of_thread(const std::string& name, int* nice) {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return false;
  bool found = false;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string line;
    std::getline(comm, line);
    if (line == name) {
      errno = 0;
      *nice = getpriority(PRIO_PROCESS, static_cast<id_t>(atoi(e->d_name)));
      found = errno == 0;
      break;
    }
  }
  closedir(dir);
  return found;
}

int affinity_cpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  return sched_getaffinity(0, sizeof(mask), &mask) == 0 ? CPU_COUNT(&mask) : 1;
}

// Starts the runtime with `workers` workers and waits for the monitor to
// have named itself and set its priority: 0 when it is `want`.
int monitor_nice_is(int want, int workers = affinity_cpus()) {
  bthread_setconcurrency(workers);
  bthread_t tid;
  if (bthread_start_background(&tid, nullptr, noop, nullptr) != 0) return 2;
  bthread_join(tid, nullptr);
  const bool seen = weft::test::wait_until(
      [&] {
        int nice = 0;
        return nice_of_thread("weft_monitor", &nice) && nice == want;
      },
      std::chrono::milliseconds(5000));
  return seen ? 0 : 1;
}

TEST(WorkerMonitor, RunsAtNice19ByDefault) {
  EXPECT_EQ(weft::test::in_child([] { return monitor_nice_is(19); }), 0);
}

TEST(WorkerMonitor, RunsAtTheNiceValueTheFlagSays) {
  EXPECT_EQ(weft::test::in_child([] {
              FLAGS_weft_worker_monitor_nice = 7;
              return monitor_nice_is(7);
            }),
            0);
}

// More workers than CPUs: they time-slice, and the monitor's rescues keep
// queued fibers moving, so it keeps the process's priority.
TEST(WorkerMonitor, KeepsTheProcessPriorityWithMoreWorkersThanCpus) {
  EXPECT_EQ(weft::test::in_child([] {
              const int process_nice = getpriority(PRIO_PROCESS, 0);
              if (monitor_nice_is(process_nice, affinity_cpus() + 1) != 0) return 1;
              usleep(200 * 1000);  // past the point where it would lower itself
              return monitor_nice_is(process_nice, affinity_cpus() + 1);
            }),
            0);
}

TEST(WorkerMonitor, KeepsTheProcessPriorityWhenTheFlagIsZero) {
  EXPECT_EQ(weft::test::in_child([] {
              FLAGS_weft_worker_monitor_nice = 0;
              const int process_nice = getpriority(PRIO_PROCESS, 0);
              if (monitor_nice_is(process_nice) != 0) return 1;
              // It names itself before it would set its priority: look again
              // once it has surely passed that point.
              usleep(200 * 1000);
              return monitor_nice_is(process_nice);
            }),
            0);
}

}  // namespace
