// The worker monitor's scheduling policy: SCHED_IDLE by default, so its
// ticks never preempt a worker or a peer process; the normal policy when
// --weft_worker_monitor_sched_idle=false. Each case starts a runtime in a
// forked child (the monitor starts once, with the runtime).
#include <dirent.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <stdlib.h>

#include <fstream>
#include <string>

#include "test_util.h"
#include "weft/bthread.h"

DECLARE_bool(weft_worker_monitor_sched_idle);

namespace {

void* noop(void*) { return nullptr; }

// The policy of this process's thread named `name`, or -1 if none is.
int policy_of_thread(const std::string& name) {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int policy = -1;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string line;
    std::getline(comm, line);
    if (line == name) {
      policy = sched_getscheduler(atoi(e->d_name));
      break;
    }
  }
  closedir(dir);
  return policy;
}

// Starts the runtime (two workers, so the monitor ticks) and reports the
// monitor's policy once it has set it: 0 when it is `want`.
int monitor_policy_is(int want) {
  bthread_setconcurrency(2);
  bthread_t tid;
  if (bthread_start_background(&tid, nullptr, noop, nullptr) != 0) return 2;
  bthread_join(tid, nullptr);
  // The monitor names itself, then sets its policy: wait for both.
  const bool seen = weft::test::wait_until(
      [&] { return policy_of_thread("weft_monitor") == want; }, std::chrono::milliseconds(5000));
  return seen ? 0 : 1;
}

TEST(WorkerMonitor, RunsUnderSchedIdleByDefault) {
  EXPECT_EQ(weft::test::in_child([] { return monitor_policy_is(SCHED_IDLE); }), 0);
}

TEST(WorkerMonitor, KeepsTheNormalPolicyWhenTheFlagIsOff) {
  EXPECT_EQ(weft::test::in_child([] {
              FLAGS_weft_worker_monitor_sched_idle = false;
              return monitor_policy_is(SCHED_OTHER);
            }),
            0);
}

}  // namespace
