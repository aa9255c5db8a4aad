// HTTP/1.1 on weft::rpc::Server, driven by raw blocking TCP clients on
// 127.0.0.1: keep-alive, pipelining in order (handlers answering out of
// order), HTTP/1.0, Connection: close, 400/404/405/413/431 closing only
// their connection, slowloris cut by the read timeout, max_connections,
// the built-in pages, and weft_std + http on one port.
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "../runtime/test_util.h"
#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/rpc/channel.h"
#include "weft/rpc/http.h"
#include "weft/rpc/server.h"

DECLARE_int32(weft_read_timeout_ms);

namespace weft::rpc {
namespace {

using test::kLong;
using test::now_ms;

struct Response {
  int status = 0;
  std::string head;
  std::string body;
  bool has(const std::string& field) const { return head.find(field) != std::string::npos; }
};

class HttpClient {
 public:
  explicit HttpClient(const EndPoint& server) : fd_(test::connect_to(server)) {}
  ~HttpClient() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

  bool Send(const std::string& bytes) { return test::send_all(fd_, bytes); }

  // One response (Content-Length framed); false on EOF, error or timeout.
  bool Read(Response* r, bool head_request = false, int64_t timeout_ms = kLong.count()) {
    const int64_t deadline = now_ms() + timeout_ms;
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill(deadline)) return false;
    }
    r->head = buf_.substr(0, end + 4);
    r->status = atoi(r->head.c_str() + 9);
    size_t len = 0;
    const size_t cl = r->head.find("Content-Length: ");
    if (cl != std::string::npos) len = strtoul(r->head.c_str() + cl + 16, nullptr, 10);
    if (head_request) len = 0;
    while (buf_.size() < end + 4 + len) {
      if (!Fill(deadline)) return false;
    }
    r->body = buf_.substr(end + 4, len);
    buf_.erase(0, end + 4 + len);
    return true;
  }

  // True when the server closed (EOF or reset) within timeout_ms with
  // nothing more to read.
  bool ClosedByPeer(int64_t timeout_ms = 5000 * test::kTimeScale) {
    return test::closed_by_peer(fd_, timeout_ms, &buf_);
  }
  const std::string& leftover() const { return buf_; }

