// What the RPC layer needs from net/ (issue 9 section 6): the per-connection
// context slots, write completion, an eager connect, the messages in flight
// of a messenger, and the socket map that replaces failed connections.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/countdown_event.h"
#include "weft/errno.h"
#include "weft/net/acceptor.h"
#include "weft/net/input_messenger.h"
#include "weft/net/socket.h"
#include "weft/net/socket_map.h"

namespace weft {
namespace {

using test::kTimeScale;

std::atomic<int> g_contexts_alive{0};

struct LineContext : public SocketContext {
  LineContext() { g_contexts_alive.fetch_add(1); }
  ~LineContext() override { g_contexts_alive.fetch_sub(1); }
  std::atomic<int> lines{0};
};

struct LineMessage : public InputMessageBase {
  std::string line;
};

// One message per '\n'-terminated line; the protocol counts lines in its
// context slot (installed on the first line).
ParseResult parse_line(IOBuf* source, Socket* s, bool, const void*) {
  const std::string data = source->to_string();
  const size_t nl = data.find('\n');
  if (nl == std::string::npos) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  auto* ctx = static_cast<LineContext*>(s->context());
  if (ctx == nullptr) ctx = static_cast<LineContext*>(s->InitContext(new LineContext));
  ctx->lines.fetch_add(1);
  auto* msg = new LineMessage;
  msg->line = data.substr(0, nl);
  source->pop_front(nl + 1);
  return ParseResult::Ok(msg);
}

// "hold" lines are kept (answered later by the test); others are echoed.
std::mutex g_held_mu;
std::vector<InputMessageBase*> g_held;

void process_line(InputMessageBase* base) {
  auto* msg = static_cast<LineMessage*>(base);
  if (msg->line == "hold") {
    std::lock_guard<std::mutex> guard(g_held_mu);
    g_held.push_back(msg);
    return;
  }
  IOBuf reply;
  reply.append(msg->line + "\n");
  msg->socket()->Write(&reply);
  msg->Destroy();
}

void release_held() {
  std::vector<InputMessageBase*> held;
  {
    std::lock_guard<std::mutex> guard(g_held_mu);
    held.swap(g_held);
  }
  for (InputMessageBase* m : held) m->Destroy();
}

class LineServer {
 public:
  LineServer() {
    InputMessageHandler h;
    h.parse = parse_line;
    h.process = process_line;
    h.name = "line";
    EXPECT_EQ(0, acceptor_.AddHandler(h));
    const int lfd = tcp_listen(EndPoint::loopback(0));
    EXPECT_GE(lfd, 0);
    ep_ = get_local_side(lfd);
    EXPECT_EQ(0, acceptor_.StartAccept(lfd, 0));
  }
  ~LineServer() { acceptor_.StopAccept(); }
  Acceptor& acceptor() { return acceptor_; }
  const EndPoint& ep() const { return ep_; }

