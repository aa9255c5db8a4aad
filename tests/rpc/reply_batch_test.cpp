// Replies to the messages of one read leave together (InputMessenger holds
// the connection's right to write while they run: Socket::BeginWriteBatch),
// and the batch never loses, reorders within a writer, or holds back a
// reply. Driven by a raw weft_std client; the server's sendmsg calls are
// counted by interposition.
#include <dlfcn.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "weft/bthread.h"
#include "weft/rpc/server.h"
#include "weft_std_raw_client.h"

DECLARE_bool(weft_batch_replies);

namespace {
std::atomic<bool> g_count_sendmsg{false};
std::atomic<int> g_sendmsg_calls{0};
std::atomic<bool> g_count_readv{false};
std::atomic<int> g_readv_calls{0};
}  // namespace

// IOBuf reads sockets with readv; the raw client uses recv.
extern "C" ssize_t readv(int fd, const struct iovec* iov, int iovcnt) {
  using ReadvFn = ssize_t (*)(int, const struct iovec*, int);
  static const ReadvFn real = reinterpret_cast<ReadvFn>(dlsym(RTLD_NEXT, "readv"));
  if (g_count_readv.load()) g_readv_calls.fetch_add(1);
  return real(fd, iov, iovcnt);
}

// IOBuf writes sockets with sendmsg (MSG_NOSIGNAL); the raw client uses
// send, so every counted call is the server's.
extern "C" ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
  using SendmsgFn = ssize_t (*)(int, const struct msghdr*, int);
  static const SendmsgFn real = reinterpret_cast<SendmsgFn>(dlsym(RTLD_NEXT, "sendmsg"));
  if (g_count_sendmsg.load()) g_sendmsg_calls.fetch_add(1);
  return real(fd, msg, flags);
}

namespace weft::rpc {
namespace {

using test::kLong;
using test::Watchdog;
using test_raw::Frame;
using test_raw::RawClient;
using test_raw::RequestBytes;

using test_raw::Echo;
using test_raw::Sleep;

class ReplyBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = FLAGS_weft_batch_replies;
    ASSERT_EQ(0, server_.AddMethod("echo", Echo));
    ASSERT_EQ(0, server_.AddMethod("sleep", Sleep));
    ASSERT_EQ(0, server_.Start("127.0.0.1:0", nullptr));
  }
  void TearDown() override { FLAGS_weft_batch_replies = saved_; }

  // Sends n echo requests in one send() and reads the n replies, checking
  // each by correlation id. Returns the server's sendmsg calls meanwhile.
  int EchoBurst(RawClient* c, int n) {
    std::string burst;
    for (int i = 0; i < n; ++i) burst += RequestBytes(i, "echo", "payload-" + std::to_string(i));
    g_sendmsg_calls.store(0);
    g_count_sendmsg.store(true);
    EXPECT_TRUE(c->Send(burst));
    std::map<uint64_t, std::string> got;
    for (int i = 0; i < n; ++i) {
      Frame f;
      if (!c->Read(&f)) {
        ADD_FAILURE() << "reply " << i << " of " << n << " never came";
        break;
      }
      got[f.header.correlation_id] = f.payload;
    }
    g_count_sendmsg.store(false);
    EXPECT_EQ(static_cast<size_t>(n), got.size());
    for (int i = 0; i < n; ++i) EXPECT_EQ("payload-" + std::to_string(i), got[i]) << i;
    return g_sendmsg_calls.load();
  }

  Server server_;
  bool saved_ = true;
};

TEST_F(ReplyBatchTest, RepliesToTheMessagesOfOneReadLeaveInFewWrites) {
  Watchdog wd("burst", kLong);
  RawClient c(server_.listen_address());
  ASSERT_TRUE(c.ok());
  // Warm up: the connection picks its protocol.
  ASSERT_EQ(1, EchoBurst(&c, 1) > 0 ? 1 : 0);
  int best = 1 << 30;
  for (int round = 0; round < 5; ++round) best = std::min(best, EchoBurst(&c, 64));
  // One read normally carries the whole burst, and its replies leave in a
  // writev or two; fibers another worker stole and that finished after the
  // batch closed answer alone. Without the batch it is one call per reply.
  EXPECT_LE(best, 16) << "64 replies took " << best << " sendmsg calls";
}

// The counter is real: without the batch the same bursts cost a sendmsg
// per reply on one worker, so the bound above can fail. (With more
// workers, replies written at the same moment merge in KeepWrite anyway,
// by chance, so only the one-worker run can tell.)
TEST_F(ReplyBatchTest, WithoutBatchingEachReplyIsItsOwnWrite) {
  Watchdog wd("burst", kLong);
  FLAGS_weft_batch_replies = false;
  RawClient c(server_.listen_address());
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(1, EchoBurst(&c, 1) > 0 ? 1 : 0);
  int best = 1 << 30;
  for (int round = 0; round < 5; ++round) best = std::min(best, EchoBurst(&c, 64));
  if (bthread_getconcurrency() == 1) {
    EXPECT_GT(best, 16);
  }
}

