// --weft_search_yield_every: an idle worker looking for work to steal
// gives its CPU away (sched_yield) between steal rounds at the rate the
// flag sets, so a process sharing the CPUs gets them while weft searches.
// The searches' calls are counted next to the call
// (TaskControl::search_yields). Each case runs in a forked child, since
// the runtime starts once per process.
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include "sched/task_control.h"
#include "test_util.h"
#include "weft/bthread.h"

DECLARE_int32(weft_concurrency);
DECLARE_int32(weft_search_yield_every);

namespace {

using weft::test::in_child;

void* noop(void*) { return nullptr; }

// The searches' sched_yield calls in 200 start-join cycles from a pthread:
// each wakes a parked worker, which runs the fiber, then searches, finds
// nothing and parks again, so every cycle holds one search at least. Exit status: 0 when
// `ok(yields)`, 1 when not, 2 when a start failed.
template <typename Ok>
int yields_of_start_join_cycles(int every, Ok ok) {
  return in_child([every, ok] {
    FLAGS_weft_concurrency = 2;
    FLAGS_weft_search_yield_every = every;
    bthread_t tid;
    if (bthread_start_background(&tid, nullptr, noop, nullptr) != 0) return 2;
    bthread_join(tid, nullptr);
    weft::sched::TaskControl* const c = weft::sched::TaskControl::get_if_started();
    if (c == nullptr) return 2;
    const uint64_t before = c->search_yields();
    for (int i = 0; i < 200; ++i) {
      if (bthread_start_background(&tid, nullptr, noop, nullptr) != 0) return 2;
      bthread_join(tid, nullptr);
      usleep(100);  // the search (20 us) ends before the next start
    }
    const long yields = static_cast<long>(c->search_yields() - before);
    fprintf(stderr, "--weft_search_yield_every=%d: %ld sched_yield calls\n", every, yields);
    return ok(yields) ? 0 : 1;
  });
}

bool process_has_two_cpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  return sched_getaffinity(0, sizeof(mask), &mask) == 0 && CPU_COUNT(&mask) >= 2;
}

TEST(SearchYield, EveryRoundYieldsWhenTheFlagIsOne) {
  // At 1 the first steal round of every search yields: one per cycle at
  // least (most searches run several rounds).
  EXPECT_EQ(yields_of_start_join_cycles(1, [](long yields) { return yields >= 200; }), 0);
}

TEST(SearchYield, ZeroNeverYieldsWhileTheCpusSuffice) {
  if (!process_has_two_cpus()) GTEST_SKIP() << "one CPU: workers outnumber it, so they yield";
  EXPECT_EQ(yields_of_start_join_cycles(0, [](long yields) { return yields == 0; }), 0);
}

TEST(SearchYield, TheDefaultYieldsOncePerSearchThatFindsNothing) {
  // The default (8): rounds 7, 15, ... yield. A search that finds nothing
  // runs 8 rounds at least (its give-up check comes every 8th round, after
  // the yield), so each cycle's search yields once or more, however slow
  // its rounds; half the cycles leaves room for searches a start cut short.
  const int every = FLAGS_weft_search_yield_every;
  ASSERT_GT(every, 1) << "the default is meant to yield now and then, not every round";
  EXPECT_EQ(yields_of_start_join_cycles(every, [](long yields) { return yields >= 100; }), 0);
}

}  // namespace
