// The Server's accounting of a redis batch (the pipelined commands of one
// read run under one CallBatch, weft/rpc/server.h): the per-method metrics
// still count every command, and count it before its reply can be read; a
// graceful stop waits for the whole batch and answers every command it
// accepted; max_concurrency refuses another connection's commands while a
// batch holds the slot, never the commands of the batch itself.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <sstream>
#include <string>
#include <thread>

#include "net_test_util.h"
#include "redis_commands.h"
#include "redis_store.h"
#include "weft/metrics.h"
#include "weft/rpc/redis.h"
#include "weft/rpc/server.h"

namespace weft::redis_tool {
namespace {

using test::kTimeScale;

// The text dump_metrics gives for `name` ("" when absent).
std::string MetricText(const std::string& name) {
  std::ostringstream os;
  dump_metrics(os);
  std::istringstream lines(os.str());
  std::string line;
  const std::string prefix = name + " : ";
  while (std::getline(lines, line)) {
    if (line.compare(0, prefix.size(), prefix) == 0) return line.substr(prefix.size());
  }
  return "";
}

class RedisBatchAccountingTest : public ::testing::Test {
 protected:
  // Starts the server with the redis commands, "fail" (appends, then
  // fails its call: the protocol answers -ERR alone), "mute" (appends
  // nothing: answered an error, not skipped) and "block" (suspends its fiber until
  // release_, then answers +UNBLOCKED; entered_ counts its entries).
  void StartServer(int max_concurrency) {
    ASSERT_EQ(0, AddRedisCommands(&server_, &store_, &info_));
    ASSERT_EQ(0, server_.AddMethod("fail", [](rpc::Controller* cntl, const IOBuf&, IOBuf* response,
                                              rpc::Closure done) {
      // Appended, then failed: the error alone is the reply.
      rpc::redis::AppendStatus(response, "PARTIAL");
      cntl->SetFailed(EINVAL, "failed on purpose");
      done();
    }));
    ASSERT_EQ(0, server_.AddMethod("mute", [](rpc::Controller*, const IOBuf&, IOBuf*,
                                              rpc::Closure done) { done(); }));
    ASSERT_EQ(0, server_.AddMethod("block", [this](rpc::Controller*, const IOBuf&, IOBuf* response,
                                                   rpc::Closure done) {
      entered_.fetch_add(1, std::memory_order_acq_rel);
      for (int i = 0; i < 20000 && !release_.load(std::memory_order_acquire); ++i) {
        bthread_usleep(1000);
      }
      rpc::redis::AppendStatus(response, "UNBLOCKED");
      done();
    }));
    rpc::ServerOptions opt;
    opt.protocols = {"redis"};
    opt.max_concurrency = max_concurrency;
    ASSERT_EQ(0, server_.Start("127.0.0.1:0", &opt));
    prefix_ = "weft_rpc_server_" + std::to_string(server_.listen_address().port()) + "_";
  }
  void TearDown() override {
    release_.store(true, std::memory_order_release);
    server_.Stop();
    server_.Join();
  }
  int Connect() {
    const int fd = test::connect_to(server_.listen_address());
    EXPECT_GE(fd, 0);
    return fd;
  }
  static void Send(int fd, const std::string& s) { ASSERT_TRUE(test::send_all(fd, s)); }
  static std::string Read(int fd, size_t n) { return test::read_until(fd, n, 10000 * kTimeScale); }
  bool WaitEntered(int n) {
    for (int i = 0; i < 10000 * kTimeScale; ++i) {
      if (entered_.load(std::memory_order_acquire) >= n) return true;
      usleep(1000);
    }
    return false;
  }
  std::string Metric(const std::string& method, const char* what) {
    return MetricText(prefix_ + method + "_" + what);
  }

