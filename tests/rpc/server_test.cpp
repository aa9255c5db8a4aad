// weft::rpc::Server over weft_std, driven by a raw client that writes
// weft_std frames on a plain blocking TCP socket (127.0.0.1), so the
// client side does not depend on weft.
#include "weft/rpc/server.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "net_test_util.h"
#include "protocols/weft_std/weft_std_format.h"
#include "weft/bthread.h"
#include "weft/countdown_event.h"
#include "weft/metrics.h"
#include "weft/net/input_messenger.h"
#include "weft/rpc/errno.h"
#include "weft/rpc/protocol.h"
#include "weft_std_raw_client.h"

namespace weft::rpc {
namespace {

using test::kLong;
using test::now_ms;
using test::Watchdog;
namespace ws = weft_std;

using test_raw::Frame;
using test_raw::HeaderBytes;
using test_raw::RawClient;
using test_raw::RequestBytes;
using test_raw::WaitFor;

struct JoinOnExit {
  explicit JoinOnExit(std::thread* t) : t_(t) {}
  ~JoinOnExit() { Join(); }
  void Join() {
    if (t_->joinable()) t_->join();
  }
  std::thread* t_;
};

using test_raw::Echo;
using test_raw::Sleep;

// A method that waits for *gate, then echoes (and counts its end in
// *finished when given): calls a test needs held in the handler.
auto GatedEcho(CountdownEvent* gate, std::atomic<int>* finished = nullptr) {
  return [gate, finished](Controller*, const IOBuf& req, IOBuf* resp, Closure done) {
    gate->wait();
    resp->append(req);
    done();
    if (finished != nullptr) finished->fetch_add(1);
  };
}

class ServerTest : public ::testing::Test {
 protected:
  void StartServer(const ServerOptions* opt = nullptr) {
    ASSERT_EQ(0, server_.AddMethod("echo", Echo));
    ASSERT_EQ(0, server_.AddMethod("sleep", Sleep));
    ASSERT_EQ(0, server_.Start("127.0.0.1:0", opt));
    ASSERT_NE(0, server_.listen_address().port());
  }
  EndPoint addr() const { return server_.listen_address(); }

