// weft-redis' store and commands, and the redis protocol on a real Server:
// pipelined commands run and answer in order, Redis' error wording, QUIT
// and protocol errors close after their reply, an unread output past
// --weft_redis_client_output_limit closes, other connections go on.
#include "redis_store.h"

#include <arpa/inet.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "net_test_util.h"
#include "redis_commands.h"
#include "weft/bthread.h"
#include "weft/rpc/redis.h"
#include "weft/rpc/server.h"

DECLARE_int64(weft_redis_client_output_limit);
DECLARE_int64(weft_redis_client_query_limit);

namespace weft::redis_tool {
namespace {

using test::kTimeScale;

TEST(RedisStoreTest, ExpiredKeysVanishOnAccessAndBySweep) {
  RedisStore store(4);
  EXPECT_TRUE(store.Set("a", "1", 1000, RedisStore::SetCondition::kAlways, 0));
  EXPECT_TRUE(store.Set("b", "2", RedisStore::kNoExpiry, RedisStore::SetCondition::kAlways, 0));
  std::string v;
  EXPECT_TRUE(store.Get("a", 999, &v));
  EXPECT_EQ("1", v);
  EXPECT_EQ(1, store.PttlMs("a", 999));
  EXPECT_EQ(-1, store.PttlMs("b", 999));
  EXPECT_FALSE(store.Get("a", 1000, &v));  // lazy: removed on access
  EXPECT_EQ(1u, store.Size());
  EXPECT_EQ(-2, store.PttlMs("a", 1000));
  for (int i = 0; i < 500; ++i) {
    store.Set("k" + std::to_string(i), "v", 10, RedisStore::SetCondition::kAlways, 0);
  }
  EXPECT_EQ(500u, store.ExpiringCount());
  size_t removed = 0;
  for (int round = 0; round < 100 && store.ExpiringCount() > 0; ++round) {
    removed += store.SweepExpired(10, 64);
  }
  EXPECT_EQ(500u, removed);
  EXPECT_EQ(1u, store.Size());
}

// The clock is read only for a key that has an expiry, once per NowMs, and
// an expiring key is still judged by the real clock.
TEST(RedisStoreTest, TheClockIsReadOnlyForAnExpiringKeyAndOncePerCall) {
  RedisStore store(4);
  std::string v;
  ASSERT_TRUE(store.Set("plain", "1", RedisStore::kNoExpiry, RedisStore::SetCondition::kAlways,
                        NowMs::Clock()));
  const NowMs plain = NowMs::Clock();
  EXPECT_TRUE(store.Get("plain", plain, &v));
  EXPECT_FALSE(store.Get("missing", plain, &v));
  EXPECT_TRUE(store.Exists("plain", plain));
  EXPECT_EQ(-1, store.PttlMs("plain", plain));
  int64_t n = 0;
  EXPECT_EQ(RedisStore::IncrResult::kOk, store.IncrBy("plain", 1, plain, &n));
  EXPECT_FALSE(plain.was_read());

  const int64_t now = MonotonicMs();
  ASSERT_TRUE(store.Set("soon", "x", now + 300 * kTimeScale, RedisStore::SetCondition::kAlways,
                        NowMs::Clock()));
  ASSERT_TRUE(
      store.Set("later", "y", now + 600000, RedisStore::SetCondition::kAlways, NowMs::Clock()));
  const NowMs expiring = NowMs::Clock();
  EXPECT_TRUE(store.Get("later", expiring, &v));
  ASSERT_TRUE(expiring.was_read());
  const int64_t first = expiring.get();
  EXPECT_GE(first, now);
  // One read per NowMs: a multi-key command sees one time for every key.
  usleep(3000);
  EXPECT_EQ(first, expiring.get());

  // The real clock still expires a key, read at the call.
  EXPECT_TRUE(store.Get("soon", NowMs::Clock(), &v));
  usleep(static_cast<useconds_t>(400000 * kTimeScale));
  EXPECT_FALSE(store.Get("soon", NowMs::Clock(), &v));
  EXPECT_EQ(-2, store.PttlMs("soon", NowMs::Clock()));
}

// Lookups reuse the hash that chose the shard; with thousands of keys per
// shard (through many rehashes) every call still finds what the others
// stored, whichever path hashed the key, and the sweep removes every
// expired one.
TEST(RedisStoreTest, ManyKeysAreFoundByEveryCallAcrossRehashes) {
  RedisStore store(4);
  constexpr int kKeys = 20000;
  // Half inserted by Set (the shard's hash, reused), half by MultiSet (the
  // map's own hash): a lookup must find both kinds.
  for (int i = 0; i < kKeys; ++i) {
    const std::string k = "key:" + std::to_string(i);
    const std::string value = std::to_string(i);
    if (i % 2 == 0) {
      ASSERT_TRUE(
          store.Set(k, value, RedisStore::kNoExpiry, RedisStore::SetCondition::kIfMissing, 0));
    } else {
      store.MultiSet({{k, value}});
    }
  }
  EXPECT_EQ(static_cast<size_t>(kKeys), store.Size());
  std::string v;
  int64_t n = 0;
  for (int i = 0; i < kKeys; ++i) {
    const std::string k = "key:" + std::to_string(i);
    ASSERT_TRUE(store.Get(k, 0, &v)) << k;
    ASSERT_EQ(std::to_string(i), v);
    ASSERT_EQ(RedisStore::IncrResult::kOk, store.IncrBy(k, 1, 0, &n));
    ASSERT_EQ(i + 1, n);
    ASSERT_FALSE(store.Set(k, "x", RedisStore::kNoExpiry, RedisStore::SetCondition::kIfMissing, 0));
  }
  for (int i = 0; i < kKeys; i += 2) {
    const std::string k = "key:" + std::to_string(i);
    ASSERT_TRUE(store.ExpireAt(k, 100, 0));
    ASSERT_EQ(100, store.PttlMs(k, 0));
  }
  for (int i = 0; i < kKeys; ++i) {
    const std::string k = "key:" + std::to_string(i);
    if (i % 4 == 1) {
      ASSERT_TRUE(store.Delete(k, 0));
    }
  }
  // The sweep finds the expired half (it removes by the map's own hash).
  size_t swept = 0;
  for (int round = 0; round < 100 && store.ExpiringCount() > 0; ++round) {
    swept += store.SweepExpired(100, 1000);
  }
  EXPECT_EQ(static_cast<size_t>(kKeys / 2), swept);
  EXPECT_EQ(0u, store.ExpiringCount());
  for (int i = 0; i < kKeys; ++i) {
    const std::string k = "key:" + std::to_string(i);
    // Even: expired at 100. i % 4 == 1: deleted. The rest: there.
    ASSERT_EQ(i % 2 == 1 && i % 4 != 1, store.Exists(k, 100)) << k;
  }
  EXPECT_EQ(static_cast<size_t>(kKeys / 4), store.Size());
}

TEST(RedisStoreTest, ConditionsIncrementsAndOverflow) {
  RedisStore store;
  EXPECT_FALSE(store.Set("k", "x", 0, RedisStore::SetCondition::kIfPresent, 0));
  EXPECT_TRUE(store.Set("k", "x", 0, RedisStore::SetCondition::kIfMissing, 0));
  EXPECT_FALSE(store.Set("k", "y", 0, RedisStore::SetCondition::kIfMissing, 0));
  int64_t r = 0;
  EXPECT_EQ(RedisStore::IncrResult::kNotInteger, store.IncrBy("k", 1, 0, &r));
  EXPECT_EQ(RedisStore::IncrResult::kOk, store.IncrBy("n", 5, 0, &r));
  EXPECT_EQ(5, r);
  store.Set("m", "9223372036854775807", 0, RedisStore::SetCondition::kAlways, 0);
  EXPECT_EQ(RedisStore::IncrResult::kOverflow, store.IncrBy("m", 1, 0, &r));
  store.Set("z", " 1", 0, RedisStore::SetCondition::kAlways, 0);
  EXPECT_EQ(RedisStore::IncrResult::kNotInteger, store.IncrBy("z", 1, 0, &r));
}

// ---- over a real server ----

class RedisServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    info_.start_ms = MonotonicMs();
    ASSERT_EQ(0, AddRedisCommands(&server_, &store_, &info_));
    rpc::ServerOptions opt;
    opt.protocols = {"redis"};
    ASSERT_EQ(0, server_.Start("127.0.0.1:0", &opt));
  }
  void TearDown() override {
    server_.Stop();
    server_.Join();
  }

