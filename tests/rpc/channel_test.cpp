// Channel: calls over single, pooled and short connections against a real
// weft::rpc::Server, and how each call ends exactly once (reply, deadline,
// cancel, connection failure).
#include "weft/rpc/channel.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../runtime/test_util.h"
#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/countdown_event.h"
#include "weft/rpc/call_completion.h"
#include "weft/rpc/errno.h"
#include "weft/rpc/server.h"

namespace weft::rpc {
namespace {

using test::kTimeScale;

// echo: the payload back; sleep: sleeps <payload> ms, then echoes it;
// gate: waits until g_gate_open (or 60 s), then echoes; whoami: the
// client's address as the server sees it (which connection). A test that
// needs calls held in the handler uses gate, not a sleep it hopes is long
// enough (sanitizers and a loaded CPU stretch every step before it).
std::atomic<bool> g_gate_open{false};
void add_methods(Server* server) {
  ASSERT_EQ(0,
            server->AddMethod("echo", [](Controller*, const IOBuf& req, IOBuf* resp, Closure done) {
              resp->append(req);
              done();
            }));
  ASSERT_EQ(
      0, server->AddMethod("sleep", [](Controller*, const IOBuf& req, IOBuf* resp, Closure done) {
        const long ms = strtol(req.to_string().c_str(), nullptr, 10);
        bthread_usleep(ms * 1000);
        resp->append(req);
        done();
      }));
  ASSERT_EQ(0,
            server->AddMethod("gate", [](Controller*, const IOBuf& req, IOBuf* resp, Closure done) {
              for (int i = 0; i < 60000 && !g_gate_open.load(std::memory_order_acquire); ++i) {
                bthread_usleep(1000);
              }
              resp->append(req);
              done();
            }));
  ASSERT_EQ(
      0, server->AddMethod("whoami", [](Controller* cntl, const IOBuf&, IOBuf* resp, Closure done) {
        resp->append(cntl->remote_side().to_string());
        done();
      }));
}

class ChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    g_gate_open.store(false, std::memory_order_relaxed);
    add_methods(&server_);
    ASSERT_EQ(0, server_.Start("127.0.0.1:0", nullptr));
  }
  void TearDown() override {
    g_gate_open.store(true, std::memory_order_release);
    server_.Stop();
    server_.Join();
    // Nothing leaked: every call ended.
    EXPECT_TRUE(wait_pending_zero());
  }
  static bool wait_pending_zero() {
    const int64_t deadline = test::now_ms() + 5000 * kTimeScale;
    while (PendingCallCount() != 0) {
      if (test::now_ms() > deadline) return false;
      usleep(1000);
    }
    return true;
  }
  int InitChannel(Channel* ch, ConnectionType type, int64_t timeout_ms = 5000 * kTimeScale) {
    ChannelOptions opt;
    opt.connection_type = type;
    opt.timeout_ms = timeout_ms;
    opt.connect_timeout_ms = 2000 * kTimeScale;
    return ch->Init(server_.listen_address(), &opt);
  }
  static std::string Call(Channel* ch, const char* method, const std::string& payload,
                          Controller* cntl) {
    IOBuf req, resp;
    req.append(payload);
    ch->CallMethod(method, cntl, req, &resp, nullptr);
    return resp.to_string();
  }

  Server server_;
};

TEST_F(ChannelTest, SynchronousEchoFromAFiberAndFromAPthread) {
  test::Watchdog dog("echo", test::kLong);
  Channel ch;
  ASSERT_EQ(0, InitChannel(&ch, kSingle));
  Controller cntl;
  EXPECT_EQ("hello", Call(&ch, "echo", "hello", &cntl));
  EXPECT_FALSE(cntl.Failed()) << cntl.ErrorText();
  EXPECT_GT(cntl.latency_us(), 0);
  EXPECT_EQ(server_.listen_address(), cntl.remote_side());
  struct Arg {
    Channel* ch;
    std::string got;
    int error;
  } arg{&ch, "", -1};
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(
                   &tid, nullptr,
                   [](void* p) -> void* {
                     auto* a = static_cast<Arg*>(p);
                     Controller c;
                     a->got = Call(a->ch, "echo", "from a fiber", &c);
                     a->error = c.ErrorCode();
                     return nullptr;
                   },
                   &arg));
  bthread_join(tid, nullptr);
  EXPECT_EQ("from a fiber", arg.got);
  EXPECT_EQ(0, arg.error);
}