 private:
  Acceptor acceptor_;
  EndPoint ep_;
};

int connect_blocking(const EndPoint& ep) {
  const int fd = test::connect_to(ep);
  EXPECT_GE(fd, 0);
  return fd;
}

bool wait_for(const std::function<bool()>& cond, int64_t ms) {
  const int64_t deadline = test::now_ms() + ms * kTimeScale;
  while (!cond()) {
    if (test::now_ms() > deadline) return false;
    usleep(1000);
  }
  return true;
}

// Tests read a prefix to tell two replies apart, then the rest of the one
// they got; a helper that read past `want` swallowed the rest.
TEST(ReadUntilTest, ReadsNoMoreThanAskedAndLeavesTheRestInTheSocket) {
  int fds[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
  const std::string sent = "-ERR refused\r\n+PONG\r\n";
  ASSERT_EQ(static_cast<ssize_t>(sent.size()), send(fds[0], sent.data(), sent.size(), 0));
  EXPECT_EQ("-ERR re", test::read_until(fds[1], 7, 5000 * kTimeScale));
  EXPECT_EQ("fused\r\n", test::read_until(fds[1], 7, 5000 * kTimeScale));
  EXPECT_EQ("+PONG\r\n", test::read_until(fds[1], 7, 5000 * kTimeScale));
  close(fds[0]);
  EXPECT_EQ("", test::read_until(fds[1], 1, 5000 * kTimeScale));  // EOF
  close(fds[1]);
}

TEST(SocketContextTest, ProtocolContextLivesWithTheConnectionAndDiesAtRecycle) {
  test::Watchdog dog("context", test::kLong);
  LineServer server;
  const int fd = connect_blocking(server.ep());
  const std::string lines = "a\nb\nc\n";
  ASSERT_EQ(static_cast<ssize_t>(lines.size()), write(fd, lines.data(), lines.size()));
  // The messages of one read run in parallel: replies in any order.
  std::string got = test::read_until(fd, lines.size(), 5000 * kTimeScale);
  std::sort(got.begin(), got.end());
  EXPECT_EQ("\n\n\nabc", got);
  // Listed just after its socket starts serving (the acceptor's map is
  // updated after Socket::Create): the replies may come first.
  ASSERT_TRUE(wait_for([&] { return server.acceptor().ConnectionCount() == 1; }, 5000));
  std::vector<SocketId> ids;
  server.acceptor().ListConnections(&ids);
  ASSERT_EQ(1u, ids.size());
  {
    SocketUniquePtr s;
    ASSERT_EQ(0, Socket::Address(ids[0], &s));
    auto* ctx = static_cast<LineContext*>(s->context());
    ASSERT_NE(nullptr, ctx);
    EXPECT_EQ(3, ctx->lines.load());
    // The messenger keeps its own state in the other slot.
    EXPECT_NE(nullptr, s->context(SocketContextSlot::kMessenger));
    EXPECT_NE(static_cast<SocketContext*>(ctx), s->context(SocketContextSlot::kMessenger));
  }
  EXPECT_EQ(1, g_contexts_alive.load());
  close(fd);
  EXPECT_TRUE(wait_for([&] { return server.acceptor().ConnectionCount() == 0; }, 5000));
  EXPECT_EQ(0, g_contexts_alive.load());
}

TEST(SocketContextTest, RacingInitContextInstallsExactlyOne) {
  for (int round = 0; round < 50; ++round) {
    int a = -1, b = -1;
    ASSERT_TRUE(test::make_tcp_pair(&a, &b));
    close(b);
    SocketId id;
    SocketUniquePtr s;
    ASSERT_TRUE(test::adopt_fd(a, &id, &s));
    std::atomic<int> go{0};
    std::vector<SocketContext*> got(8);
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) {
      threads.emplace_back([&, i] {
        while (go.load() == 0) {
        }
        got[i] = s->InitContext(new LineContext);
      });
    }
    go.store(1);
    for (auto& t : threads) t.join();
    for (int i = 1; i < 8; ++i) EXPECT_EQ(got[0], got[i]);
    EXPECT_EQ(got[0], s->context());
    // The seven losers were deleted at once.
    EXPECT_EQ(1, g_contexts_alive.load());
    s->SetFailed();
    s.reset();
    EXPECT_EQ(0, g_contexts_alive.load());
  }
}

struct Completion {
  std::atomic<int> calls{0};
  std::atomic<int> last_error{-1};
};

void on_written(Socket*, int error_code, void* arg) {
  auto* c = static_cast<Completion*>(arg);
  c->last_error.store(error_code);
  c->calls.fetch_add(1);
}

TEST(WriteCompletionTest, CalledOnceWhenWrittenAndWithTheErrorWhenRefusedOrFailed) {
  test::Watchdog dog("write completion", test::kLong);
  int a = -1, b = -1;
  ASSERT_TRUE(test::make_tcp_pair(&a, &b));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(a, &id, &s));
  // Written in the caller.
  Completion small;
  Socket::WriteOptions opt;
  opt.on_written = on_written;
  opt.on_written_arg = &small;
  IOBuf data;
  data.append("hello");
  ASSERT_EQ(0, s->Write(&data, &opt));
  EXPECT_TRUE(wait_for([&] { return small.calls.load() == 1; }, 5000));
  EXPECT_EQ(0, small.last_error.load());
  EXPECT_EQ("hello", test::read_until(b, 5, 5000 * kTimeScale));