  int Connect() {
    const int fd = test::connect_to(server_.listen_address());
    EXPECT_GE(fd, 0);
    return fd;
  }
  // (Some tests send to a connection the server is closing: no check.)
  static void Send(int fd, const std::string& s) { test::send_all(fd, s); }
  // Sends `request` and expects exactly `reply` back.
  void Expect(int fd, const std::string& request, const std::string& reply) {
    Send(fd, request);
    EXPECT_EQ(reply, test::read_until(fd, reply.size(), 10000 * kTimeScale)) << request;
  }
  // True when the peer closed within the deadline (bytes before the EOF
  // are appended to *got).
  static bool ReadToEof(int fd, std::string* got) {
    return test::closed_by_peer(fd, 10000 * kTimeScale, got);
  }

  RedisStore store_;
  ServerInfo info_;
  rpc::Server server_;
};

TEST_F(RedisServerTest, PipelinedCommandsRunAndAnswerInRequestOrder) {
  test::Watchdog dog("redis pipeline", test::kLong);
  const int fd = Connect();
  // 200 rounds of SET/INCR/GET on one key in one write: each GET must see
  // the INCR before it (execution is ordered, not only the replies).
  std::string req;
  std::string want;
  for (int i = 1; i <= 200; ++i) {
    req += "INCR c\r\n*2\r\n$3\r\nGET\r\n$1\r\nc\r\n";
    const std::string n = std::to_string(i);
    want += ":" + n + "\r\n$" + std::to_string(n.size()) + "\r\n" + n + "\r\n";
  }
  Expect(fd, req, want);
  close(fd);
}