  Server server_;
};

TEST_F(ServerTest, EchoAnswersWithTheCorrelationIdAndPayload) {
  Watchdog wd("echo", kLong);
  StartServer();
  RawClient c(addr());
  ASSERT_TRUE(c.ok());
  for (uint64_t i = 1; i <= 50; ++i) {
    const std::string payload(static_cast<size_t>(i * 13), static_cast<char>('a' + i % 26));
    ASSERT_TRUE(c.Call(i * 0x100000001ull, "echo", payload));
    Frame f;
    ASSERT_TRUE(c.Read(&f));
    EXPECT_TRUE(f.header.is_response());
    EXPECT_EQ(i * 0x100000001ull, f.header.correlation_id);
    EXPECT_EQ(0, f.header.error_code);
    EXPECT_EQ(0, f.header.meta_size);
    EXPECT_EQ(payload, f.payload);
  }
  // Per-method metrics in the runtime's registry.
  std::ostringstream os;
  dump_metrics(os);
  const std::string prefix = "weft_rpc_server_" + std::to_string(addr().port()) + "_echo_";
  EXPECT_NE(std::string::npos, os.str().find(prefix + "count : 50")) << os.str();
  EXPECT_NE(std::string::npos, os.str().find(prefix + "errors : 0"));
  EXPECT_NE(std::string::npos, os.str().find(prefix + "latency : count=50"));
  EXPECT_NE(std::string::npos, os.str().find(prefix + "max_concurrency : 1"));
}

TEST_F(ServerTest, SlowAndFastCallsOnOneConnectionReplyInCompletionOrder) {
  Watchdog wd("out of order", kLong);
  StartServer();
  RawClient c(addr());
  ASSERT_TRUE(c.ok());
  // One write: the slow call is cut first, the fast ones behind it on the
  // same connection.
  std::string batch = RequestBytes(1, "sleep", "300");
  for (uint64_t i = 2; i <= 6; ++i) batch += RequestBytes(i, "echo", "fast" + std::to_string(i));
  ASSERT_TRUE(c.Send(batch));
  std::vector<uint64_t> order;
  std::map<uint64_t, std::string> got;
  for (int i = 0; i < 6; ++i) {
    Frame f;
    ASSERT_TRUE(c.Read(&f));
    ASSERT_EQ(0, f.header.error_code);
    order.push_back(f.header.correlation_id);
    got[f.header.correlation_id] = f.payload;
  }
  // The slow one did not hold the fast ones back.
  EXPECT_EQ(1u, order.back());
  EXPECT_EQ("300", got[1]);
  for (uint64_t i = 2; i <= 6; ++i) EXPECT_EQ("fast" + std::to_string(i), got[i]);
}

TEST_F(ServerTest, UnknownMethodIsEnomethodWithTextAndTheConnectionStaysOpen) {
  Watchdog wd("enomethod", kLong);
  StartServer();
  RawClient c(addr());
  ASSERT_TRUE(c.Call(7, "no_such_method", "payload"));
  Frame f;
  ASSERT_TRUE(c.Read(&f));
  EXPECT_EQ(7u, f.header.correlation_id);
  EXPECT_EQ(ENOMETHOD, f.header.error_code);
  EXPECT_FALSE(f.meta.empty());
  EXPECT_NE(std::string::npos, f.meta.find("no_such_method"));
  EXPECT_TRUE(f.payload.empty());
  ASSERT_TRUE(c.Call(8, "echo", "still here"));
  ASSERT_TRUE(c.Read(&f));
  EXPECT_EQ(8u, f.header.correlation_id);
  EXPECT_EQ(0, f.header.error_code);
  EXPECT_EQ("still here", f.payload);
}

TEST(ServerLimitTest, BeyondMaxConcurrencyIsElimitWithoutRunningTheHandler) {
  Watchdog wd("elimit", kLong);
  CountdownEvent gate(1);
  std::atomic<int> blocked_runs{0};
  std::atomic<int> echo_runs{0};
  Server server;
  ASSERT_EQ(
      0, server.AddMethod("block", [&](Controller*, const IOBuf& req, IOBuf* resp, Closure done) {
        blocked_runs.fetch_add(1);
        gate.wait();
        resp->append(req);
        done();
      }));
  ASSERT_EQ(0,
            server.AddMethod("echo", [&](Controller*, const IOBuf& req, IOBuf* resp, Closure done) {
              echo_runs.fetch_add(1);
              resp->append(req);
              done();
            }));
  ServerOptions opt;
  opt.max_concurrency = 2;
  ASSERT_EQ(0, server.Start("127.0.0.1:0", &opt));
  RawClient c(server.listen_address());
  ASSERT_TRUE(c.Call(1, "block", "a"));
  ASSERT_TRUE(c.Call(2, "block", "b"));
  ASSERT_TRUE(WaitFor([&] { return blocked_runs.load() == 2; }));
  ASSERT_TRUE(c.Call(3, "echo", "refused"));
  Frame f;
  ASSERT_TRUE(c.Read(&f));
  EXPECT_EQ(3u, f.header.correlation_id);
  EXPECT_EQ(ELIMIT, f.header.error_code);
  EXPECT_FALSE(f.meta.empty());
  EXPECT_EQ(0, echo_runs.load());
  gate.signal();
  std::map<uint64_t, std::string> got;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(c.Read(&f));
    EXPECT_EQ(0, f.header.error_code);
    got[f.header.correlation_id] = f.payload;
  }
  EXPECT_EQ("a", got[1]);
  EXPECT_EQ("b", got[2]);
  // Under the limit again: served.
  ASSERT_TRUE(c.Call(4, "echo", "served"));
  ASSERT_TRUE(c.Read(&f));
  EXPECT_EQ(0, f.header.error_code);
  EXPECT_EQ(1, echo_runs.load());
}

TEST(ServerLimitTest, PastMaxConnectionsANewConnectionIsClosedAtOnce) {
  Watchdog wd("max_connections", kLong);
  Server server;
  ASSERT_EQ(0, server.AddMethod("echo", Echo));
  ServerOptions opt;
  opt.max_connections = 2;
  ASSERT_EQ(0, server.Start("127.0.0.1:0", &opt));
  auto a = std::make_unique<RawClient>(server.listen_address());
  RawClient b(server.listen_address());
  Frame f;
  ASSERT_TRUE(a->Call(1, "echo", "a") && a->Read(&f));
  ASSERT_TRUE(b.Call(2, "echo", "b") && b.Read(&f));
  // Counted just after its socket starts serving (the acceptor's map is
  // updated after Socket::Create): a reply may come first.
  ASSERT_TRUE(WaitFor([&] { return server.connection_count() == 2; }));
  {
    RawClient third(server.listen_address());
    ASSERT_TRUE(third.ok());            // accepted by the kernel...
    EXPECT_TRUE(third.ClosedByPeer());  // ...and closed by the server, unserved
  }
  EXPECT_EQ(2u, server.connection_count());
  ASSERT_TRUE(b.Call(3, "echo", "b2") && b.Read(&f));
  EXPECT_EQ("b2", f.payload);
  // A slot freed: a new connection is served.
  a.reset();
  ASSERT_TRUE(WaitFor([&] { return server.connection_count() == 1; }));
  RawClient d(server.listen_address());
  ASSERT_TRUE(d.Call(4, "echo", "d"));
  ASSERT_TRUE(d.Read(&f));
  EXPECT_EQ("d", f.payload);
}

// Each bad frame of rpc.md closes its connection while another connection
// of the same server goes on being served.
TEST_F(ServerTest, MalformedAndOversizedFramesCloseOnlyTheirConnection) {
  Watchdog wd("bad frames", kLong);
  StartServer();
  RawClient good(addr());
  const uint32_t max = static_cast<uint32_t>(max_body_size());
  const std::vector<std::pair<const char*, std::string>> bad = {
      {"body_size over the max", HeaderBytes(max + 1, 1, 0, 4) + "echo"},
      {"meta_size over body_size", HeaderBytes(2, 1, 0, 4) + "ec"},
      {"request without method", HeaderBytes(3, 1, 0, 0) + "abc"},
      {"method over 255 bytes", HeaderBytes(256, 1, 0, 256) + std::string(256, 'm')},
      {"a response at a server", HeaderBytes(2, 1, ws::kFlagResponse, 0) + "ok"},
      // Not an HTTP request either: the http protocol would serve that.
      {"not weft_std at all", std::string("\x16\x03\x01\x00\x05hello", 10)},
      {"weft_std, then not", RequestBytes(1, "echo", "x") + "JUNKJUNKJUNKJUNKJUNKJUNKJUNK"},
  };
  uint64_t cid = 100;
  for (const auto& [what, bytes] : bad) {
    RawClient b(addr());
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE(b.Send(bytes)) << what;
    EXPECT_TRUE(b.ClosedByPeer()) << what;
    Frame f;
    ASSERT_TRUE(good.Call(++cid, "echo", what)) << what;
    ASSERT_TRUE(good.Read(&f)) << what;
    EXPECT_EQ(cid, f.header.correlation_id);
    EXPECT_EQ(what, f.payload);
  }
}

TEST_F(ServerTest, CallsOfABadConnectionFinishAndTheirRepliesAreDropped) {
  Watchdog wd("bad connection calls", kLong);
  std::atomic<int> finished{0};
  CountdownEvent gate(1);
  ASSERT_EQ(0, server_.AddMethod("gated", GatedEcho(&gate, &finished)));
  StartServer();
  RawClient b(addr());
  ASSERT_TRUE(b.Call(1, "gated", "x"));
  ASSERT_TRUE(WaitFor([&] { return server_.calls_in_flight() == 1; }));
  ASSERT_TRUE(b.Send(HeaderBytes(3, 2, 0, 0) + "abc"));  // a request without a method
  EXPECT_TRUE(b.ClosedByPeer());
  gate.signal();
  ASSERT_TRUE(WaitFor([&] { return finished.load() == 1 && server_.calls_in_flight() == 0; }));
  ASSERT_TRUE(WaitFor([&] { return server_.connection_count() == 0; }));
}

TEST_F(ServerTest, StopThenJoinAnswersEveryStartedCallThenCloses) {
  Watchdog wd("stop join", kLong);
  // The started calls are held until the refusals below were read (a
  // sleep they outlast would race them on a slow machine).
  CountdownEvent gate(1);
  ASSERT_EQ(0, server_.AddMethod("gated", GatedEcho(&gate)));
  StartServer();
  RawClient c1(addr());
  RawClient c2(addr());
  constexpr int kPerConn = 5;
  // Released on every exit, so the server can stop.
  struct SignalOnExit {
    CountdownEvent* e;
    bool done = false;
    void Signal() {
      if (!done) e->signal();
      done = true;
    }
    ~SignalOnExit() { Signal(); }
  } release{&gate};
  for (int i = 0; i < kPerConn; ++i) {
    ASSERT_TRUE(c1.Call(static_cast<uint64_t>(i), "gated", "200"));
    ASSERT_TRUE(c2.Call(static_cast<uint64_t>(100 + i), "gated", "200"));
  }
  ASSERT_TRUE(WaitFor([&] { return server_.calls_in_flight() == 2 * kPerConn; }));
  server_.Stop();
  EXPECT_FALSE(server_.IsRunning());
  // A call after Stop is refused, and no new connection is served.
  ASSERT_TRUE(c1.Call(999, "echo", "late"));
  Frame f;
  ASSERT_TRUE(c1.Read(&f));
  EXPECT_EQ(999u, f.header.correlation_id);
  EXPECT_EQ(ELOGOFF, f.header.error_code);
  {
    RawClient late(addr());
    if (late.ok()) {
      late.Call(1, "echo", "x");
      Frame g;
      EXPECT_FALSE(late.Read(&g, 500));
    }
  }
  release.Signal();
  std::thread joiner([this] { server_.Join(); });
  // Joined on every exit, a failed assertion included.
  JoinOnExit guard(&joiner);
  for (RawClient* c : {&c1, &c2}) {
    std::set<uint64_t> answered;
    for (int i = 0; i < kPerConn; ++i) {
      ASSERT_TRUE(c->Read(&f));
      EXPECT_EQ(0, f.header.error_code);
      EXPECT_EQ("200", f.payload);
      answered.insert(f.header.correlation_id);
    }
    EXPECT_EQ(static_cast<size_t>(kPerConn), answered.size());
    EXPECT_TRUE(c->ClosedByPeer());
  }
  guard.Join();
  EXPECT_EQ(0, server_.calls_in_flight());
  EXPECT_EQ(0u, server_.connection_count());
}

TEST_F(ServerTest, AHandlerMayAnswerLaterFromAPthread) {
  Watchdog wd("pthread answer", kLong);
  std::mutex mu;
  std::vector<std::thread> threads;
  // The answering threads are joined on every exit (they hold `done`,
  // which refers to the server, so the server is joined first).
  struct JoinAll {
    Server* server;
    std::mutex* mu;
    std::vector<std::thread>* threads;
    ~JoinAll() {
      server->Stop();
      server->Join();
      std::lock_guard<std::mutex> lock(*mu);
      for (auto& t : *threads) {
        if (t.joinable()) t.join();
      }
    }
  } join_all{&server_, &mu, &threads};
  ASSERT_EQ(0, server_.AddMethod(
                   "later", [&](Controller* cntl, const IOBuf& req, IOBuf* resp, Closure done) {
                     std::lock_guard<std::mutex> lock(mu);
                     threads.emplace_back([cntl, &req, resp, done = std::move(done)]() mutable {
                       usleep(20000);
                       if (req.equals("fail")) {
                         cntl->SetFailed(EREQUEST, "asked to fail");
                       } else {
                         resp->append("from a pthread: ");
                         resp->append(req);
                       }
                       done();
                     });
                   }));
  StartServer();
  RawClient c(addr());
  ASSERT_TRUE(c.Call(1, "later", "one"));
  ASSERT_TRUE(c.Call(2, "later", "fail"));
  ASSERT_TRUE(c.Call(3, "echo", "quick"));
  std::map<uint64_t, Frame> got;
  for (int i = 0; i < 3; ++i) {
    Frame f;
    ASSERT_TRUE(c.Read(&f));
    got[f.header.correlation_id] = f;
  }
  EXPECT_EQ("from a pthread: one", got[1].payload);
  EXPECT_EQ(EREQUEST, got[2].header.error_code);
  EXPECT_EQ("asked to fail", got[2].meta);
  EXPECT_EQ("quick", got[3].payload);
}

TEST(ServerApiTest, AddMethodAndStartErrors) {
  Server s;
  EXPECT_EQ(-1, s.AddMethod("", Echo));
  EXPECT_EQ(EINVAL, errno);
  EXPECT_EQ(-1, s.AddMethod(std::string(256, 'x'), Echo));
  EXPECT_EQ(EINVAL, errno);
  EXPECT_EQ(-1, s.AddMethod("x", MethodHandler()));
  EXPECT_EQ(EINVAL, errno);
  ASSERT_EQ(0, s.AddMethod("echo", Echo));
  EXPECT_EQ(-1, s.AddMethod("echo", Echo));
  EXPECT_EQ(EEXIST, errno);
  EXPECT_EQ(-1, s.Start("not an address", nullptr));
  EXPECT_EQ(EINVAL, errno);
  ServerOptions bad;
  bad.protocols = {"no_such_protocol"};
  EXPECT_EQ(-1, s.Start("127.0.0.1:0", &bad));
  EXPECT_EQ(EINVAL, errno);
  ServerOptions opt;
  opt.protocols = {"weft_std"};
  ASSERT_EQ(0, s.Start(EndPoint::loopback(0), &opt));
  EXPECT_TRUE(s.IsRunning());
  EXPECT_EQ(-1, s.Start("127.0.0.1:0", nullptr));
  EXPECT_EQ(EBUSY, errno);
  EXPECT_EQ(-1, s.AddMethod("late", Echo));
  EXPECT_EQ(EBUSY, errno);
  Server other;
  EXPECT_EQ(-1, other.Start(s.listen_address(), nullptr));
  EXPECT_EQ(EADDRINUSE, errno);
  s.Stop();
  s.Join();
  s.Join();  // idempotent
}

TEST(ServerOptionsTest, IdleConnectionsCloseAfterIdleTimeoutSec) {
  Watchdog wd("idle timeout", kLong);
  Server server;
  ASSERT_EQ(0, server.AddMethod("echo", Echo));
  ServerOptions opt;
  opt.idle_timeout_sec = 1;
  ASSERT_EQ(0, server.Start("127.0.0.1:0", &opt));
  RawClient c(server.listen_address());
  Frame f;
  ASSERT_TRUE(c.Call(1, "echo", "x") && c.Read(&f));
  EXPECT_TRUE(c.ClosedByPeer(10000 * test::kTimeScale));
  ASSERT_TRUE(WaitFor([&] { return server.connection_count() == 0; }));
}

TEST(ServerApiTest, DefaultsAreDocumented) {
  ServerOptions opt;
  EXPECT_EQ(-1, opt.idle_timeout_sec);
  EXPECT_EQ(0, opt.max_concurrency);
  EXPECT_EQ(0, opt.max_connections);
  EXPECT_EQ(0, opt.num_threads);
  EXPECT_TRUE(opt.protocols.empty());
}

TEST(ServerApiTest, ConcurrentJoinsDrainOnceAndAllReturn) {
  Watchdog wd("concurrent joins", kLong);
  Server server;
  ASSERT_EQ(0, server.AddMethod("sleep", Sleep));
  ASSERT_EQ(0, server.Start("127.0.0.1:0", nullptr));
  RawClient c(server.listen_address());
  ASSERT_TRUE(c.Call(1, "sleep", "100"));
  ASSERT_TRUE(WaitFor([&] { return server.calls_in_flight() == 1; }));
  std::vector<std::thread> joiners;
  for (int i = 0; i < 4; ++i) joiners.emplace_back([&] { server.Join(); });
  for (auto& t : joiners) t.join();
  Frame f;
  ASSERT_TRUE(c.Read(&f));
  EXPECT_EQ(0, f.header.error_code);
  EXPECT_EQ(0, server.calls_in_flight());
}

// A protocol for the test below: takes any bytes that do not start with
// 'W' and answers "ANY".
ParseResult ParseAny(IOBuf* source, Socket*, bool, const void*) {
  if (source->empty() || source->byte_at(0) == 'W') {
    return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
  }
  source->clear();
  return ParseResult::Ok(new InputMessageBase);
}
void ProcessAny(InputMessageBase* msg) {
  IOBuf out;
  out.append("ANY");
  msg->socket()->Write(&out);
  msg->Destroy();
}

TEST(ServerProtocolsTest, AConnectionThatPickedWeftStdKeepsIt) {
  Watchdog wd("keeps weft_std", kLong);
  Protocol any;
  any.name = "test_any";
  any.parse = ParseAny;
  any.process_request = ProcessAny;
  any.supported_connection_types = kPooled | kShort;
  ASSERT_EQ(0, RegisterProtocol(any));
  Server server;
  ASSERT_EQ(0, server.AddMethod("echo", Echo));
  ServerOptions opt;
  opt.protocols = {"weft_std", "test_any"};
  ASSERT_EQ(0, server.Start("127.0.0.1:0", &opt));
  // The other protocol serves connections that start with its bytes...
  RawClient other(server.listen_address());
  ASSERT_TRUE(other.Send("hello"));
  EXPECT_EQ("ANY", test::read_until(other.fd(), 3, kLong.count()));
  // ...but a connection that spoke weft_std is closed by a non-WFT1 frame,
  // not handed to the other protocol.
  RawClient c(server.listen_address());
  Frame f;
  ASSERT_TRUE(c.Call(1, "echo", "x") && c.Read(&f));
  ASSERT_TRUE(c.Send("hello, another protocol"));
  EXPECT_TRUE(c.ClosedByPeer());
}

}  // namespace
}  // namespace weft::rpc
