// --weft_search_yield_every: an idle worker looking for work to steal
// gives its CPU away (sched_yield) between steal rounds at the rate the
// flag sets, so a process sharing the CPUs gets them while weft searches.
// This program defines sched_yield itself (the runtime's calls resolve to
// it) to count the calls. Each case runs in a forked child, since the
// runtime starts once per process.
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

#include "test_util.h"
#include "weft/bthread.h"

DECLARE_int32(weft_concurrency);
DECLARE_int32(weft_search_yield_every);

namespace {
std::atomic<long> g_sched_yields{0};
}  // namespace

extern "C" int sched_yield() noexcept {
  g_sched_yields.fetch_add(1, std::memory_order_relaxed);
  return static_cast<int>(syscall(SYS_sched_yield));
}

namespace {

using weft::test::in_child;

void* noop(void*) { return nullptr; }

// The sched_yield calls of 200 start-join cycles from a pthread: each
// wakes a parked worker, which runs the fiber, then searches (and parks
// again), so every cycle holds at least one search. Exit status: 0 when
// `ok(yields)`, 1 when not, 2 when a start failed.
template <typename Ok>
int yields_of_start_join_cycles(int every, Ok ok) {
  return in_child([every, ok] {
    FLAGS_weft_concurrency = 2;
    FLAGS_weft_search_yield_every = every;
    bthread_t tid;
    if (bthread_start_background(&tid, nullptr, noop, nullptr) != 0) return 2;
    bthread_join(tid, nullptr);
    g_sched_yields.store(0);
    for (int i = 0; i < 200; ++i) {
      if (bthread_start_background(&tid, nullptr, noop, nullptr) != 0) return 2;
      bthread_join(tid, nullptr);
      usleep(100);  // the search (20 us) ends before the next start
    }
    const long yields = g_sched_yields.load();
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
  // Fewer yields than cycles: at 1 every search yields at least once (one
  // per cycle or more, thousands in practice), at 0 none does. The other
  // callers (a spin lock's or a butex wait's fallback after 64 pauses,
  // dozens of times under a sanitizer) make up the rest.
  EXPECT_EQ(yields_of_start_join_cycles(0, [](long yields) { return yields < 200; }), 0);
}

TEST(SearchYield, TheDefaultYieldsDuringSearches) {
  // The default (8): a search that runs 8 rounds or more yields once per
  // 8; most of 200 do (a round is ~32 pauses, the search 20 us).
  const int every = FLAGS_weft_search_yield_every;
  ASSERT_GT(every, 1) << "the default is meant to yield now and then, not every round";
  EXPECT_EQ(yields_of_start_join_cycles(every, [](long yields) { return yields >= 1; }), 0);
}

}  // namespace