TEST_F(ChannelTest, UnknownMethodIsENOMETHODAndTheConnectionStaysUp) {
  Channel ch;
  ASSERT_EQ(0, InitChannel(&ch, kSingle));
  Controller cntl;
  Call(&ch, "no_such_method", "x", &cntl);
  EXPECT_EQ(ENOMETHOD, cntl.ErrorCode());
  EXPECT_FALSE(cntl.ErrorText().empty());
  Controller again;
  EXPECT_EQ("y", Call(&ch, "echo", "y", &again));
  EXPECT_EQ(0, again.ErrorCode());
  EXPECT_TRUE(test::wait_until([&] { return server_.connection_count() == 1u; }, test::kLong))
      << server_.connection_count();
}

TEST_F(ChannelTest, OutOfOrderRepliesOnOneConnectionReachTheirCallers) {
  test::Watchdog dog("out of order", test::kLong);
  Channel ch;
  ASSERT_EQ(0, InitChannel(&ch, kSingle));
  // Slow calls first, fast ones after: the fast replies overtake.
  const std::vector<int> sleeps = {300, 200, 100, 0, 0, 0, 50, 0};
  const size_t n = sleeps.size();
  std::vector<Controller> cntls(n);
  std::vector<IOBuf> resps(n);
  std::atomic<int> order{0};
  std::vector<int> finished_at(n, -1);
  CountdownEvent all(static_cast<int>(n));
  for (size_t i = 0; i < n; ++i) {
    IOBuf req;
    req.append(std::to_string(sleeps[i]));
    ch.CallMethod("sleep", &cntls[i], req, &resps[i], [&, i] {
      finished_at[i] = order.fetch_add(1);
      all.signal();
    });
  }
  all.wait();
  for (size_t i = 0; i < n; ++i) {
    EXPECT_FALSE(cntls[i].Failed()) << i << ": " << cntls[i].ErrorText();
    EXPECT_EQ(std::to_string(sleeps[i]), resps[i].to_string()) << i;
  }
  // The 300 ms call finished after the immediate ones.
  EXPECT_GT(finished_at[0], finished_at[3]);
  EXPECT_TRUE(test::wait_until([&] { return server_.connection_count() == 1u; }, test::kLong))
      << server_.connection_count();
}

TEST_F(ChannelTest, ThousandConcurrentCallersOnOneSingleConnection) {
  test::Watchdog dog("1000 callers", test::kLong * 2);
  Channel ch;
  ASSERT_EQ(0, InitChannel(&ch, kSingle));
  const int kCallers = 1000 / kTimeScale;
  const int kCallsEach = 5;
  struct Caller {
    Channel* ch;
    int index;
    int mismatches = 0;
    int failures = 0;
  };
  std::vector<Caller> callers;
  for (int i = 0; i < kCallers; ++i) callers.push_back(Caller{&ch, i});
  std::vector<bthread_t> tids(kCallers);
  for (int i = 0; i < kCallers; ++i) {
    ASSERT_EQ(0, bthread_start_background(
                     &tids[i], nullptr,
                     [](void* p) -> void* {
                       auto* c = static_cast<Caller*>(p);
                       for (int k = 0; k < kCallsEach; ++k) {
                         // Distinct sizes and bytes per caller and call.
                         const std::string payload =
                             std::to_string(c->index) + ":" + std::to_string(k) + ":" +
                             std::string(static_cast<size_t>(c->index % 97 + k), 'a' + k);
                         Controller cntl;
                         const std::string got = ChannelTest::Call(c->ch, "echo", payload, &cntl);
                         if (cntl.Failed()) {
                           ++c->failures;
                         } else if (got != payload) {
                           ++c->mismatches;
                         }
                       }
                       return nullptr;
                     },
                     &callers[i]));
  }
  for (bthread_t t : tids) bthread_join(t, nullptr);
  int mismatches = 0, failures = 0;
  for (const Caller& c : callers) {
    mismatches += c.mismatches;
    failures += c.failures;
  }
  EXPECT_EQ(0, failures);
  EXPECT_EQ(0, mismatches);
  EXPECT_TRUE(test::wait_until([&] { return server_.connection_count() == 1u; }, test::kLong))
      << server_.connection_count();
}