  // Larger than the socket buffers: finished by KeepWrite once b reads.
  Completion big;
  opt.on_written_arg = &big;
  const size_t kBig = 32 << 20;
  data.append(std::string(kBig, 'x'));
  ASSERT_EQ(0, s->Write(&data, &opt));
  EXPECT_EQ(0, big.calls.load());  // the peer has not read yet
  EXPECT_EQ(kBig, test::read_until(b, kBig, 20000 * kTimeScale).size());
  EXPECT_TRUE(wait_for([&] { return big.calls.load() == 1; }, 5000));
  EXPECT_EQ(0, big.last_error.load());

  // Queued behind bytes the peer never reads, then the socket fails: the
  // queued write hears the failure.
  Completion stuck_first, stuck_second;
  opt.on_written_arg = &stuck_first;
  data.append(std::string(kBig, 'y'));
  ASSERT_EQ(0, s->Write(&data, &opt));
  opt.on_written_arg = &stuck_second;
  data.append("z");
  ASSERT_EQ(0, s->Write(&data, &opt));
  usleep(20000);
  EXPECT_EQ(0, stuck_second.calls.load());
  s->SetFailed(ECONNRESET, "test");
  EXPECT_TRUE(wait_for([&] { return stuck_second.calls.load() == 1; }, 5000));
  EXPECT_EQ(ECONNRESET, stuck_second.last_error.load());
  EXPECT_EQ(1, stuck_first.calls.load());
  EXPECT_EQ(ECONNRESET, stuck_first.last_error.load());

