// WrittenIdSet: a socket's written-but-unanswered ids. Every id is held
// until removed, however many come and go (tombstones, growth, rehashes),
// and Close hands each held id out exactly once while later adds refuse.
#include "written_id_set.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <vector>

namespace weft::net_internal {
namespace {

// Shaped like bthread_id values: a version above a slot index.
uint64_t id_of(uint32_t slot, uint32_t version = 1) {
  return (static_cast<uint64_t>(version) << 32) | slot;
}

TEST(WrittenIdSetTest, HoldsEveryAddedIdUntilRemovedThroughGrowthAndChurn) {
  WrittenIdSet set;
  std::set<uint64_t> model;
  // Sliding windows of 1..700 ids in flight: grows past the inline array,
  // fills with tombstones, rehashes in place and larger.
  uint32_t next = 0;
  for (int round = 0; round < 40; ++round) {
    const uint32_t window = 1 + static_cast<uint32_t>(round * round) % 700;
    while (model.size() < window) {
      const uint64_t id = id_of(next++, 3 + 4 * static_cast<uint32_t>(round));
      ASSERT_TRUE(set.Add(id));
      model.insert(id);
    }
    for (int i = 0; i < 50 && !model.empty(); ++i) {
      // Oldest first, as replies mostly come.
      set.Remove(*model.begin());
      model.erase(model.begin());
      const uint64_t id = id_of(next++, 5);
      ASSERT_TRUE(set.Add(id));
      model.insert(id);
    }
    ASSERT_EQ(model.size(), set.size());
  }
  // Adding twice keeps one; removing an absent id does nothing.
  ASSERT_TRUE(set.Add(*model.begin()));
  set.Remove(id_of(0xfffffff0u, 7));
  EXPECT_EQ(model.size(), set.size());
  std::vector<uint64_t> out;
  set.Close(&out);
  std::sort(out.begin(), out.end());
  EXPECT_EQ(std::vector<uint64_t>(model.begin(), model.end()), out);
  EXPECT_EQ(0u, set.size());
  EXPECT_FALSE(set.Add(id_of(1)));
  std::vector<uint64_t> again;
  set.Close(&again);
  EXPECT_TRUE(again.empty());
  set.Reset();
  EXPECT_TRUE(set.Add(id_of(1)));
  EXPECT_EQ(1u, set.size());
}

// Adders and removers race one Close: each id an adder got in is either
// removed by its owner or handed out by Close, and an id refused to its
// adder is never handed out.
TEST(WrittenIdSetTest, CloseHandsOutEachHeldIdOnceAndLaterAddsRefuse) {
  for (int rep = 0; rep < 20; ++rep) {
    WrittenIdSet set;
    constexpr int kThreads = 4;
    constexpr uint32_t kPerThread = 2000;
    std::atomic<bool> go{false};
    std::vector<std::vector<uint64_t>> kept(kThreads), refused(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        while (!go.load(std::memory_order_acquire)) {
        }
        for (uint32_t i = 0; i < kPerThread; ++i) {
          const uint64_t id = id_of(static_cast<uint32_t>(t) * kPerThread + i);
          if (!set.Add(id)) {
            refused[t].push_back(id);
            continue;
          }
          // Every other id is answered (removed); the rest stay.
          if (i % 2 == 0) {
            set.Remove(id);
          } else {
            kept[t].push_back(id);
          }
        }
      });
    }
    go.store(true, std::memory_order_release);
    std::vector<uint64_t> out;
    while (set.size() < 100) std::this_thread::yield();
    set.Close(&out);
    for (std::thread& th : threads) th.join();
    std::set<uint64_t> handed(out.begin(), out.end());
    ASSERT_EQ(out.size(), handed.size()) << "an id handed out twice";
    size_t kept_total = 0;
    for (int t = 0; t < kThreads; ++t) {
      kept_total += kept[t].size();
      for (uint64_t id : refused[t]) ASSERT_EQ(0u, handed.count(id));
      // A kept id got in before the Close (later adds refuse) and was never
      // removed: Close handed it out.
      for (uint64_t id : kept[t]) ASSERT_EQ(1u, handed.count(id));
    }
    // Removed ids may have been handed out too (removed after the Close);
    // never more than were added.
    EXPECT_GE(out.size(), kept_total);
    EXPECT_EQ(0u, set.size());
  }
}

}  // namespace
}  // namespace weft::net_internal
