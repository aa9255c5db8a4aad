// Socket ids, references, failure and recycling; input events; the
// dispatcher's stop/join; WaitEpollOut.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "../runtime/test_util.h"
#include "net_metrics.h"
#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/errno.h"
#include "weft/metrics.h"
#include "weft/net/event_dispatcher.h"
#include "weft/net/socket.h"

namespace weft {
namespace {

using test::kScale;

struct CountingUser : public SocketUser {
  std::atomic<int> recycled{0};
  void BeforeRecycle(Socket*) override { recycled.fetch_add(1); }
};

TEST(SocketTest, AddressFailRecycle) {
  const int64_t live0 = Socket::live_count();
  int fds[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, fds));
  CountingUser user;
  SocketOptions opt;
  opt.fd = fds[0];
  opt.user = &user;
  SocketId id;
  ASSERT_EQ(0, Socket::Create(opt, &id));
  EXPECT_EQ(live0 + 1, Socket::live_count());
  {
    SocketUniquePtr s;
    ASSERT_EQ(0, Socket::Address(id, &s));
    EXPECT_EQ(id, s->id());
    EXPECT_EQ(fds[0], s->fd());
    EXPECT_FALSE(s->Failed());
    EXPECT_EQ(0, s->SetFailed(ECONNRESET, "test %d", 42));
    EXPECT_EQ(-1, s->SetFailed(EPIPE, "second"));
    EXPECT_TRUE(s->Failed());
    EXPECT_EQ(ECONNRESET, s->non_zero_error_code());
    EXPECT_EQ("test 42", s->error_text());
    SocketUniquePtr again;
    EXPECT_EQ(-1, Socket::Address(id, &again));
    EXPECT_EQ(1, Socket::AddressFailedAsWell(id, &again));
    again.reset();
    // Still referenced by `s`: not recycled.
    EXPECT_EQ(0, user.recycled.load());
    // SetFailed shut the fd down: the peer sees EOF at once.
    char c;
    EXPECT_EQ(0, read(fds[1], &c, 1));
  }
  EXPECT_EQ(1, user.recycled.load());
  EXPECT_EQ(live0, Socket::live_count());
  SocketUniquePtr gone;
  EXPECT_EQ(-1, Socket::Address(id, &gone));
  EXPECT_EQ(-1, Socket::AddressFailedAsWell(id, &gone));
  close(fds[1]);
}

// Writing to a connection whose peer is gone fails with EPIPE; it must not
// raise SIGPIPE (whose default action would kill this test).
TEST(SocketTest, WritingToAClosedPeerIsEpipeNotSigpipe) {
  signal(SIGPIPE, SIG_DFL);
  int fds[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, fds));
  close(fds[1]);
  IOBuf one;
  one.append("x");
  EXPECT_EQ(-1, one.cut_into_file_descriptor(fds[0]));
  EXPECT_EQ(EPIPE, errno);
  IOBuf a, b;
  a.append("a");
  b.append("b");
  IOBuf* pieces[] = {&a, &b};
  EXPECT_EQ(-1, IOBuf::cut_multiple_into_file_descriptor(fds[0], pieces, 2));
  EXPECT_EQ(EPIPE, errno);
  // Through a Socket: the write fails the socket and reports EPIPE.
  SocketOptions opt;
  opt.fd = fds[0];
  SocketId id;
  ASSERT_EQ(0, Socket::Create(opt, &id));
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(id, &s));
  IOBuf data;
  data.append("hello");
  EXPECT_EQ(-1, s->Write(&data));
  EXPECT_EQ(EPIPE, errno);
  EXPECT_TRUE(s->Failed());
  EXPECT_EQ(EPIPE, s->non_zero_error_code());
}

