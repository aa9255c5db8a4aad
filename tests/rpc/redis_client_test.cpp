// The redis protocol's client on weft::rpc::Channel against weft-redis'
// commands (in process) and against Debian's redis-server (started here on
// a free port, persistence off; skipped when not installed): pipelined
// commands come back as their replies in order, on single, pooled and
// short connections, with many calls in flight.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "net_test_util.h"
#include "redis_commands.h"
#include "redis_store.h"
#include "weft/rpc/channel.h"
#include "weft/rpc/redis.h"
#include "weft/rpc/server.h"

extern char** environ;

namespace weft::redis_tool {
namespace {

using rpc::redis::ParseReplies;
using rpc::redis::RedisReply;
using rpc::redis::RedisRequest;

// A port free a moment ago (the kernel's pick for port 0).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

bool CanConnect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

// Debian's redis-server as a child process, persistence off.
class RealRedis {
 public:
  bool Start() {
    if (access("/usr/bin/redis-server", X_OK) != 0) return false;
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = FreePort();
      const std::string port = std::to_string(port_);
      const char* argv[] = {"redis-server", "--port",     port.c_str(), "--bind",
                            "127.0.0.1",    "--save",     "",           "--appendonly",
                            "no",           "--loglevel", "warning",    nullptr};
      if (posix_spawn(&pid_, "/usr/bin/redis-server", nullptr, nullptr, const_cast<char**>(argv),
                      environ) != 0) {
        return false;
      }
      for (int i = 0; i < 100; ++i) {
        if (CanConnect(port_)) return true;
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) break;  // the port was taken
        usleep(50 * 1000);
      }
      Stop();
    }
    return false;
  }
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  ~RealRedis() { Stop(); }
  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

class RedisClientTest : public ::testing::TestWithParam<rpc::ConnectionType> {
 protected:
  static void SetUpTestSuite() {
    store_ = new RedisStore;
    info_ = new ServerInfo;
    server_ = new rpc::Server;
    ASSERT_EQ(0, AddRedisCommands(server_, store_, info_));
    rpc::ServerOptions opt;
    opt.protocols = {"redis"};
    ASSERT_EQ(0, server_->Start("127.0.0.1:0", &opt));
    real_ = new RealRedis;
    if (!real_->Start()) {
      delete real_;
      real_ = nullptr;
    }
  }
  static void TearDownTestSuite() {
    server_->Stop();
    server_->Join();
    delete server_;
    delete info_;
    delete store_;
    delete real_;
  }

  // The servers to run against: weft-redis always, redis-server if there.
  std::vector<std::pair<std::string, EndPoint>> Servers() {
    std::vector<std::pair<std::string, EndPoint>> r = {{"weft-redis", server_->listen_address()}};
    if (real_ != nullptr) r.emplace_back("redis-server", EndPoint::loopback(real_->port()));
    return r;
  }

  static bool Call(rpc::Channel* ch, const RedisRequest& req, std::vector<RedisReply>* replies,
                   std::string* error) {
    rpc::Controller cntl;
    IOBuf response;
    ch->CallMethod("redis", &cntl, req.buf(), &response, rpc::Closure());
    if (cntl.Failed()) {
      *error = cntl.ErrorText();
      return false;
    }
    if (!ParseReplies(response, replies)) {
      *error = "unparsable response";
      return false;
    }
    return true;
  }

  static RedisStore* store_;
  static ServerInfo* info_;
  static rpc::Server* server_;
  static RealRedis* real_;
};

RedisStore* RedisClientTest::store_ = nullptr;
ServerInfo* RedisClientTest::info_ = nullptr;
rpc::Server* RedisClientTest::server_ = nullptr;
RealRedis* RedisClientTest::real_ = nullptr;

TEST_P(RedisClientTest, PipelinedCommandsReturnTheirRepliesInOrder) {
  test::Watchdog dog("redis client", test::kLong);
  if (real_ == nullptr) fprintf(stderr, "redis-server not installed: weft-redis only\n");
  for (const auto& [name, ep] : Servers()) {
    rpc::Channel ch;
    rpc::ChannelOptions opt;
    opt.protocol = "redis";
    opt.connection_type = GetParam();
    opt.timeout_ms = 5000 * test::kTimeScale;
    ASSERT_EQ(0, ch.Init(ep, &opt)) << name;
    const std::string key = std::string("client_test:") + rpc::ConnectionTypeName(GetParam());
    RedisRequest req;
    req.AddCommand({"DEL", key});
    req.AddCommand({"SET", key, "10"});
    for (int i = 0; i < 20; ++i) req.AddCommand({"INCR", key});
    req.AddCommand({"GET", key});
    req.AddCommand({"NOSUCHCOMMAND"});
    req.AddCommand({"MGET", key, "client_test:missing"});
    std::vector<RedisReply> r;
    std::string err;
    ASSERT_TRUE(Call(&ch, req, &r, &err)) << name << ": " << err;
    ASSERT_EQ(req.command_count(), r.size()) << name;
    EXPECT_EQ(RedisReply::kInteger, r[0].type) << name;
    EXPECT_EQ("OK", r[1].str) << name;
    for (int i = 0; i < 20; ++i) EXPECT_EQ(11 + i, r[2 + i].integer) << name;
    EXPECT_EQ("30", r[22].str) << name;
    EXPECT_EQ(RedisReply::kError, r[23].type) << name;
    EXPECT_EQ(0u, r[23].str.find("ERR unknown command 'NOSUCHCOMMAND'")) << name << r[23].str;
    ASSERT_EQ(2u, r[24].elements.size()) << name;
    EXPECT_EQ("30", r[24].elements[0].str) << name;
    EXPECT_EQ(RedisReply::kNil, r[24].elements[1].type) << name;
  }
}

// Many calls in flight at once (threads sharing one Channel): each call's
// replies are its own, in order.
TEST_P(RedisClientTest, ConcurrentCallsGetTheirOwnReplies) {
  test::Watchdog dog("redis client concurrent", test::kLong);
  for (const auto& [name, ep] : Servers()) {
    rpc::Channel ch;
    rpc::ChannelOptions opt;
    opt.protocol = "redis";
    opt.connection_type = GetParam();
    opt.timeout_ms = 10000 * test::kTimeScale;
    ASSERT_EQ(0, ch.Init(ep, &opt)) << name;
    const int kThreads = 4;
    const int kCalls = 50 / test::kTimeScale;
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        const std::string key =
            "client_test:c" + std::to_string(t) + rpc::ConnectionTypeName(GetParam());
        RedisRequest del;
        del.AddCommand({"DEL", key});
        std::vector<RedisReply> r;
        std::string err;
        if (!Call(&ch, del, &r, &err)) bad.fetch_add(1);
        int64_t expect = 0;
        for (int c = 0; c < kCalls; ++c) {
          RedisRequest req;
          for (int k = 0; k < 5; ++k) req.AddCommand({"INCR", key});
          if (!Call(&ch, req, &r, &err) || r.size() != 5) {
            bad.fetch_add(1);
            continue;
          }
          for (const RedisReply& x : r) {
            if (x.type != RedisReply::kInteger || x.integer != ++expect) bad.fetch_add(1);
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(0, bad.load()) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(ConnectionTypes, RedisClientTest,
                         ::testing::Values(rpc::kSingle, rpc::kPooled, rpc::kShort),
                         [](const ::testing::TestParamInfo<rpc::ConnectionType>& i) {
                           return std::string(rpc::ConnectionTypeName(i.param));
                         });

}  // namespace
}  // namespace weft::redis_tool