TEST_F(RedisServerTest, CommandsAndErrorsAreWordedAsRedis) {
  const int fd = Connect();
  Expect(fd, "PING\r\n", "+PONG\r\n");
  Expect(fd, "ping hi\r\n", "$2\r\nhi\r\n");
  // In one request: TTL rounds to whole seconds, so 100 holds while the
  // two run within 500 ms of each other, which a round trip between them
  // would not promise on a loaded machine.
  Expect(fd, "SET k v EX 100\r\nTTL k\r\n", "+OK\r\n:100\r\n");
  Expect(fd, "SET k w NX\r\n", "$-1\r\n");
  Expect(fd, "SET k w XX PX 5000\r\n", "+OK\r\n");
  Expect(fd, "GET k\r\n", "$1\r\nw\r\n");
  Expect(fd, "SET k v EX 0\r\n", "-ERR invalid expire time in 'set' command\r\n");
  // INT64_MAX / 1000 seconds: fits, but not once it is milliseconds added
  // to now (redis-server refuses it too).
  Expect(fd, "SET k v EX 9223372036854775\r\n", "-ERR invalid expire time in 'set' command\r\n");
  Expect(fd, "SET k v BOGUS\r\n", "-ERR syntax error\r\n");
  Expect(fd, "GET\r\n", "-ERR wrong number of arguments for 'get' command\r\n");
  Expect(fd, "INCR k\r\n", "-ERR value is not an integer or out of range\r\n");
  Expect(fd, "INCRBY n x\r\n", "-ERR value is not an integer or out of range\r\n");
  Expect(fd, "INCRBY n 10\r\nDECR n\r\n", ":10\r\n:9\r\n");
  Expect(fd, "NOSUCH a b\r\n",
         "-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n");
  Expect(fd, "MSET a 1 b 2\r\nMGET a b zz\r\n", "+OK\r\n*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n");
  // Values past the short-string and the one-append sizes come back whole
  // from GET and MGET (their replies are built from the stored entry).
  const std::string mid(20, 'm');
  const std::string big(300, 'b');
  Expect(fd, "SET mid " + mid + "\r\nSET big " + big + "\r\n", "+OK\r\n+OK\r\n");
  Expect(fd, "GET big\r\nMGET mid zz big\r\n",
         "$300\r\n" + big + "\r\n*3\r\n$20\r\n" + mid + "\r\n$-1\r\n$300\r\n" + big + "\r\n");
  Expect(fd, "DEL mid big\r\n", ":2\r\n");
  Expect(fd, "MSET a\r\n", "-ERR wrong number of arguments for 'mset' command\r\n");
  Expect(fd, "EXISTS a b zz a\r\nDEL a zz\r\n", ":3\r\n:1\r\n");
  Expect(fd, "EXPIRE b 100\r\nTTL b\r\nTTL zz\r\nTTL n\r\n", ":1\r\n:100\r\n:-2\r\n:-1\r\n");
  Expect(fd, "DBSIZE\r\n", ":3\r\n");
  Expect(fd, "CONFIG GET save\r\n", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
  Expect(fd, "CONFIG GET appendonly\r\n", "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
  Expect(fd, "HELLO 3\r\n", "-NOPROTO unsupported protocol version\r\n");
  Expect(fd, "FLUSHALL\r\nDBSIZE\r\n", "+OK\r\n:0\r\n");
  Send(fd, "HELLO 2\r\n");
  EXPECT_EQ('*', test::read_until(fd, 1, 10000)[0]);
  close(fd);
}

// As redis-server: an HTTP request at a Redis port (cross protocol
// scripting) closes the connection unanswered; the commands before it in
// the same read still run, and none after it.
TEST_F(RedisServerTest, AnHttpRequestAfterCommandsClosesUnansweredAndTheCommandsBeforeItRun) {
  for (const char* attack : {"POST / HTTP/1.1\r\n", "Host: x\r\n"}) {
    store_.Clear();
    const int fd = Connect();
    Send(fd, std::string("PING\r\nSET a 1\r\n") + attack + "SET after 1\r\n");
    std::string got;
    EXPECT_TRUE(ReadToEof(fd, &got)) << attack;
    EXPECT_EQ(std::string::npos, got.find('-')) << attack << " was answered: " << got;
    close(fd);
    // (The batch runs in its own fiber: it may end after the close.)
    std::string v;
    for (int i = 0; i < 10000 * kTimeScale && !store_.Get("a", MonotonicMs(), &v); ++i) {
      usleep(1000);
    }
    EXPECT_EQ("1", v) << attack;
    EXPECT_FALSE(store_.Get("after", MonotonicMs(), &v)) << attack;
  }
}

TEST_F(RedisServerTest, QuitAnswersOkThenClosesAndLaterCommandsDoNotRun) {
  const int fd = Connect();
  Send(fd, "PING\r\nQUIT\r\nSET after 1\r\n");
  std::string got;
  EXPECT_TRUE(ReadToEof(fd, &got));
  EXPECT_EQ("+PONG\r\n+OK\r\n", got);
  close(fd);
  std::string v;
  EXPECT_FALSE(store_.Get("after", MonotonicMs(), &v));
}

TEST_F(RedisServerTest, ProtocolErrorIsAnsweredInPlaceThenCloses) {
  const int other = Connect();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
      {"*1\r\n$536870913\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
      {"*99999999999\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
      {"*1\r\n*1\r\n$1\r\na\r\n", "-ERR Protocol error: expected '$', got '*'\r\n"},
      {std::string(70000, 'x'), "-ERR Protocol error: too big inline request\r\n"},
  };
  for (const auto& [bytes, reply] : bad) {
    const int fd = Connect();
    Send(fd, "PING\r\n" + bytes);
    std::string got;
    EXPECT_TRUE(ReadToEof(fd, &got)) << reply;
    EXPECT_EQ("+PONG\r\n" + reply, got);
    close(fd);
    Expect(other, "PING\r\n", "+PONG\r\n");  // the other connection goes on
  }
  close(other);
}

// A client that pipelines and never reads: its unwritten replies grow
// until the output limit closes it; another client is served meanwhile.
TEST_F(RedisServerTest, ClientThatNeverReadsIsClosedPastTheOutputLimit) {
  test::Watchdog dog("redis output limit", test::kLong);
  const int64_t saved = FLAGS_weft_redis_client_output_limit;
  // Read by connection fibers as a relaxed atomic: stored the same way.
  __atomic_store_n(&FLAGS_weft_redis_client_output_limit, int64_t{1} << 20, __ATOMIC_RELAXED);
  ASSERT_TRUE(
      store_.Set("big", std::string(64 * 1024, 'v'), 0, RedisStore::SetCondition::kAlways, 0));
  const int fd = Connect();
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  std::string burst;
  for (int i = 0; i < 64; ++i) burst += "GET big\r\n";
  // Bounded: at most 4096 GETs (256 MiB of replies) are sent; the close
  // comes after about 1 MiB plus the socket buffers.
  bool closed = false;
  for (int round = 0; round < 64 && !closed; ++round) {
    const ssize_t n = send(fd, burst.data(), burst.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN) closed = true;
    const int other = Connect();
    Expect(other, "PING\r\n", "+PONG\r\n");
    close(other);
    // The server side failed: its FIN/RST shows as an error or EOF once
    // we drain; check cheaply through a zero-timeout poll for POLLHUP/ERR.
    pollfd p{fd, 0, 0};
    if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR)) != 0) closed = true;
    if (!closed && round % 8 == 7) usleep(50 * 1000);
  }
  if (!closed) {
    // Draining now: an EOF (or reset) must come after at most the limit
    // plus what the kernel buffered.
    std::string got;
    closed = ReadToEof(fd, &got);
    EXPECT_LT(got.size(), size_t{64} << 20);
  }
  EXPECT_TRUE(closed);
  close(fd);
  __atomic_store_n(&FLAGS_weft_redis_client_output_limit, saved, __ATOMIC_RELAXED);
}

