// Each fiber has its own errno, carried across every switch and migration.
#include <errno.h>
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "base/compiler.h"
#include "weft/bthread.h"

namespace {

// errno read after a suspension goes through the runtime's opaque accessor:
// glibc's __errno_location() is const, and a compiler may reuse the
// address it computed before the fiber moved to another pthread.
int fiber_errno() { return *weft::base::errno_location(); }

void* set_erange(void* arg) {
  *static_cast<int*>(arg) = fiber_errno();  // what a new fiber starts with
  errno = ERANGE;
  return nullptr;
}

void* yield_keeps_errno(void* arg) {
  auto* seen = static_cast<int*>(arg);
  errno = EDOM;
  int other_started_with = -1;
  bthread_t other;
  EXPECT_EQ(bthread_start_background(&other, nullptr, set_erange, &other_started_with), 0);
  // On one worker the other fiber runs here and sets ERANGE on this pthread.
  bthread_yield();
  seen[0] = fiber_errno();
  bthread_join(other, nullptr);
  seen[1] = other_started_with;
  return nullptr;
}

TEST(FiberErrno, IsTheFibersOwnAcrossASwitch) {
  int seen[2] = {-1, -1};
  bthread_t tid;
  ASSERT_EQ(bthread_start_background(&tid, nullptr, yield_keeps_errno, seen), 0);
  ASSERT_EQ(bthread_join(tid, nullptr), 0);
  EXPECT_EQ(seen[0], EDOM);
  EXPECT_EQ(seen[1], 0) << "a new fiber starts with errno 0";
}

struct Churn {
  std::atomic<bool> stop{false};
  std::atomic<int> mismatches{0};
};

// Each fiber owns one errno value and checks it after every sleep, while
// the others (on every worker) set theirs: a value that leaked from another
// fiber, or from the pthread the fiber last ran on, is a mismatch.
void* own_errno_loop(void* arg) {
  auto* c = static_cast<Churn*>(arg);
  const int mine = 1000 + static_cast<int>(bthread_self() & 0xffff);
  for (int i = 0; i < 200 && !c->stop.load(); ++i) {
    errno = mine;
    bthread_usleep(i % 3 == 0 ? 0 : 50);
    if (fiber_errno() != mine) c->mismatches.fetch_add(1);
  }
  return nullptr;
}

TEST(FiberErrno, SurvivesSleepsAndMigrations) {
  Churn c;
  std::vector<bthread_t> tids(32);
  for (auto& tid : tids) ASSERT_EQ(bthread_start_background(&tid, nullptr, own_errno_loop, &c), 0);
  for (bthread_t tid : tids) bthread_join(tid, nullptr);
  EXPECT_EQ(c.mismatches.load(), 0);
}

}  // namespace