  RedisStore store_;
  ServerInfo info_;
  rpc::Server server_;
  std::string prefix_;
  std::atomic<bool> release_{false};
  std::atomic<int> entered_{0};
};

// A batch's metrics are recorded once, but weigh every command: counts,
// errors and the latency recorder's count are per command; and they are in
// before the batch's replies are written (read right after the reply).
// Methods append to the batch's replies directly: a failed one's output is
// cut back to its error, an empty one is answered an error in its place.
TEST_F(RedisBatchAccountingTest, PerMethodCountsCountEveryCommandOfAPipelinedBatch) {
  test::Watchdog dog("redis batch counts", test::kLong);
  StartServer(0);
  const int fd = Connect();
  std::string request, reply;
  for (int round = 1; round <= 20; ++round) {
    request.clear();
    reply.clear();
    for (int i = 0; i < 16; ++i) {
      request += "PING\r\n";
      reply += "+PONG\r\n";
    }
    request += "SET k v\r\nGET k\r\nFAIL\r\nNOPE\r\nGET k\r\nFAIL\r\nMUTE\r\nPING\r\n";
    reply += "+OK\r\n$1\r\nv\r\n-ERR failed on purpose\r\n";
    reply += "-ERR unknown command 'NOPE', with args beginning with: \r\n";
    reply += "$1\r\nv\r\n-ERR failed on purpose\r\n";
    reply += "-ERR the command produced no reply\r\n+PONG\r\n";
    Send(fd, request);
    ASSERT_EQ(reply, Read(fd, reply.size())) << round;
    // No wait: the counts are recorded before the replies are written.
    EXPECT_EQ(std::to_string(17 * round), Metric("ping", "count")) << round;
    EXPECT_EQ(std::to_string(round), Metric("set", "count")) << round;
    EXPECT_EQ(std::to_string(2 * round), Metric("get", "count")) << round;
    EXPECT_EQ("0", Metric("get", "errors")) << round;
    EXPECT_EQ(std::to_string(2 * round), Metric("fail", "count")) << round;
    EXPECT_EQ(std::to_string(2 * round), Metric("fail", "errors")) << round;
    // The latency recorder counts successful commands (one sample each,
    // though recorded at once per batch); a failed one records none.
    EXPECT_EQ(0u, Metric("ping", "latency").rfind("count=" + std::to_string(17 * round) + " ", 0))
        << round << ": " << Metric("ping", "latency");
    EXPECT_EQ(0u, Metric("get", "latency").rfind("count=" + std::to_string(2 * round) + " ", 0))
        << round << ": " << Metric("get", "latency");
    EXPECT_EQ(0u, Metric("fail", "latency").rfind("count=0 ", 0)) << Metric("fail", "latency");
  }
  // One connection's batches run one at a time: a method's calls never
  // ran two at once.
  EXPECT_EQ("1", Metric("ping", "max_concurrency"));
  close(fd);
  for (int i = 0; i < 10000 * kTimeScale && server_.calls_in_flight() != 0; ++i) usleep(1000);
  EXPECT_EQ(0, server_.calls_in_flight());
}

// Join waits for the whole batch a Stop found running, not only for its
// running command: the commands after it are answered (ELOGOFF, the stop
// came first) and every reply is written before the connection closes.
TEST_F(RedisBatchAccountingTest, GracefulStopAnswersEveryCommandOfARunningBatch) {
  test::Watchdog dog("redis batch stop", test::kLong);
  StartServer(0);
  const int fd = Connect();
  // Many refusals after BLOCK widen the window in which the batch is still
  // answering once BLOCK's own call has ended.
  constexpr int kAfter = 3000;
  std::string request = "INCR n\r\nBLOCK\r\n";
  std::string reply = ":1\r\n+UNBLOCKED\r\n";
  for (int i = 0; i < kAfter; ++i) {
    request += "INCR n\r\n";
    reply += "-ERR the server is stopping\r\n";
  }
  Send(fd, request);
  ASSERT_TRUE(WaitEntered(1));
  server_.Stop();
  std::atomic<bool> joined{false};
  std::thread joiner([&] {
    server_.Join();
    joined.store(true, std::memory_order_release);
  });
  usleep(20000);
  EXPECT_FALSE(joined.load(std::memory_order_acquire));  // BLOCK still runs
  release_.store(true, std::memory_order_release);
  std::string got = Read(fd, reply.size());
  // Everything, then the close (nothing more).
  EXPECT_EQ(reply.size(), got.size());
  EXPECT_TRUE(got == reply) << got.substr(0, 200);
  EXPECT_EQ("", Read(fd, 1));
  joiner.join();
  EXPECT_TRUE(joined.load(std::memory_order_acquire));
  std::string v;
  EXPECT_TRUE(store_.Get("n", MonotonicMs(), &v));
  EXPECT_EQ("1", v);  // the INCRs after the stop did not run
  close(fd);
}

// max_concurrency=1: a batch takes the slot at its first command and
// keeps it to its end, so its own pipelined commands (run one at a time)
// are never refused; another connection's commands are refused ELIMIT
// while the slot is held, and served again once it is free.
TEST_F(RedisBatchAccountingTest, MaxConcurrencyRefusesOtherConnectionsNotTheBatchItself) {
  test::Watchdog dog("redis batch limit", test::kLong);
  StartServer(1);
  const int pipelined = Connect();
  std::string request, reply;
  for (int i = 0; i < 64; ++i) {
    request += "INCR p\r\n";
    reply += ":" + std::to_string(i + 1) + "\r\n";
  }
  Send(pipelined, request);
  EXPECT_EQ(reply, Read(pipelined, reply.size()));
  // Its replies can be read a moment before its batch ends and frees the
  // slot; a command sent meanwhile would be refused (BLOCK too).
  for (int i = 0; i < 10000 * kTimeScale && server_.calls_in_flight() != 0; ++i) usleep(1000);
  ASSERT_EQ(0, server_.calls_in_flight());
  const int blocked = Connect();
  // (A connection's first inline command must be a Redis one.)
  Send(blocked, "PING\r\nBLOCK\r\nPING\r\n");
  ASSERT_TRUE(WaitEntered(1));
  const int other = Connect();
  Send(other, "PING\r\nGET p\r\nPING\r\n");
  const std::string refused = "-ERR the server reached max_concurrency=1\r\n";
  EXPECT_EQ(refused + refused + refused, Read(other, 3 * refused.size()));
  // A refusal is an error of its method, as a single call's would be.
  EXPECT_EQ("2", Metric("ping", "errors"));
  EXPECT_EQ("1", Metric("get", "errors"));
  release_.store(true, std::memory_order_release);
  EXPECT_EQ("+PONG\r\n+UNBLOCKED\r\n+PONG\r\n", Read(blocked, 26));
  // The slot is free once the blocked batch ended (its replies can be read
  // a moment before): the other connection is served again.
  std::string got;
  for (int i = 0; i < 1000 * kTimeScale; ++i) {
    Send(other, "PING\r\n");
    got = Read(other, 7);
    if (got == "+PONG\r\n") break;
    ASSERT_EQ(refused.substr(0, 7), got);
    Read(other, refused.size() - 7);
    usleep(1000);
  }
  EXPECT_EQ("+PONG\r\n", got);
  close(pipelined);
  close(blocked);
  close(other);
}

}  // namespace
}  // namespace weft::redis_tool