// A command whose arguments would pass the query limit is answered with
// a protocol error and closed as soon as the length line that passes it
// arrives (its bytes are never awaited), and other connections go on.
TEST_F(RedisServerTest, ACommandOverTheQueryLimitIsAnsweredAndClosed) {
  test::Watchdog dog("redis query limit", test::kLong);
  const int64_t saved = FLAGS_weft_redis_client_query_limit;
  // Read when a connection starts: the connections below see it.
  __atomic_store_n(&FLAGS_weft_redis_client_query_limit, int64_t{1} << 20, __ATOMIC_RELAXED);
  const std::string kReply = "-ERR Protocol error: command over the query limit\r\n";
  {
    // One bulk over the limit: only its length line is sent.
    const int fd = Connect();
    Send(fd, "PING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n");
    std::string got;
    EXPECT_TRUE(ReadToEof(fd, &got));
    EXPECT_EQ("+PONG\r\n" + kReply, got);
    close(fd);
  }
  {
    // Ten 100 KB arguments fit; the eleventh's length line passes 1 MiB.
    const int fd = Connect();
    std::string bytes = "*20\r\n";
    for (int i = 0; i < 10; ++i) bytes += "$100000\r\n" + std::string(100000, 'a') + "\r\n";
    bytes += "$100000\r\n";
    Send(fd, bytes);
    std::string got;
    EXPECT_TRUE(ReadToEof(fd, &got));
    EXPECT_EQ(kReply, got);
    close(fd);
  }
  __atomic_store_n(&FLAGS_weft_redis_client_query_limit, saved, __ATOMIC_RELAXED);
  const int other = Connect();
  Expect(other, "SET k " + std::string(2000, 'v') + "\r\nDBSIZE\r\n", "+OK\r\n:1\r\n");
  close(other);
}