TEST_F(ChannelTest, TimeoutEndsTheCallAndTheLateReplyIsDroppedAndCounted) {
  test::Watchdog dog("timeout", test::kLong);
  Channel ch;
  ASSERT_EQ(0, InitChannel(&ch, kSingle));
  const int64_t late_before = LateReplyCount();
  Controller cntl;
  cntl.set_timeout_ms(50);
  const int64_t t0 = test::now_ms();
  // (Scaled: under a sanitizer the timer may fire late, and the reply
  // must still come after it.)
  Call(&ch, "sleep", std::to_string(400 * kTimeScale), &cntl);
  const int64_t took = test::now_ms() - t0;
  EXPECT_EQ(ERPCTIMEDOUT, cntl.ErrorCode()) << cntl.ErrorText();
  EXPECT_LT(took, 350 * kTimeScale);
  // Never retried after a timeout.
  EXPECT_EQ(0, cntl.retried_count());
  EXPECT_EQ(0, PendingCallCount());
  // The reply comes ~350 ms later and is dropped.
  const int64_t deadline = test::now_ms() + 5000 * kTimeScale;
  while (LateReplyCount() == late_before && test::now_ms() < deadline) usleep(5000);
  EXPECT_EQ(late_before + 1, LateReplyCount());
  // The shared connection is still good.
  Controller again;
  EXPECT_EQ("ok", Call(&ch, "echo", "ok", &again));
  EXPECT_EQ(0, again.ErrorCode());
}

TEST_F(ChannelTest, AsynchronousCallCanBeCancelledAndJoined) {
  test::Watchdog dog("cancel", test::kLong);
  Channel ch;
  ASSERT_EQ(0, InitChannel(&ch, kSingle));
  Controller cntl;
  IOBuf req, resp;
  req.append(std::to_string(2000 * kTimeScale));
  std::atomic<int> done_runs{0};
  ch.CallMethod("sleep", &cntl, req, &resp, [&] { done_runs.fetch_add(1); });
  const bthread_id_t id = cntl.call_id();
  usleep(20000);
  EXPECT_EQ(0, done_runs.load());
  const int64_t t0 = test::now_ms();
  StartCancel(id);
  EXPECT_EQ(0, Join(id));
  EXPECT_LT(test::now_ms() - t0, 1000 * kTimeScale);
  // done runs in a fiber after the call ended; give it a moment.
  const int64_t deadline = test::now_ms() + 5000 * kTimeScale;
  while (done_runs.load() == 0 && test::now_ms() < deadline) usleep(1000);
  EXPECT_EQ(1, done_runs.load());
  EXPECT_EQ(ECANCELED, cntl.ErrorCode());
  // Cancelling an ended call does nothing.
  StartCancel(id);
  usleep(10000);
  EXPECT_EQ(1, done_runs.load());
}

// An asynchronous call keeps what it needs of its Channel: the Channel may
// be destroyed right after CallMethod, and the call still gets its reply,
// ends (connection returned to its pool) and runs done. (ASan would see a
// call that used the destroyed Channel's state.)
TEST_F(ChannelTest, AsynchronousCallsOutliveTheirChannel) {
  test::Watchdog dog("outlive", test::kLong);
  for (ConnectionType type : {kSingle, kPooled, kShort}) {
    constexpr int kCalls = 8;
    std::vector<Controller> cntls(kCalls);
    std::vector<IOBuf> resps(kCalls);
    CountdownEvent all(kCalls);
    {
      Channel ch;
      ASSERT_EQ(0, InitChannel(&ch, type));
      for (int i = 0; i < kCalls; ++i) {
        IOBuf req;
        req.append("30");
        ch.CallMethod("sleep", &cntls[i], req, &resps[i], [&] { all.signal(); });
      }
    }
    all.wait();
    for (int i = 0; i < kCalls; ++i) {
      EXPECT_EQ(0, cntls[i].ErrorCode()) << cntls[i].ErrorText();
      EXPECT_EQ("30", resps[i].to_string());
    }
  }
}