TEST(SocketTest, SetFailedWinsOnceAmongRacers) {
  for (int round = 0; round < 200 / kScale + 5; ++round) {
    SocketOptions opt;
    SocketId id;
    ASSERT_EQ(0, Socket::Create(opt, &id));
    SocketUniquePtr s;
    ASSERT_EQ(0, Socket::Address(id, &s));
    std::atomic<int> wins{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&] {
        if (s->SetFailed(EINVAL, "race") == 0) wins.fetch_add(1);
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(1, wins.load());
  }
}

// Sockets are created, failed and recycled in a loop (reusing slots) while
// other threads address ids from earlier rounds: an old id must never
// address the socket now in its slot.
TEST(SocketTest, StaleIdsNeverAnswer) {
  const int64_t live0 = Socket::live_count();
  const int kRounds = 20000 / kScale;
  std::vector<std::atomic<SocketId>> recent(64);
  for (auto& r : recent) r.store(INVALID_SOCKET_ID);
  std::atomic<bool> done{false};
  std::atomic<int64_t> wrong{0}, hits{0};
  std::vector<std::thread> checkers;
  for (int t = 0; t < 2; ++t) {
    checkers.emplace_back([&, t] {
      std::mt19937 rng(t);
      while (!done.load(std::memory_order_relaxed)) {
        const SocketId id = recent[rng() % recent.size()].load();
        if (id == INVALID_SOCKET_ID) continue;
        SocketUniquePtr s;
        if (Socket::AddressFailedAsWell(id, &s) >= 0) {
          hits.fetch_add(1, std::memory_order_relaxed);
          if (s->id() != id) wrong.fetch_add(1);
        }
      }
    });
  }
  std::vector<std::thread> creators;
  for (int t = 0; t < 2; ++t) {
    creators.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        SocketOptions opt;
        SocketId id;
        ASSERT_EQ(0, Socket::Create(opt, &id));
        recent[(i * 2 + t) % recent.size()].store(id);
        SocketUniquePtr s;
        ASSERT_EQ(0, Socket::Address(id, &s));
        ASSERT_EQ(0, s->SetFailed());
      }
    });
  }
  for (auto& t : creators) t.join();
  done.store(true);
  for (auto& t : checkers) t.join();
  EXPECT_EQ(0, wrong.load());
  EXPECT_EQ(live0, Socket::live_count());
  // Every id of the last rounds is dead now.
  for (auto& r : recent) {
    SocketUniquePtr s;
    EXPECT_EQ(-1, Socket::AddressFailedAsWell(r.load(), &s));
  }
}

// Reading callback: one fiber at a time per socket, reads to EAGAIN, then
// returns only when no event arrived meanwhile.
struct ReadState {
  std::atomic<int> concurrent{0};
  std::atomic<int> max_concurrent{0};
  std::atomic<int64_t> bytes{0};
  std::atomic<int> eof{0};
};
ReadState g_read;

void on_readable(Socket* s) {
  const int now = g_read.concurrent.fetch_add(1) + 1;
  int prev = g_read.max_concurrent.load();
  while (now > prev && !g_read.max_concurrent.compare_exchange_weak(prev, now)) {
  }
  int progress = Socket::PROGRESS_INIT;
  for (;;) {
    const ssize_t n = s->DoRead(64 * 1024);
    if (n > 0) {
      g_read.bytes.fetch_add(n);
      s->read_buf().clear();
      continue;
    }
    if (n == 0) {
      g_read.eof.fetch_add(1);
      s->SetFailed(EEOF, "peer closed");
      break;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      s->SetFailed(errno, "read failed");
      break;
    }
    // Yield once so a burst can pile up events while we "process".
    bthread_yield();
    if (!s->MoreReadEvents(&progress)) break;
  }
  g_read.concurrent.fetch_sub(1);
}

TEST(SocketTest, AtMostOneReadingFiberAndNoByteMissed) {
  const int64_t live0 = Socket::live_count();
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  const int64_t events0 = net_internal::net_metrics().neventthread.value();
  SocketOptions opt;
  opt.fd = server;
  opt.on_edge_triggered_events = on_readable;
  SocketId id;
  ASSERT_EQ(0, Socket::Create(opt, &id));
  const int kChunks = 20000 / kScale;
  std::thread writer([&] {
    char chunk[97];
    memset(chunk, 'z', sizeof(chunk));
    for (int i = 0; i < kChunks; ++i) {
      ASSERT_EQ(static_cast<ssize_t>(sizeof(chunk)), write(client, chunk, sizeof(chunk)));
      if (i % 64 == 0) usleep(50);
    }
  });
  writer.join();
  EXPECT_TRUE(test::wait_until([&] { return g_read.bytes.load() == int64_t{kChunks} * 97; }))
      << g_read.bytes.load();
  close(client);
  EXPECT_TRUE(test::wait_until([&] { return g_read.eof.load() == 1; }));
  EXPECT_EQ(1, g_read.max_concurrent.load());
  EXPECT_GT(net_internal::net_metrics().neventthread.value(), events0);
  // The seed's counters are listed with the runtime's metrics.
  std::ostringstream dump;
  dump_metrics(dump);
  for (const char* name : {"weft_nkeepwrite", "weft_nwaitepollout", "weft_neventthread"}) {
    EXPECT_NE(std::string::npos, dump.str().find(name)) << name;
  }
  EXPECT_TRUE(test::wait_until([&] { return Socket::live_count() == live0; }));
}

