// bthread_setconcurrency and bthread_getconcurrency around the runtime's
// start. Each case runs in a forked child, since the runtime starts once per
// process: this program's own process never starts it.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "sched/task_control.h"
#include "weft/bthread.h"

namespace {

// Runs `body` in a child process; returns its exit status (or -1).
template <typename F>
int in_child(F body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

void* noop(void*) { return nullptr; }

TEST(Concurrency, GetconcurrencyDoesNotStartTheRuntime) {
  EXPECT_EQ(in_child([] {
              const int n = bthread_getconcurrency();
              if (n < 1) return 2;
              return weft::sched::TaskControl::get_if_started() == nullptr ? 0 : 1;
            }),
            0);
}

TEST(Concurrency, GetconcurrencyBeforeTheStartReportsTheRequest) {
  EXPECT_EQ(in_child([] {
              if (bthread_setconcurrency(5) != 0) return 2;
              if (bthread_getconcurrency() != 5) return 1;
              bthread_t tid;
              if (bthread_start_background(&tid, nullptr, noop, nullptr) != 0) return 3;
              bthread_join(tid, nullptr);
              return bthread_getconcurrency() == 5 ? 0 : 4;
            }),
            0);
}

// A request made while another thread starts the runtime is never lost: it
// is either used by the start or applied after it.
TEST(Concurrency, SetconcurrencyRacingTheStartIsNeverLost) {
  int lost = 0;
  for (int round = 0; round < 40; ++round) {
    const int status = in_child([] {
      const int target = static_cast<int>(std::thread::hardware_concurrency()) + 3;
      int rc = -1;
      std::thread setter([&] { rc = bthread_setconcurrency(target); });
      bthread_t tid;
      if (bthread_start_background(&tid, nullptr, noop, nullptr) != 0) return 3;
      setter.join();
      bthread_join(tid, nullptr);
      if (rc != 0) return 2;
      return bthread_getconcurrency() == target ? 0 : 1;
    });
    ASSERT_NE(status, -1);
    ASSERT_NE(status, 2);
    ASSERT_NE(status, 3);
    if (status == 1) ++lost;
  }
  EXPECT_EQ(lost, 0) << "requests lost in 40 racing starts";
}

}  // namespace
