// ReplyOrderer: replies answered in any order, from many threads, leave in
// request order; close_after drops the later ones.
#include "weft/rpc/reply_orderer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "net_test_util.h"

namespace weft::rpc {
namespace {

using test::kTimeScale;

std::string record(uint64_t i) { return "<" + std::to_string(i) + ">"; }

TEST(ReplyOrdererTest, RepliesFromManyThreadsInAnyOrderLeaveInRequestOrder) {
  test::Watchdog dog("orderer", test::kLong);
  int a = -1, b = -1;
  ASSERT_TRUE(test::make_tcp_pair(&a, &b));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(a, &id, &s));
  ReplyOrderer orderer;
  const uint64_t n = 20000 / kTimeScale;
  std::vector<uint64_t> seqs;
  for (uint64_t i = 0; i < n; ++i) seqs.push_back(orderer.NextSequence());
  std::shuffle(seqs.begin(), seqs.end(), std::mt19937(42));
  std::string expected;
  for (uint64_t i = 0; i < n; ++i) expected += record(i);
  std::string got;
  std::thread reader([&] { got = test::read_until(b, expected.size(), 20000 * kTimeScale); });
  const int kThreads = 8;
  std::vector<std::thread> repliers;
  for (int t = 0; t < kThreads; ++t) {
    repliers.emplace_back([&, t] {
      for (size_t k = static_cast<size_t>(t); k < seqs.size(); k += kThreads) {
        IOBuf data;
        data.append(record(seqs[k]));
        EXPECT_EQ(0, orderer.Reply(s.get(), seqs[k], &data));
      }
    });
  }
  for (auto& t : repliers) t.join();
  reader.join();
  EXPECT_EQ(0u, orderer.held());
  EXPECT_EQ(expected.size(), got.size());
  EXPECT_TRUE(expected == got) << "replies out of order";
  s->SetFailed();
  close(b);
}

TEST(ReplyOrdererTest, AnEmptyReplyLetsTheNextGoAndCloseAfterDropsLaterOnes) {
  test::Watchdog dog("orderer close", test::kLong);
  int a = -1, b = -1;
  ASSERT_TRUE(test::make_tcp_pair(&a, &b));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(a, &id, &s));
  ReplyOrderer orderer;
  for (int i = 0; i < 5; ++i) orderer.NextSequence();
  IOBuf d;
  d.append("3");
  EXPECT_EQ(0, orderer.Reply(s.get(), 3, &d));  // held
  d.append("4");
  EXPECT_EQ(0, orderer.Reply(s.get(), 4, &d));  // held
  d.append("2");
  EXPECT_EQ(0, orderer.Reply(s.get(), 2, &d, /*close_after=*/true));
  EXPECT_EQ(3u, orderer.held());
  IOBuf empty;
  EXPECT_EQ(0, orderer.Reply(s.get(), 1, &empty));  // nothing, still held
  d.append("0");
  EXPECT_EQ(0, orderer.Reply(s.get(), 0, &d));
  EXPECT_EQ(0u, orderer.held());
  // 0, (1 empty), 2, then the close: 3 and 4 are dropped.
  EXPECT_EQ("02", test::read_until(b, SIZE_MAX, 5000 * kTimeScale));
  EXPECT_TRUE(s->closing() || s->Failed());
  d.append("5");
  errno = 0;
  EXPECT_EQ(-1, orderer.Reply(s.get(), 5, &d));
  EXPECT_EQ(ESHUTDOWN, errno);
  close(b);
}

}  // namespace
}  // namespace weft::rpc