// The replies of a pipeline come back in request order whatever byte the
// reads are split at: the two sides of the split are cut as separate
// batches (when the pause lets the server read the first alone) or as one.
TEST_F(RedisServerTest, RepliesOfAPipelineSplitAtEveryByteComeInOrder) {
  test::Watchdog dog("redis split pipeline", test::kLong);
  const std::string script =
      "SET k 1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
      "ECHO \"a b\"\r\n*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$2\r\n10\r\nNOSUCH x\r\nGET k\r\nDEL k\r\n";
  const std::string want =
      "+OK\r\n:2\r\n$1\r\n2\r\n$3\r\na b\r\n:12\r\n"
      "-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n$2\r\n12\r\n:1\r\n";
  for (size_t cut = 0; cut <= script.size(); ++cut) {
    const int fd = Connect();
    Send(fd, script.substr(0, cut));
    // Gives the server a chance to read the first part alone (not needed
    // for correctness: either way the replies must be the same).
    if (cut % 4 == 0) usleep(1000);
    Send(fd, script.substr(cut));
    EXPECT_EQ(want, test::read_until(fd, want.size(), 10000 * kTimeScale)) << "cut at " << cut;
    close(fd);
  }
}

// One read whose replies pass the output limit closes the connection (the
// batch is checked as it is written), and other connections go on.
TEST_F(RedisServerTest, ABatchWhoseRepliesPassTheOutputLimitCloses) {
  test::Watchdog dog("redis batch output limit", test::kLong);
  const int64_t saved = FLAGS_weft_redis_client_output_limit;
  __atomic_store_n(&FLAGS_weft_redis_client_output_limit, int64_t{16} << 10, __ATOMIC_RELAXED);
  ASSERT_TRUE(store_.Set("big", std::string(4096, 'v'), 0, RedisStore::SetCondition::kAlways, 0));
  const int fd = Connect();
  std::string burst;
  // 100 GETs in one write (900 bytes: one read), 400 KiB of replies.
  for (int i = 0; i < 100; ++i) burst += "GET big\r\n";
  Send(fd, burst);
  std::string got;
  EXPECT_TRUE(ReadToEof(fd, &got));
  EXPECT_LT(got.size(), size_t{100} * 4096);
  close(fd);
  __atomic_store_n(&FLAGS_weft_redis_client_output_limit, saved, __ATOMIC_RELAXED);
  const int other = Connect();
  Expect(other, "PING\r\n", "+PONG\r\n");
  close(other);
}