TEST_F(ChannelTest, MaxConcurrencyAnswersELIMIT) {
  Server limited;
  add_methods(&limited);
  ServerOptions sopt;
  sopt.max_concurrency = 1;
  ASSERT_EQ(0, limited.Start("127.0.0.1:0", &sopt));
  Channel ch;
  ChannelOptions opt;
  opt.timeout_ms = 5000 * kTimeScale;
  ASSERT_EQ(0, ch.Init(limited.listen_address(), &opt));
  Controller slow, refused;
  IOBuf req, resp, resp2;
  req.append("held");
  CountdownEvent ended(1);
  ch.CallMethod("gate", &slow, req, &resp, [&] { ended.signal(); });
  ASSERT_TRUE(test::wait_until([&] { return limited.calls_in_flight() == 1; }, test::kLong));
  Call(&ch, "echo", "x", &refused);
  EXPECT_EQ(ELIMIT, refused.ErrorCode());
  g_gate_open.store(true, std::memory_order_release);
  ended.wait();
  EXPECT_EQ(0, slow.ErrorCode());
  limited.Stop();
  limited.Join();
}

TEST_F(ChannelTest, GracefulStopAnswersEveryStartedCall) {
  test::Watchdog dog("graceful stop", test::kLong);
  Channel ch;
  ASSERT_EQ(0, InitChannel(&ch, kSingle));
  const int n = 32;
  std::vector<Controller> cntls(n);
  std::vector<IOBuf> resps(n);
  CountdownEvent all(n);
  for (int i = 0; i < n; ++i) {
    IOBuf req;
    req.append("200");
    ch.CallMethod("gate", &cntls[i], req, &resps[i], [&] { all.signal(); });
  }
  // Let them reach the handlers.
  ASSERT_TRUE(test::wait_until([&] { return server_.calls_in_flight() == n; }, test::kLong))
      << server_.calls_in_flight() << " of " << n << " calls in flight";
  server_.Stop();
  // The calls end after the stop: each is still answered.
  g_gate_open.store(true, std::memory_order_release);
  server_.Join();
  all.wait();
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(0, cntls[i].ErrorCode()) << i << ": " << cntls[i].ErrorText();
    EXPECT_EQ("200", resps[i].to_string());
  }
}