 private:
  bool Fill(int64_t deadline) {
    const int64_t left = deadline - now_ms();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    const int rc = poll(&p, 1, static_cast<int>(left));
    if (rc < 0 && errno != EINTR) return false;
    if (rc <= 0) return true;
    char c[65536];
    const ssize_t n = recv(fd_, c, sizeof(c), 0);
    if (n == 0) return false;
    if (n < 0) return errno == EINTR || errno == EAGAIN;
    buf_.append(c, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buf_;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(
        0, AddHttpHandler(&server_, "/", [](const HttpRequest&, HttpResponse* resp, Closure done) {
          resp->body.append("Hello, world!");
          done();
        }));
    ASSERT_EQ(0, AddHttpHandler(&server_, "/echo",
                                [](const HttpRequest& req, HttpResponse* resp, Closure done) {
                                  resp->body.append(req.body);
                                  done();
                                },
                                {"POST", "PUT"}));
    // Answers from another fiber after ?ms=N milliseconds: later requests
    // of the same connection finish first.
    ASSERT_EQ(
        0, AddHttpHandler(
               &server_, "/sleep", [](const HttpRequest& req, HttpResponse* resp, Closure done) {
                 struct Job {
                   int ms;
                   HttpResponse* resp;
                   Closure done;
                   std::string tag;
                 };
                 auto* job = new Job{atoi(req.query.c_str() + 3), resp, std::move(done), req.query};
                 bthread_t th;
                 ASSERT_EQ(0, bthread_start_background(
                                  &th, nullptr,
                                  [](void* arg) -> void* {
                                    auto* j = static_cast<Job*>(arg);
                                    bthread_usleep(static_cast<uint64_t>(j->ms) * 1000);
                                    j->resp->body.append(j->tag);
                                    j->done();
                                    delete j;
                                    return nullptr;
                                  },
                                  job));
               }));
    EnableHttpBuiltinPages(&server_);
    ServerOptions opt;
    opt.max_connections = max_connections_;
    ASSERT_EQ(0, server_.Start("127.0.0.1:0", &opt));
  }
  void TearDown() override {
    server_.Join();
    RemoveHttpService(&server_);
  }

  int max_connections_ = 0;
  Server server_;
};

TEST_F(HttpServerTest, KeepAliveServesManyRequestsOnOneConnection) {
  test::Watchdog dog("keep-alive", kLong);
  HttpClient c(server_.listen_address());
  ASSERT_TRUE(c.ok());
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r;
    ASSERT_TRUE(c.Read(&r));
    EXPECT_EQ(200, r.status);
    EXPECT_EQ("Hello, world!", r.body);
    EXPECT_FALSE(r.has("Connection: close"));
  }
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"));
  Response r;
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ(200, r.status);
  EXPECT_EQ("hello", r.body);
  ASSERT_TRUE(
      c.Send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
             "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"));
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ("abcde", r.body);
  ASSERT_TRUE(c.Send("HEAD / HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(c.Read(&r, true));
  EXPECT_EQ(200, r.status);
  EXPECT_TRUE(r.has("Content-Length: 13\r\n"));
  // Nothing of the body followed the HEAD response.
  ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ("Hello, world!", r.body);
}

TEST_F(HttpServerTest, PipelinedRepliesKeepRequestOrderWhenHandlersFinishOutOfOrder) {
  test::Watchdog dog("pipelining", kLong);
  HttpClient c(server_.listen_address());
  std::string batch;
  // Decreasing delays: each request finishes before the one sent before it.
  const int delays[] = {120, 80, 40, 0};
  for (int ms : delays) batch += "GET /sleep?ms=" + std::to_string(ms) + " HTTP/1.1\r\n\r\n";
  batch += "GET / HTTP/1.1\r\n\r\n";
  ASSERT_TRUE(c.Send(batch));
  for (int ms : delays) {
    Response r;
    ASSERT_TRUE(c.Read(&r));
    EXPECT_EQ("ms=" + std::to_string(ms), r.body);
  }
  Response r;
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ("Hello, world!", r.body);
}

TEST_F(HttpServerTest, ConnectionCloseFlushesTheResponseThenCloses) {
  test::Watchdog dog("close", kLong);
  HttpClient c(server_.listen_address());
  // The request after the closing one is never answered.
  ASSERT_TRUE(
      c.Send("GET /sleep?ms=50 HTTP/1.1\r\nConnection: close\r\n\r\n"
             "GET / HTTP/1.1\r\n\r\n"));
  Response r;
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ(200, r.status);
  EXPECT_EQ("ms=50", r.body);
  EXPECT_TRUE(r.has("Connection: close\r\n"));
  EXPECT_TRUE(c.ClosedByPeer());
  EXPECT_EQ("", c.leftover());
}

TEST_F(HttpServerTest, Http10ClosesUnlessKeepAlive) {
  test::Watchdog dog("1.0", kLong);
  {
    HttpClient c(server_.listen_address());
    ASSERT_TRUE(c.Send("GET / HTTP/1.0\r\n\r\n"));
    Response r;
    ASSERT_TRUE(c.Read(&r));
    EXPECT_EQ("Hello, world!", r.body);
    EXPECT_TRUE(c.ClosedByPeer());
  }
  HttpClient c(server_.listen_address());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.Send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    Response r;
    ASSERT_TRUE(c.Read(&r));
    EXPECT_EQ("Hello, world!", r.body);
    EXPECT_TRUE(r.has("Connection: keep-alive\r\n"));
  }
}