// QUIT in the middle of one read's batch: the commands before it run and
// answer, the ones after it neither run nor answer.
TEST_F(RedisServerTest, QuitInsideABatchDropsTheRestOfIt) {
  const int fd = Connect();
  Send(fd, "SET before 1\r\n*1\r\n$4\r\nQUIT\r\nSET after 1\r\nPING\r\n");
  std::string got;
  EXPECT_TRUE(ReadToEof(fd, &got));
  EXPECT_EQ("+OK\r\n+OK\r\n", got);
  close(fd);
  std::string v;
  EXPECT_TRUE(store_.Get("before", MonotonicMs(), &v));
  EXPECT_FALSE(store_.Get("after", MonotonicMs(), &v));
}

}  // namespace
}  // namespace weft::redis_tool

namespace weft::redis_tool {
namespace {

// A method that completes later (its done from another fiber) or suspends
// its fiber: the batch it is in waits for it (later commands run after
// it, replies stay in order), and other connections are served meanwhile.
TEST(RedisBatchHandlerTest, ALaterOrBlockingHandlerHoldsUpOnlyItsConnection) {
  test::Watchdog dog("redis later handler", test::kLong);
  RedisStore store;
  ServerInfo info;
  rpc::Server server;
  ASSERT_EQ(0, AddRedisCommands(&server, &store, &info));
  // "later": answers from a fiber of its own after 2 ms.
  ASSERT_EQ(0, server.AddMethod(
                   "later", [](rpc::Controller*, const IOBuf&, IOBuf* response, rpc::Closure done) {
                     struct Later {
                       IOBuf* response;
                       rpc::Closure done;
                     };
                     auto* l = new Later{response, std::move(done)};
                     bthread_t t;
                     ASSERT_EQ(0, bthread_start_background(
                                      &t, nullptr,
                                      [](void* arg) -> void* {
                                        auto* later = static_cast<Later*>(arg);
                                        bthread_usleep(2000);
                                        rpc::redis::AppendStatus(later->response, "LATER");
                                        later->done();
                                        delete later;
                                        return nullptr;
                                      },
                                      l));
                   }));
  // "block": suspends its own fiber until released.
  std::atomic<bool> release{false};
  ASSERT_EQ(0, server.AddMethod("block", [&release](rpc::Controller*, const IOBuf&, IOBuf* response,
                                                    rpc::Closure done) {
    for (int i = 0; i < 20000 && !release.load(std::memory_order_acquire); ++i) {
      bthread_usleep(1000);
    }
    rpc::redis::AppendStatus(response, "UNBLOCKED");
    done();
  }));
  rpc::ServerOptions opt;
  opt.protocols = {"redis"};
  ASSERT_EQ(0, server.Start("127.0.0.1:0", &opt));
  auto connect_to = [&] {
    const int fd = test::connect_to(server.listen_address());
    EXPECT_GE(fd, 0);
    return fd;
  };
  auto send_all = [](int fd, const std::string& s) {
    ASSERT_EQ(static_cast<ssize_t>(s.size()), send(fd, s.data(), s.size(), MSG_NOSIGNAL));
  };
  {
    const int fd = connect_to();
    send_all(fd, "INCR n\r\nLATER\r\nINCR n\r\nLATER\r\nLATER\r\nGET n\r\n");
    const std::string want = ":1\r\n+LATER\r\n:2\r\n+LATER\r\n+LATER\r\n$1\r\n2\r\n";
    EXPECT_EQ(want, test::read_until(fd, want.size(), 10000 * kTimeScale));
    close(fd);
  }
  {
    const int blocked = connect_to();
    send_all(blocked, "INCR m\r\nBLOCK\r\nINCR m\r\n");
    // The INCR before BLOCK has run once m exists; from then on BLOCK
    // holds its connection's fiber (the batch's replies leave together,
    // so that connection gets nothing yet).
    std::string v;
    for (int i = 0; i < 10000 && !store.Get("m", MonotonicMs(), &v); ++i) usleep(1000);
    // Another connection is served while BLOCK holds its fiber.
    const int other = connect_to();
    for (int i = 0; i < 20; ++i) {
      send_all(other, "PING\r\n");
      EXPECT_EQ("+PONG\r\n", test::read_until(other, 7, 10000 * kTimeScale));
    }
    EXPECT_TRUE(store.Get("m", MonotonicMs(), &v));
    EXPECT_EQ("1", v);  // the command after BLOCK has not run
    close(other);
    release.store(true, std::memory_order_release);
    const std::string want = ":1\r\n+UNBLOCKED\r\n:2\r\n";
    EXPECT_EQ(want, test::read_until(blocked, want.size(), 10000 * kTimeScale));
    close(blocked);
  }
  server.Stop();
  server.Join();
}

}  // namespace
}  // namespace weft::redis_tool