// A handler that waits does not hold the batch: the fast replies of the
// same read arrive long before the slow one.
TEST_F(ReplyBatchTest, ASlowHandlerDoesNotHoldBackTheOtherReplies) {
  Watchdog wd("slow", kLong);
  RawClient c(server_.listen_address());
  ASSERT_TRUE(c.ok());
  std::string burst = RequestBytes(1000, "sleep", std::to_string(2000 * test::kTimeScale));
  for (int i = 0; i < 20; ++i) burst += RequestBytes(i, "echo", std::to_string(i));
  const int64_t t0 = test::now_ms();
  ASSERT_TRUE(c.Send(burst));
  for (int i = 0; i < 20; ++i) {
    Frame f;
    ASSERT_TRUE(c.Read(&f, 1500 * test::kTimeScale)) << "fast reply " << i << " held back";
    EXPECT_NE(1000u, f.header.correlation_id);
  }
  EXPECT_LT(test::now_ms() - t0, 1500 * test::kTimeScale);
  Frame slow;
  ASSERT_TRUE(c.Read(&slow));
  EXPECT_EQ(1000u, slow.header.correlation_id);
  EXPECT_EQ(std::to_string(2000 * test::kTimeScale), slow.payload);
}

// Replies bigger than the socket buffers: the batch's writev writes part,
// KeepWrite the rest, every byte in order.
TEST_F(ReplyBatchTest, RepliesLargerThanTheSocketBufferArriveWhole) {
  Watchdog wd("large", kLong);
  RawClient c(server_.listen_address());
  ASSERT_TRUE(c.ok());
  constexpr int kN = 8;
  std::vector<std::string> payloads;
  std::string burst;
  for (int i = 0; i < kN; ++i) {
    payloads.push_back(std::string(1 << 20, static_cast<char>('a' + i)));
    burst += RequestBytes(i, "echo", payloads.back());
  }
  // Sent from another thread: the server's replies fill our receive buffer
  // while the requests are still going out.
  std::thread sender([&] { EXPECT_TRUE(c.Send(burst)); });
  std::map<uint64_t, std::string> got;
  for (int i = 0; i < kN; ++i) {
    Frame f;
    if (!c.Read(&f)) {
      ADD_FAILURE() << "large reply " << i << " never came";
      break;
    }
    got[f.header.correlation_id] = std::move(f.payload);
  }
  sender.join();
  ASSERT_EQ(static_cast<size_t>(kN), got.size());
  for (int i = 0; i < kN; ++i) EXPECT_TRUE(got[i] == payloads[i]) << "reply " << i << " differs";
}

// A peer that sends a burst and half-closes gets every reply before the
// close: the graceful close queues behind the batch's replies.
TEST_F(ReplyBatchTest, EveryReplyOfABurstBeforeAHalfCloseArrives) {
  Watchdog wd("half-close", kLong);
  for (int round = 0; round < 20; ++round) {
    RawClient c(server_.listen_address());
    ASSERT_TRUE(c.ok());
    std::string burst;
    for (int i = 0; i < 32; ++i) burst += RequestBytes(i, "echo", std::to_string(i));
    ASSERT_TRUE(c.Send(burst));
    ASSERT_EQ(0, shutdown(c.fd(), SHUT_WR));
    std::map<uint64_t, std::string> got;
    for (int i = 0; i < 32; ++i) {
      Frame f;
      if (!c.Read(&f)) {
        ADD_FAILURE() << "round " << round << ": reply " << i << " lost to the close";
        break;
      }
      got[f.header.correlation_id] = f.payload;
    }
    EXPECT_EQ(32u, got.size());
    EXPECT_TRUE(c.ClosedByPeer());
  }
}

// A request-response connection costs one readv per request: a read that
// returned less than it asked for emptied the socket, so the messenger
// does not read again only to hear EAGAIN (the next bytes bring an event).
TEST_F(ReplyBatchTest, EachRoundTripCostsOneRead) {
  Watchdog wd("round trips", kLong);
  RawClient c(server_.listen_address());
  ASSERT_TRUE(c.ok());
  Frame f;
  ASSERT_TRUE(c.Call(0, "echo", "warm") && c.Read(&f));
  constexpr int kN = 200;
  g_readv_calls.store(0);
  g_count_readv.store(true);
  for (int i = 1; i <= kN; ++i) {
    ASSERT_TRUE(c.Call(i, "echo", "x"));
    ASSERT_TRUE(c.Read(&f));
    ASSERT_EQ(static_cast<uint64_t>(i), f.header.correlation_id);
  }
  g_count_readv.store(false);
  // Before: a second readv (EAGAIN) after every request, 2 * kN.
  EXPECT_LT(g_readv_calls.load(), kN * 5 / 4) << g_readv_calls.load() << " readv for " << kN;
}

// A peer that writes and closes at once: the close is already queued when
// the data's read comes back short, so the reader must still go on to the
// EOF (the event said so: EPOLLRDHUP), not wait for another event.
TEST_F(ReplyBatchTest, DataAndCloseInOneGoAreBothSeen) {
  Watchdog wd("data and close", kLong);
  for (int round = 0; round < 50; ++round) {
    RawClient c(server_.listen_address());
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c.Send(RequestBytes(round, "echo", "bye")));
    ASSERT_EQ(0, shutdown(c.fd(), SHUT_WR));
    Frame f;
    ASSERT_TRUE(c.Read(&f)) << "round " << round;
    EXPECT_EQ("bye", f.payload);
    ASSERT_TRUE(c.ClosedByPeer(3000 * test::kTimeScale)) << "round " << round << ": EOF missed";
  }
}

}  // namespace
}  // namespace weft::rpc