TEST_F(HttpServerTest, NotFoundAndMethodNotAllowedKeepTheConnection) {
  test::Watchdog dog("404/405", kLong);
  HttpClient c(server_.listen_address());
  ASSERT_TRUE(
      c.Send("GET /nope HTTP/1.1\r\n\r\nDELETE / HTTP/1.1\r\n\r\n"
             "GET /echo HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
  Response r;
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ(404, r.status);
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ(405, r.status);
  EXPECT_TRUE(r.has("Allow: GET, HEAD\r\n"));
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ(405, r.status);
  EXPECT_TRUE(r.has("Allow: POST, PUT\r\n"));
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ(200, r.status);
}

// Each refusal is answered, closes its connection only, and the replies of
// the requests before it still go out first.
TEST_F(HttpServerTest, MalformedRequestsAreAnsweredAndCloseOnlyTheirConnection) {
  test::Watchdog dog("refusals", kLong);
  HttpClient bystander(server_.listen_address());
  ASSERT_TRUE(bystander.Send("GET / HTTP/1.1\r\n\r\n"));
  Response r;
  ASSERT_TRUE(bystander.Read(&r));
  struct Case {
    std::string bytes;
    int status;
  };
  std::vector<Case> cases = {
      {"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 1e30\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400},
      // 413 from the head alone: no body byte is sent.
      {"POST /echo HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", 413},
      {"GET / HTTP/1.1\r\nX: " + std::string(70 * 1024, 'a') + "\r\n\r\n", 431},
      {"GET / HTTP/2.0\r\n\r\n", 505},
  };
  std::string flood = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 200; ++i) flood += "X-" + std::to_string(i) + ": v\r\n";
  cases.push_back({flood + "\r\n", 431});
  for (const Case& k : cases) {
    HttpClient c(server_.listen_address());
    ASSERT_TRUE(c.Send("GET /sleep?ms=30 HTTP/1.1\r\n\r\n" + k.bytes));
    ASSERT_TRUE(c.Read(&r));
    EXPECT_EQ(200, r.status);
    ASSERT_TRUE(c.Read(&r)) << k.status;
    EXPECT_EQ(k.status, r.status) << r.body;
    EXPECT_TRUE(r.has("Connection: close\r\n"));
    EXPECT_TRUE(c.ClosedByPeer());
  }
  ASSERT_TRUE(bystander.Send("GET / HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(bystander.Read(&r));
  EXPECT_EQ("Hello, world!", r.body);
}

TEST_F(HttpServerTest, PartialRequestIsCutOffByTheReadTimeout) {
  test::Watchdog dog("slowloris", kLong);
  // Relaxed atomics: the acceptor's closer fiber reads the flag meanwhile.
  const int saved = __atomic_load_n(&FLAGS_weft_read_timeout_ms, __ATOMIC_RELAXED);
  __atomic_store_n(&FLAGS_weft_read_timeout_ms, 300, __ATOMIC_RELAXED);
  HttpClient slow(server_.listen_address());
  HttpClient good(server_.listen_address());
  ASSERT_TRUE(slow.Send("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "));
  const int64_t t0 = now_ms();
  // Trickling bytes does not reset the timeout.
  bool closed = false;
  for (int i = 0; i < 50 && !closed; ++i) {
    slow.Send("a");
    closed = slow.ClosedByPeer(100);
  }
  if (!closed) closed = slow.ClosedByPeer();
  EXPECT_TRUE(closed);
  EXPECT_GE(now_ms() - t0, 250);
  ASSERT_TRUE(good.Send("GET / HTTP/1.1\r\n\r\n"));
  Response r;
  ASSERT_TRUE(good.Read(&r));
  EXPECT_EQ(200, r.status);
  __atomic_store_n(&FLAGS_weft_read_timeout_ms, saved, __ATOMIC_RELAXED);
}

TEST_F(HttpServerTest, BuiltinPages) {
  test::Watchdog dog("pages", kLong);
  HttpClient c(server_.listen_address());
  auto get = [&](const std::string& path) {
    Response r;
    EXPECT_TRUE(c.Send("GET " + path + " HTTP/1.1\r\n\r\n"));
    EXPECT_TRUE(c.Read(&r));
    EXPECT_EQ(200, r.status) << path;
    return r.body;
  };
  EXPECT_EQ("OK\n", get("/health"));
  EXPECT_NE(std::string::npos, get("/vars").find("http_request_count : "));
  const std::string prom = get("/metrics");
  EXPECT_NE(std::string::npos, prom.find("# TYPE http_request_count"));
  EXPECT_NE(std::string::npos, get("/fibers").find("fiber "));
  HttpClient other(server_.listen_address());
  ASSERT_TRUE(other.Send("GET /health HTTP/1.1\r\n\r\n"));
  Response r;
  ASSERT_TRUE(other.Read(&r));
  // The acceptor lists a connection just after starting it, so its first
  // reply can come before it is listed.
  ASSERT_TRUE(test::wait_until([&] { return server_.connection_count() == 2; }, kLong));
  const std::string conns = get("/connections");
  EXPECT_NE(std::string::npos, conns.find("127.0.0.1:")) << conns;
  EXPECT_NE(std::string::npos, conns.find("protocol=http in=")) << conns;
  EXPECT_NE(std::string::npos, conns.find("2 connections\n")) << conns;
  // Off for a Server that turns them off.
  EnableHttpBuiltinPages(&server_, false);
  ASSERT_TRUE(c.Send("GET /health HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ(404, r.status);
}

TEST_F(HttpServerTest, WeftStdAndHttpShareThePort) {
  test::Watchdog dog("detection", kLong);
  // The fixture's server has no weft_std method: ENOMETHOD proves weft_std
  // answered on the same port HTTP is served on.
  Channel ch;
  ChannelOptions opt;
  opt.timeout_ms = 5000 * test::kTimeScale;
  ASSERT_EQ(0, ch.Init(server_.listen_address(), &opt));
  Controller cntl;
  IOBuf req, resp;
  req.append("x");
  ch.CallMethod("echo", &cntl, req, &resp, nullptr);
  EXPECT_EQ(ENOMETHOD, cntl.ErrorCode()) << cntl.ErrorText();
  HttpClient c(server_.listen_address());
  ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\n\r\n"));
  Response r;
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ("Hello, world!", r.body);
  const std::string conns = [&] {
    EXPECT_TRUE(c.Send("GET /connections HTTP/1.1\r\n\r\n"));
    EXPECT_TRUE(c.Read(&r));
    return r.body;
  }();
  EXPECT_NE(std::string::npos, conns.find("protocol=weft_std")) << conns;
}

class HttpMaxConnectionsTest : public HttpServerTest {
 protected:
  void SetUp() override {
    max_connections_ = 2;
    HttpServerTest::SetUp();
  }
};

TEST_F(HttpMaxConnectionsTest, ConnectionsPastTheCapAreClosedOthersServed) {
  test::Watchdog dog("max_connections", kLong);
  HttpClient a(server_.listen_address()), b(server_.listen_address());
  Response r;
  ASSERT_TRUE(a.Send("GET / HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(a.Read(&r));
  ASSERT_TRUE(b.Send("GET / HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(b.Read(&r));
  for (int i = 0; i < 10; ++i) {
    HttpClient extra(server_.listen_address());
    extra.Send("GET / HTTP/1.1\r\n\r\n");
    EXPECT_TRUE(extra.ClosedByPeer());
  }
  ASSERT_TRUE(a.Send("GET / HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(a.Read(&r));
  EXPECT_EQ("Hello, world!", r.body);
}

TEST(HttpServerStop, RequestsAfterStopAre503) {
  test::Watchdog dog("stop", kLong);
  Server server;
  ASSERT_EQ(0,
            AddHttpHandler(&server, "/", [](const HttpRequest&, HttpResponse* resp, Closure done) {
              resp->body.append("x");
              done();
            }));
  ASSERT_EQ(0, server.Start("127.0.0.1:0", nullptr));
  HttpClient c(server.listen_address());
  Response r;
  ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(c.Read(&r));
  server.Stop();
  ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(c.Read(&r));
  EXPECT_EQ(503, r.status);
  EXPECT_TRUE(c.ClosedByPeer());
  server.Join();
  RemoveHttpService(&server);
}

}  // namespace
}  // namespace weft::rpc
