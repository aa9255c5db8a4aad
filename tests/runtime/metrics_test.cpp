// Metrics: exact counter sums under concurrent writers, latency statistics
// against a known distribution, and the two dump formats.
#include <gtest/gtest.h>
#include <weft/bthread.h>
#include <weft/metrics.h>

#include <sstream>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

TEST(MetricsTest, CounterSumsExactlyUnderEightWritersIncludingExitedThreads) {
  weft::Counter c("test_counter_sum");
  const int per = 200000 / weft::test::kScale;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < per; ++i) c << 1;
    });
  }
  struct Arg {
    weft::Counter* c;
    int per;
  } arg{&c, per};
  std::vector<bthread_t> tids(4);
  for (auto& tid : tids) {
    ASSERT_EQ(0, bthread_start_background(
                     &tid, nullptr,
                     [](void* a) -> void* {
                       auto* p = static_cast<Arg*>(a);
                       for (int i = 0; i < p->per; ++i) {
                         p->c->add(2);
                         if (i % 1000 == 0) bthread_yield();  // migrate between workers
                       }
                       return nullptr;
                     },
                     &arg));
  }
  for (auto& tid : tids) ASSERT_EQ(0, bthread_join(tid, nullptr));
  for (auto& t : threads) t.join();  // their cells fold into the retired sum
  EXPECT_EQ(4LL * per + 4LL * 2 * per, c.value());
}

TEST(MetricsTest, ACounterIdReusedAfterDestructionStartsAtZero) {
  {
    weft::Counter c("test_counter_reuse");
    c.add(100);
    std::thread([&] { c.add(5); }).join();
    EXPECT_EQ(105, c.value());
  }
  weft::Counter fresh("test_counter_reuse2");
  EXPECT_EQ(0, fresh.value());
}

TEST(MetricsTest, GaugeKeepsTheLastValue) {
  weft::Gauge g("test_gauge");
  g.set(7);
  g.set(-3);
  EXPECT_EQ(-3, g.value());
}

TEST(MetricsTest, LatencyRecorderStatistics) {
  weft::LatencyRecorder lat("test_latency");
  EXPECT_EQ(0, lat.count());
  EXPECT_EQ(0, lat.percentile(0.5));
  for (int i = 1; i <= 1000; ++i) lat.record(i);
  EXPECT_EQ(1000, lat.count());
  EXPECT_EQ(500, lat.average());
  EXPECT_EQ(1000, lat.max());
  // Log-linear buckets: within ~13% of the exact order statistic.
  EXPECT_NEAR(500, lat.percentile(0.5), 65);
  EXPECT_NEAR(900, lat.percentile(0.9), 117);
  EXPECT_NEAR(990, lat.percentile(0.99), 129);
  EXPECT_LE(lat.percentile(0.999), 1000);
}

// record(us, n) weighs as n calls of record(us): a batch of calls recorded
// at once counts every call (count, average and percentiles).
TEST(MetricsTest, AWeightedRecordCountsAsThatManySamples) {
  weft::LatencyRecorder lat("test_latency_weighted");
  lat.record(100, 9);
  lat.record(1000);
  lat.record(5, 0);  // nothing
  EXPECT_EQ(10, lat.count());
  EXPECT_EQ(190, lat.average());
  EXPECT_EQ(1000, lat.max());
  EXPECT_NEAR(100, lat.percentile(0.5), 13);
  EXPECT_NEAR(100, lat.percentile(0.9), 13);
  EXPECT_NEAR(1000, lat.percentile(0.99), 130);
}

TEST(MetricsTest, DumpIsSortedAndHasTheRuntimeMetrics) {
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, [](void*) -> void* { return nullptr; },
                                        nullptr));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  weft::Counter c("test_dump_counter");
  c.add(3);
  std::ostringstream os;
  weft::dump_metrics(os);
  const std::string text = os.str();
  for (const char* name :
       {"weft_workers : ", "weft_fibers_alive : ", "weft_fibers_created : ",
        "weft_context_switches : ", "weft_steals : ", "weft_worker_parks : ",
        "weft_timers_pending : ", "weft_timers_fired : ", "test_dump_counter : 3"}) {
    EXPECT_NE(std::string::npos, text.find(name)) << name << "\n" << text;
  }
  std::istringstream lines(text);
  std::string line, prev;
  while (std::getline(lines, line)) {
    EXPECT_LE(prev, line);
    prev = line;
  }
  EXPECT_NE(std::string::npos, text.find("weft_workers : " + std::to_string(bthread_getconcurrency())));
  std::ostringstream prom;
  weft::dump_metrics_prometheus(prom);
  EXPECT_NE(std::string::npos, prom.str().find("# TYPE test_dump_counter counter\ntest_dump_counter 3\n"));
  EXPECT_NE(std::string::npos, prom.str().find("# TYPE weft_fibers_alive gauge\n"));
}

}  // namespace