namespace weft::redis_tool {
namespace {

// A server speaking every registered protocol (the default) must not take
// another text protocol's first line for an inline Redis command: only a
// RESP array or a line starting with a Redis command claims a connection.
TEST(RedisDetectionTest, InlineClaimsAConnectionOnlyForRedisCommands) {
  RedisStore store;
  ServerInfo info;
  rpc::Server server;
  ASSERT_EQ(0, AddRedisCommands(&server, &store, &info));
  ASSERT_EQ(0, server.Start("127.0.0.1:0", nullptr));  // every protocol
  auto connect_to = [&] {
    const int fd = test::connect_to(server.listen_address());
    EXPECT_GE(fd, 0);
    return fd;
  };
  for (const char* text : {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "Q 1 upper 5\nhello"}) {
    const int fd = connect_to();
    ASSERT_EQ(static_cast<ssize_t>(strlen(text)), send(fd, text, strlen(text), MSG_NOSIGNAL));
    // Nobody claims it: closed, and nothing Redis-like was answered.
    const std::string got = test::read_until(fd, 1, 10000 * kTimeScale);
    EXPECT_TRUE(got.empty() || got[0] != '-') << text << " -> " << got;
    close(fd);
  }
  for (const char* text : {"ping\r\n", "*1\r\n$4\r\nPING\r\n", "  PI"}) {
    const int fd = connect_to();
    send(fd, text, strlen(text), MSG_NOSIGNAL);
    if (text[2] == 'P') send(fd, "NG\r\n", 4, MSG_NOSIGNAL);  // the word split across sends
    EXPECT_EQ("+PONG\r\n", test::read_until(fd, 7, 10000 * kTimeScale)) << text;
    close(fd);
  }
  server.Stop();
  server.Join();
}

}  // namespace
}  // namespace weft::redis_tool