  // Refused (the socket failed): called before Write returns.
  Completion refused;
  opt.on_written_arg = &refused;
  data.append("late");
  EXPECT_EQ(-1, s->Write(&data, &opt));
  EXPECT_EQ(1, refused.calls.load());
  EXPECT_EQ(ECONNRESET, refused.last_error.load());
  // Refused for empty data too.
  Completion empty;
  opt.on_written_arg = &empty;
  IOBuf nothing;
  EXPECT_EQ(-1, s->Write(&nothing, &opt));
  EXPECT_EQ(1, empty.calls.load());
  EXPECT_EQ(EINVAL, empty.last_error.load());
  close(b);
}

int make_client(const EndPoint& ep, SocketUniquePtr* s) {
  SocketOptions opt;
  opt.remote_side = ep;
  opt.connect_timeout_ms = 2000 * kTimeScale;
  SocketId id;
  if (Socket::Create(opt, &id) != 0) return -1;
  return Socket::Address(id, s);
}

TEST(EnsureConnectedTest, ConnectsBeforeAnyWriteAndReportsRefusal) {
  test::Watchdog dog("eager connect", test::kLong);
  LineServer server;
  SocketUniquePtr s;
  ASSERT_EQ(0, make_client(server.ep(), &s));
  EXPECT_LT(s->fd(), 0);
  EXPECT_EQ(0, s->EnsureConnected());
  EXPECT_GE(s->fd(), 0);
  EXPECT_TRUE(wait_for([&] { return server.acceptor().ConnectionCount() == 1; }, 5000));
  // Already connected: at once.
  EXPECT_EQ(0, s->EnsureConnected());
  s->SetFailed();

  // Nobody listens on a port we just closed.
  const int lfd = tcp_listen(EndPoint::loopback(0));
  const EndPoint dead = get_local_side(lfd);
  close(lfd);
  SocketUniquePtr r;
  ASSERT_EQ(0, make_client(dead, &r));
  errno = 0;
  EXPECT_EQ(-1, r->EnsureConnected());
  EXPECT_EQ(ECONNREFUSED, errno);
  EXPECT_TRUE(r->Failed());
}

TEST(EnsureConnectedTest, ManyFibersWaitForOneConnectAndWritesKeepTheirOrder) {
  test::Watchdog dog("eager connect fibers", test::kLong);
  LineServer server;
  SocketUniquePtr s;
  ASSERT_EQ(0, make_client(server.ep(), &s));
  struct Arg {
    Socket* s;
    int rc;
  };
  std::vector<Arg> args(16, Arg{s.get(), -2});
  std::vector<bthread_t> tids(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    ASSERT_EQ(0, bthread_start_background(
                     &tids[i], nullptr,
                     [](void* p) -> void* {
                       auto* a = static_cast<Arg*>(p);
                       a->rc = a->s->EnsureConnected();
                       return nullptr;
                     },
                     &args[i]));
  }
  for (bthread_t t : tids) bthread_join(t, nullptr);
  for (const Arg& a : args) EXPECT_EQ(0, a.rc);
  EXPECT_TRUE(wait_for([&] { return server.acceptor().ConnectionCount() == 1; }, 5000));
  s->SetFailed();
}

TEST(MessagesInFlightTest, CountsMessagesUntilDestroyedAndWaitEndsWhenTheyAre) {
  test::Watchdog dog("in flight", test::kLong);
  LineServer server;
  const int fd = connect_blocking(server.ep());
  const std::string lines = "hold\nhold\nhold\necho\n";
  ASSERT_EQ(static_cast<ssize_t>(lines.size()), write(fd, lines.data(), lines.size()));
  EXPECT_EQ("echo\n", test::read_until(fd, 5, 5000 * kTimeScale));
  EXPECT_TRUE(wait_for([&] { return server.acceptor().messages_in_flight() == 3; }, 5000));
  timespec soon;
  clock_gettime(CLOCK_REALTIME, &soon);
  soon.tv_nsec += 20 * 1000000;
  if (soon.tv_nsec >= 1000000000) {
    soon.tv_sec += 1;
    soon.tv_nsec -= 1000000000;
  }
  errno = 0;
  EXPECT_EQ(-1, server.acceptor().WaitNoMessagesInFlight(&soon));
  EXPECT_EQ(ETIMEDOUT, errno);
  std::atomic<int> waited{-2};
  std::thread waiter([&] { waited = server.acceptor().WaitNoMessagesInFlight(); });
  usleep(20000);
  EXPECT_EQ(-2, waited.load());
  release_held();
  waiter.join();
  EXPECT_EQ(0, waited.load());
  EXPECT_EQ(0, server.acceptor().messages_in_flight());
  close(fd);
}

TEST(SocketMapTest, HandsOutTheLiveSocketAndReplacesAFailedOneOnce) {
  test::Watchdog dog("socket map", test::kLong);
  LineServer server;
  SocketMap map;
  const SocketMapKey key{server.ep(), "line"};
  SocketUniquePtr s;
  errno = 0;
  EXPECT_EQ(-1, map.Get(key, &s));
  EXPECT_EQ(ENOENT, errno);
  SocketOptions opt;
  opt.connect_timeout_ms = 2000 * kTimeScale;
  ASSERT_EQ(0, map.Acquire(key, opt));
  ASSERT_EQ(0, map.Acquire(key, opt));  // a second user
  EXPECT_EQ(1u, map.size());
  SocketId first = INVALID_SOCKET_ID, again = INVALID_SOCKET_ID;
  ASSERT_EQ(0, map.Get(key, &s, &first));
  EXPECT_EQ(server.ep(), s->remote_side());
  SocketUniquePtr s2;
  ASSERT_EQ(0, map.Get(key, &s2, &again));
  EXPECT_EQ(first, again);
  // A distinct tag is a distinct connection.
  const SocketMapKey other{server.ep(), "line-2"};
  ASSERT_EQ(0, map.Acquire(other, opt));
  SocketId other_id = INVALID_SOCKET_ID;
  SocketUniquePtr s3;
  ASSERT_EQ(0, map.Get(other, &s3, &other_id));
  EXPECT_NE(first, other_id);
  map.Release(other);

  // The connection works, then fails: eight racing callers get one new one.
  IOBuf line;
  line.append("ping\n");
  ASSERT_EQ(0, s->Write(&line));
  s->SetFailed(ECONNRESET, "test");
  s.reset();
  s2.reset();
  std::vector<SocketId> got(8, INVALID_SOCKET_ID);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      SocketUniquePtr p;
      EXPECT_EQ(0, map.Get(key, &p, &got[i]));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) {
    EXPECT_NE(first, got[i]);
    EXPECT_EQ(got[0], got[i]);
  }
  EXPECT_EQ(1u, map.replacements());
  ASSERT_EQ(0, map.Get(key, &s, nullptr));
  EXPECT_EQ(0, s->EnsureConnected());

  // The last user's release closes the connection.
  map.Release(key);
  EXPECT_EQ(1u, map.size());
  EXPECT_FALSE(s->closing());
  map.Release(key);
  EXPECT_EQ(0u, map.size());
  EXPECT_TRUE(wait_for([&] { return s->Failed(); }, 5000));
}

}  // namespace
}  // namespace weft