TEST(SocketTest, WaitEpollOutTimesOutWhenFullAndReturnsWhenDrained) {
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(client, &id, &s));
  // Fill the connection (the socket made the fd non-blocking).
  std::string block(65536, 'q');
  size_t filled = 0;
  ssize_t n;
  while ((n = write(client, block.data(), block.size())) > 0) filled += static_cast<size_t>(n);
  ASSERT_EQ(EAGAIN, errno);
  timespec soon = test::realtime_after_ms(100);
  EXPECT_EQ(-1, s->WaitEpollOut(client, false, &soon));
  EXPECT_EQ(ETIMEDOUT, errno);
  std::thread drain([&] {
    usleep(50 * 1000);
    test::read_until(server, filled, 10000);
  });
  timespec later = test::realtime_after_ms(10000);
  EXPECT_EQ(0, s->WaitEpollOut(client, false, &later));
  drain.join();
  s->SetFailed();
  close(server);
}

TEST(SocketTest, SetFailedWakesWaitEpollOut) {
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(client, &id, &s));
  std::string block(65536, 'q');
  while (write(client, block.data(), block.size()) > 0) {
  }
  std::thread failer([&] {
    usleep(50 * 1000);
    Socket::SetFailed(id);
  });
  timespec later = test::realtime_after_ms(10000);
  const auto t0 = std::chrono::steady_clock::now();
  s->WaitEpollOut(client, false, &later);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  failer.join();
  EXPECT_TRUE(s->Failed());
  close(server);
}

TEST(EventDispatcherTest, StopAndJoinWithLiveSockets) {
  const int64_t live0 = Socket::live_count();
  EventDispatcher d;
  ASSERT_EQ(0, d.Start(nullptr));
  EXPECT_TRUE(d.Running());
  std::vector<int> peers;
  std::vector<SocketId> ids;
  for (int i = 0; i < 8; ++i) {
    int fds[2];
    ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds));
    SocketOptions opt;
    opt.fd = fds[0];
    SocketId id;
    ASSERT_EQ(0, Socket::Create(opt, &id));
    // Registered with this dispatcher only (the socket has no consumer of
    // its own, so the global dispatchers do not watch it).
    ASSERT_EQ(0, d.AddConsumer(id, fds[0]));
    ASSERT_EQ(1, write(fds[1], "x", 1));
    peers.push_back(fds[1]);
    ids.push_back(id);
  }
  EXPECT_TRUE(test::wait_until([&] { return d.nevents() >= 8; })) << d.nevents();
  d.Stop();
  d.Join();
  EXPECT_FALSE(d.Running());
  // Events after the stop are not dispatched; the sockets are unaffected.
  const int64_t seen = d.nevents();
  for (int fd : peers) ASSERT_EQ(1, write(fd, "y", 1));
  usleep(20 * 1000);
  EXPECT_EQ(seen, d.nevents());
  for (SocketId id : ids) {
    SocketUniquePtr s;
    ASSERT_EQ(0, Socket::Address(id, &s));
    EXPECT_EQ(0, d.RemoveConsumer(s->fd()));
    s->SetFailed();
  }
  for (int fd : peers) close(fd);
  EXPECT_TRUE(test::wait_until([&] { return Socket::live_count() == live0; }));
}

// An idle process with a registered socket burns no CPU: the dispatcher
// parks its fiber (not its worker) on the epoll fd.
TEST(EventDispatcherTest, IdleDispatcherUsesNoCpu) {
  int fds[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, fds));
  SocketOptions opt;
  opt.fd = fds[0];
  opt.on_edge_triggered_events = [](Socket* s) {
    int progress = Socket::PROGRESS_INIT;
    for (;;) {
      const ssize_t n = s->DoRead(4096);
      if (n > 0) {
        s->read_buf().clear();
      } else if (n < 0 && errno == EAGAIN) {
        if (!s->MoreReadEvents(&progress)) return;
      } else if (n == 0 || errno != EINTR) {
        s->SetFailed();
        return;
      }
    }
  };
  SocketId id;
  ASSERT_EQ(0, Socket::Create(opt, &id));
  ASSERT_EQ(1, write(fds[1], "x", 1));  // one event, then quiet
  usleep(200 * 1000);  // let workers finish their search and park
  rusage before, after;
  getrusage(RUSAGE_SELF, &before);
  const auto t0 = std::chrono::steady_clock::now();
  usleep(500 * 1000);
  getrusage(RUSAGE_SELF, &after);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto secs = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  const double cpu = secs(after.ru_utime) - secs(before.ru_utime) + secs(after.ru_stime) -
                     secs(before.ru_stime);
  EXPECT_LT(cpu, 0.1 * wall) << "idle process used " << cpu << " s of CPU in " << wall << " s";
  Socket::SetFailed(id);
  close(fds[1]);
}

}  // namespace
}  // namespace weft