// A "server" that accepts, reads, then dies (RST), with the listener gone
// too: what a killed process looks like from the client.
TEST(ChannelFailureTest, ServerKilledMidCallFailsEveryPendingCallQuickly) {
  test::Watchdog dog("killed server", test::kLong);
  const int lfd = tcp_listen(EndPoint::loopback(0));
  ASSERT_GE(lfd, 0);
  const EndPoint ep = get_local_side(lfd);
  Channel ch;
  ChannelOptions opt;
  opt.timeout_ms = 20000;
  opt.max_retry = 2;
  ASSERT_EQ(0, ch.Init(ep, &opt));
  const int n = 100;
  std::vector<Controller> cntls(n);
  std::vector<IOBuf> resps(n);
  CountdownEvent all(n);
  std::atomic<int64_t> last_end_ms{0};
  for (int i = 0; i < n; ++i) {
    IOBuf req;
    req.append("payload");
    ch.CallMethod("echo", &cntls[i], req, &resps[i], [&] {
      last_end_ms.store(test::now_ms());
      all.signal();
    });
  }
  pollfd p{lfd, POLLIN, 0};
  ASSERT_EQ(1, poll(&p, 1, 5000));
  const int conn = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(conn, 0);
  // Every request is written (and kept as written-but-unanswered).
  const std::string got = test::read_until(conn, 100 * (24 + 4 + 7), 5000 * kTimeScale);
  EXPECT_EQ(100u * (24 + 4 + 7), got.size());
  close(lfd);
  linger lg{1, 0};
  setsockopt(conn, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  const int64_t killed_ms = test::now_ms();
  close(conn);
  all.wait();
  // Quickly: well under the 20 s the calls would wait for their timeout,
  // with room for 100 calls' retries on a loaded VM.
  EXPECT_LT(last_end_ms.load() - killed_ms, 2000 * kTimeScale);
  for (int i = 0; i < n; ++i) {
    EXPECT_TRUE(cntls[i].Failed()) << i;
    EXPECT_NE(ERPCTIMEDOUT, cntls[i].ErrorCode()) << i;
    // Retried on the connection error, then refused.
    EXPECT_EQ(2, cntls[i].retried_count()) << i;
  }
  EXPECT_EQ(0, PendingCallCount());
}

TEST(ChannelFailureTest, ConnectionErrorsAreRetriedUpToMaxRetry) {
  const int lfd = tcp_listen(EndPoint::loopback(0));
  const EndPoint dead = get_local_side(lfd);
  close(lfd);
  Channel ch;
  ChannelOptions opt;
  opt.max_retry = 3;
  ASSERT_EQ(0, ch.Init(dead, &opt));
  Controller cntl;
  IOBuf req, resp;
  req.append("x");
  ch.CallMethod("echo", &cntl, req, &resp, nullptr);
  EXPECT_EQ(ECONNREFUSED, cntl.ErrorCode()) << cntl.ErrorText();
  EXPECT_EQ(3, cntl.retried_count());
}

TEST_F(ChannelTest, PooledConnectionsAreReusedAndATimedOutOneNeverIs) {
  test::Watchdog dog("pooled", test::kLong);
  Channel ch;
  ASSERT_EQ(0, InitChannel(&ch, kPooled));
  Controller c1, c2;
  const std::string first = Call(&ch, "whoami", "", &c1);
  const std::string second = Call(&ch, "whoami", "", &c2);
  ASSERT_EQ(0, c1.ErrorCode());
  ASSERT_EQ(0, c2.ErrorCode());
  EXPECT_EQ(first, second);  // the idle connection was reused
  // Concurrent calls each take a connection: held in the handler until
  // all n are there (a sleep could end one before the next is sent, and
  // its connection would be reused).
  const int n = 4;
  std::vector<Controller> cntls(n);
  std::vector<IOBuf> resps(n);
  CountdownEvent all(n);
  for (int i = 0; i < n; ++i) {
    IOBuf req;
    req.append("100");
    ch.CallMethod("gate", &cntls[i], req, &resps[i], [&] { all.signal(); });
  }
  ASSERT_TRUE(test::wait_until([&] { return server_.calls_in_flight() == n; }, test::kLong))
      << server_.calls_in_flight() << " of " << n << " calls in flight";
  EXPECT_TRUE(test::wait_until([&] { return server_.connection_count() == static_cast<size_t>(n); },
                               test::kLong))
      << server_.connection_count();
  g_gate_open.store(true, std::memory_order_release);
  all.wait();
  for (int i = 0; i < n; ++i) EXPECT_EQ(0, cntls[i].ErrorCode());
  // A timed-out call's connection is closed, never handed out again.
  Controller slow;
  slow.set_timeout_ms(30);
  const std::string before = Call(&ch, "whoami", "", &c1);
  Call(&ch, "sleep", "300", &slow);
  EXPECT_EQ(ERPCTIMEDOUT, slow.ErrorCode());
  std::set<std::string> seen;
  for (int i = 0; i < 2 * n; ++i) {
    Controller c;
    seen.insert(Call(&ch, "whoami", "", &c));
    EXPECT_EQ(0, c.ErrorCode());
  }
  (void)before;
  // Up to n idle connections remain; the timed-out one is not among the
  // ones handed out (its reply, 300 ms later, is dropped as late).
  EXPECT_LE(seen.size(), static_cast<size_t>(n));
}

TEST_F(ChannelTest, ShortConnectionsAreOnePerCall) {
  test::Watchdog dog("short", test::kLong);
  Channel ch;
  ASSERT_EQ(0, InitChannel(&ch, kShort));
  std::set<std::string> seen;
  for (int i = 0; i < 5; ++i) {
    Controller c;
    seen.insert(Call(&ch, "whoami", "", &c));
    EXPECT_EQ(0, c.ErrorCode()) << c.ErrorText();
  }
  EXPECT_EQ(5u, seen.size());
  const int64_t deadline = test::now_ms() + 5000 * kTimeScale;
  while (server_.connection_count() != 0 && test::now_ms() < deadline) usleep(1000);
  EXPECT_EQ(0u, server_.connection_count());
}

TEST(ChannelInitTest, RefusesUnknownProtocolsAndBadAddresses) {
  Channel ch;
  ChannelOptions opt;
  opt.protocol = "no-such-protocol";
  EXPECT_EQ(-1, ch.Init("127.0.0.1:1", &opt));
  EXPECT_EQ(ENOPROTOOPT, errno);
  Channel ch2;
  EXPECT_EQ(-1, ch2.Init("not an address", nullptr));
  EXPECT_EQ(EINVAL, errno);
  Channel uninit;
  Controller cntl;
  IOBuf req, resp;
  req.append("x");
  uninit.CallMethod("echo", &cntl, req, &resp, nullptr);
  EXPECT_EQ(EINVAL, cntl.ErrorCode());
}

}  // namespace
}  // namespace weft::rpc
