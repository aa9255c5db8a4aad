// weft::Acceptor: accepting, serving (an echo server), counting, idle
// timeouts, stopping, and 10,000 concurrent connections. Clients are plain
// blocking sockets (in threads, or in a forked child for the 10,000), so a
// failure points at the server side.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <weft/bthread.h>
#include <weft/errno.h>
#include <weft/net/acceptor.h>
#include <weft/net/endpoint.h>
#include <weft/net/iobuf.h>
#include <weft/net/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../runtime/test_util.h"
#include "net_test_util.h"

namespace {

using std::chrono::milliseconds;
using weft::Acceptor;
using weft::EndPoint;
using weft::IOBuf;
using weft::Socket;
using weft::SocketUniquePtr;
using weft::test::EchoOnMessages;
using weft::test::kLong;
using weft::test::kTimeScale;
using weft::test::now_ms;
using weft::test::wait_until;
using weft::test::Watchdog;

// ---- plain blocking clients ----

// A blocking client connected to ep, with 10 s send/receive timeouts so no
// call blocks for ever; -1 on failure.
int ConnectClient(const EndPoint& ep) {
  const int fd = socket(ep.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{10 * kTimeScale, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, ep.addr(), ep.addr_len()) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& data) { return weft::test::send_all(fd, data); }

// Reads exactly n bytes; false on EOF, error or timeout (SO_RCVTIMEO).
bool RecvExactly(int fd, size_t n, std::string* out) {
  out->clear();
  char buf[16384];
  while (out->size() < n) {
    const size_t want = n - out->size() < sizeof(buf) ? n - out->size() : sizeof(buf);
    const ssize_t r = recv(fd, buf, want, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    out->append(buf, static_cast<size_t>(r));
  }
  return true;
}

// What the next recv on fd says: 0 for EOF, an errno, or -1 when data came.
int RecvEnd(int fd) {
  char c;
  for (;;) {
    const ssize_t r = recv(fd, &c, 1, 0);
    if (r == 0) return 0;
    if (r > 0) return -1;
    if (errno != EINTR) return errno;
  }
}

std::string Message(int i, size_t size) {
  std::string m = "client-" + std::to_string(i) + ":";
  while (m.size() < size) m.push_back(static_cast<char>('a' + (m.size() * 7 + i) % 26));
  m.resize(size);
  return m;
}

// A listener on 127.0.0.1:0 handed to `a`; returns the port (0 on failure).
uint16_t StartEcho(Acceptor* a, int idle_timeout_sec = 0, int backlog = 1024) {
  const int fd = weft::tcp_listen(EndPoint::loopback(0), backlog);
  EXPECT_GE(fd, 0) << strerror(errno);
  if (fd < 0) return 0;
  const uint16_t port = weft::get_local_side(fd).port();
  EXPECT_NE(0, port);
  EXPECT_EQ(0, a->StartAccept(fd, idle_timeout_sec)) << strerror(errno);
  return port;
}

void StopWithin(Acceptor* a, milliseconds limit) {
  Watchdog wd("Acceptor::StopAccept", limit);
  a->StopAccept();
}

// ---------------------------------------------------------------------------
// 1. Echo, counting, StopAccept.

TEST(AcceptTest, EchoesForManyClientsAndStopClosesThemAll) {
  const int64_t baseline = Socket::live_count();
  Acceptor a(EchoOnMessages);
  EXPECT_EQ(0u, a.ConnectionCount());
  const uint16_t port = StartEcho(&a);
  ASSERT_NE(0, port);
  const EndPoint ep = EndPoint::loopback(port);
  {
    SocketUniquePtr listener;
    ASSERT_EQ(0, Socket::Address(a.listening_id(), &listener));
  }

  const int kClients = 100;
  const int kThreads = 4;
  std::vector<int> fds(kClients, -1);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Connect this thread's share first so they are all open at once,
      // then talk on each.
      // The first failure ends the thread: with a dead server every
      // further call would wait for its full timeout.
      for (int i = t; i < kClients; i += kThreads) {
        fds[i] = ConnectClient(ep);
        if (fds[i] < 0) {
          failures.fetch_add(1);
          return;
        }
      }
      for (int round = 0; round < 2; ++round) {
        for (int i = t; i < kClients; i += kThreads) {
          const std::string msg = Message(i * 2 + round, 100 + i * 100);
          std::string echo;
          if (!SendAll(fds[i], msg) || !RecvExactly(fds[i], msg.size(), &echo) || echo != msg) {
            failures.fetch_add(1);
            return;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(0, failures.load());
  EXPECT_TRUE(wait_until([&] { return a.ConnectionCount() == kClients; }, kLong));
  EXPECT_EQ(static_cast<size_t>(kClients), a.ConnectionCount());
  EXPECT_EQ(baseline + kClients + 1, Socket::live_count());  // + the listener
  std::vector<weft::SocketId> ids;
  a.ListConnections(&ids);
  EXPECT_EQ(static_cast<size_t>(kClients), ids.size());
  for (const weft::SocketId id : ids) {
    SocketUniquePtr s;
    ASSERT_EQ(0, Socket::Address(id, &s));
    EXPECT_EQ(s->remote_side(), weft::get_remote_side(s->fd()));
    EXPECT_GT(s->in_bytes(), 0);
    // out_bytes is counted just after the bytes went out (and maybe after
    // the client got them).
    EXPECT_TRUE(wait_until([&] { return s->in_bytes() == s->out_bytes(); }, kLong))
        << s->in_bytes() << " in, " << s->out_bytes() << " out";
  }

  // Clients that leave are dropped from the count.
  const int kLeaving = 30;
  for (int i = 0; i < kLeaving; ++i) {
    close(fds[i]);
    fds[i] = -1;
  }
  EXPECT_TRUE(wait_until([&] { return a.ConnectionCount() == kClients - kLeaving; }, kLong))
      << a.ConnectionCount();

  StopWithin(&a, kLong);
  // StopAccept returns only when everything recycled.
  EXPECT_EQ(0u, a.ConnectionCount());
  EXPECT_EQ(baseline, Socket::live_count());
  SocketUniquePtr gone;
  EXPECT_EQ(-1, Socket::AddressFailedAsWell(a.listening_id(), &gone));
  for (int i = kLeaving; i < kClients; ++i) {
    const int end = RecvEnd(fds[i]);
    EXPECT_TRUE(end == 0 || end == ECONNRESET) << "client " << i << ": " << end;
    close(fds[i]);
  }
  // The port is closed now.
  const int late = ConnectClient(ep);
  EXPECT_LT(late, 0) << "connected to a stopped acceptor";
  if (late >= 0) close(late);
  // A second StopAccept is a no-op.
  StopWithin(&a, kLong);
}

TEST(AcceptTest, StartsAgainAfterStop) {
  const int64_t baseline = Socket::live_count();
  Acceptor a(EchoOnMessages);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    const uint16_t port = StartEcho(&a);
    ASSERT_NE(0, port);
    // Running: a second StartAccept is refused (and closes the fd it got).
    const int extra = weft::tcp_listen(EndPoint::loopback(0));
    ASSERT_GE(extra, 0);
    errno = 0;
    EXPECT_EQ(-1, a.StartAccept(extra, 0));
    EXPECT_EQ(EBUSY, errno);
    EXPECT_EQ(-1, fcntl(extra, F_GETFD)) << "StartAccept did not take over the fd";

    const int fd = ConnectClient(EndPoint::loopback(port));
    ASSERT_GE(fd, 0);
    std::string echo;
    EXPECT_TRUE(SendAll(fd, "ping") && RecvExactly(fd, 4, &echo));
    EXPECT_EQ("ping", echo);
    // Counted just after its socket starts serving (the acceptor's map is
    // updated after Socket::Create): the echo may come first.
    EXPECT_TRUE(wait_until([&] { return a.ConnectionCount() == 1u; }, kLong))
        << a.ConnectionCount();
    StopWithin(&a, kLong);
    EXPECT_EQ(0u, a.ConnectionCount());
    EXPECT_EQ(baseline, Socket::live_count());
    close(fd);
  }
}

// listening_id() may be read from any thread while the acceptor starts
// and stops (Server::Stop reads it): before it took the lock, TSan
// reported the read racing StartAccept's write of the id.
TEST(AcceptTest, ListeningIdIsReadableWhileStartingAndStopping) {
  Acceptor a(EchoOnMessages);
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done.load()) {
      const weft::SocketId id = a.listening_id();
      (void)id;
    }
  });
  for (int round = 0; round < 5; ++round) {
    ASSERT_NE(0, StartEcho(&a));
    EXPECT_NE(weft::INVALID_SOCKET_ID, a.listening_id());
    StopWithin(&a, kLong);
    EXPECT_EQ(weft::INVALID_SOCKET_ID, a.listening_id());
  }
  done.store(true);
  reader.join();
}

// Stopping while clients keep connecting and talking: StopAccept returns,
// every socket recycles, nobody is left hanging.
TEST(AcceptTest, StopWhileClientsAreBusy) {
  const int64_t baseline = Socket::live_count();
  Acceptor a(EchoOnMessages);
  const uint16_t port = StartEcho(&a);
  ASSERT_NE(0, port);
  const EndPoint ep = EndPoint::loopback(port);
  std::atomic<bool> stop{false};
  std::atomic<int> echoes{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const int64_t deadline = now_ms() + kLong.count();
      while (!stop.load() && now_ms() < deadline) {
        const int fd = ConnectClient(ep);
        if (fd < 0) {
          std::this_thread::sleep_for(milliseconds(1));
          continue;
        }
        const std::string msg = Message(t, 2000);
        std::string echo;
        for (int k = 0; k < 5 && SendAll(fd, msg) && RecvExactly(fd, msg.size(), &echo); ++k) {
          if (echo == msg) echoes.fetch_add(1);
        }
        close(fd);
      }
    });
  }
  EXPECT_TRUE(wait_until([&] { return echoes.load() >= 200 / weft::test::kScale; }, kLong));
  StopWithin(&a, kLong);
  EXPECT_EQ(0u, a.ConnectionCount());
  EXPECT_EQ(baseline, Socket::live_count());
  stop.store(true);
  for (auto& th : threads) th.join();
}

// ---------------------------------------------------------------------------
// 2. Idle timeout.

TEST(AcceptTest, IdleConnectionsAreClosedBusyOnesStay) {
  const int64_t baseline = Socket::live_count();
  Acceptor a(EchoOnMessages);
  const uint16_t port = StartEcho(&a, /*idle_timeout_sec=*/1);
  ASSERT_NE(0, port);
  const EndPoint ep = EndPoint::loopback(port);
  const int idle = ConnectClient(ep);
  const int busy = ConnectClient(ep);
  ASSERT_GE(idle, 0);
  ASSERT_GE(busy, 0);
  const int64_t t0 = now_ms();
  ASSERT_TRUE(wait_until([&] { return a.ConnectionCount() == 2; }, kLong));

  std::atomic<int64_t> idle_end_ms{-1};
  std::atomic<int> idle_end{-2};
  std::thread idle_reader([&] {
    pollfd p{idle, POLLIN, 0};
    if (poll(&p, 1, 5000) > 0) {
      idle_end.store(RecvEnd(idle));
      idle_end_ms.store(now_ms() - t0);
    }
  });
  // The busy client talks every 200 ms for 3 s and is answered every time.
  int answered = 0;
  int rounds = 0;
  while (now_ms() - t0 < 3000) {
    std::this_thread::sleep_for(milliseconds(200));
    ++rounds;
    std::string echo;
    if (!SendAll(busy, "p") || !RecvExactly(busy, 1, &echo) || echo != "p") break;
    ++answered;
  }
  EXPECT_EQ(rounds, answered) << "the busy connection was closed";
  idle_reader.join();
  EXPECT_EQ(0, idle_end.load()) << "the idle client did not read EOF";
  EXPECT_GE(idle_end_ms.load(), 900);
  EXPECT_LE(idle_end_ms.load(), 3000);
  EXPECT_EQ(1u, a.ConnectionCount());
  std::string echo;
  EXPECT_TRUE(SendAll(busy, "still") && RecvExactly(busy, 5, &echo));
  EXPECT_EQ("still", echo);
  close(idle);
  close(busy);
  StopWithin(&a, kLong);
  EXPECT_EQ(baseline, Socket::live_count());
}

// ---------------------------------------------------------------------------
// 3. 10,000 concurrent connections.
//
// Both ends would need 20,000 fds, the hard limit here, so the clients live
// in a forked child. The parent already runs worker threads when it forks,
// so the child uses raw system calls only (no malloc, no locks, no runtime)
// on memory the parent prepared, and reports through a pipe.

struct ChildReport {
  int32_t stage;  // ChildStage
  int32_t index;  // the connection concerned, or the count reached
  int32_t err;    // errno
  int32_t extra;
};

enum ChildStage {
  kChildOk = 0,
  kChildSocket,
  kChildConnect,
  kChildWrite,
  kChildRead,
  kChildMismatch,
  kChildGo,
  kChildNoEof,
  kChildRlimit,
};

const char* StageName(int stage) {
  switch (stage) {
    case kChildOk:
      return "ok";
    case kChildSocket:
      return "socket";
    case kChildConnect:
      return "connect";
    case kChildWrite:
      return "write";
    case kChildRead:
      return "read echo";
    case kChildMismatch:
      return "echo mismatch";
    case kChildGo:
      return "wait for the parent";
    case kChildNoEof:
      return "expected EOF after StopAccept";
    case kChildRlimit:
      return "setrlimit";
  }
  return "?";
}

uint64_t RequestOf(int i) {
  return 0x5745465400000000ULL ^ (static_cast<uint64_t>(i) * 2654435761ULL);
}

void ChildWrite(int fd, const ChildReport& r) { syscall(SYS_write, fd, &r, sizeof(r)); }

[[noreturn]] void ChildExit(int report_fd, int stage, int index, int err) {
  ChildWrite(report_fd, ChildReport{stage, index, err, 0});
  syscall(SYS_exit_group, stage);
  __builtin_unreachable();
}

[[noreturn]] void ChildMain(const sockaddr_in* addr, int* fds, int n, int report_fd, int go_fd,
                            int max_fd) {
  // Drop every inherited fd (the listener, the epoll fds) but our pipes.
  for (int fd = 3; fd <= max_fd; ++fd) {
    if (fd != report_fd && fd != go_fd) syscall(SYS_close, fd);
  }
  rlimit rl;
  if (syscall(SYS_getrlimit, RLIMIT_NOFILE, &rl) != 0) ChildExit(report_fd, kChildRlimit, 0, errno);
  rl.rlim_cur = rl.rlim_max;
  if (syscall(SYS_setrlimit, RLIMIT_NOFILE, &rl) != 0) ChildExit(report_fd, kChildRlimit, 1, errno);
  // Bounded blocking calls: a connect waits at most this long (SYNs to a
  // full backlog are retried by the kernel), a read too.
  const timeval tv{30, 0};
  for (int i = 0; i < n; ++i) {
    const long fd = syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) ChildExit(report_fd, kChildSocket, i, errno);
    fds[i] = static_cast<int>(fd);
    syscall(SYS_setsockopt, fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    syscall(SYS_setsockopt, fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (syscall(SYS_connect, fd, addr, sizeof(*addr)) != 0) {
      ChildExit(report_fd, kChildConnect, i, errno);
    }
  }
  // All open: one request on each, then every echo.
  for (int i = 0; i < n; ++i) {
    const uint64_t req = RequestOf(i);
    if (syscall(SYS_write, fds[i], &req, sizeof(req)) != static_cast<long>(sizeof(req))) {
      ChildExit(report_fd, kChildWrite, i, errno);
    }
  }
  for (int i = 0; i < n; ++i) {
    uint64_t echo = 0;
    size_t got = 0;
    while (got < sizeof(echo)) {
      const long r =
          syscall(SYS_read, fds[i], reinterpret_cast<char*>(&echo) + got, sizeof(echo) - got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) ChildExit(report_fd, kChildRead, i, r == 0 ? 0 : errno);
      got += static_cast<size_t>(r);
    }
    if (echo != RequestOf(i)) ChildExit(report_fd, kChildMismatch, i, 0);
  }
  ChildWrite(report_fd, ChildReport{kChildOk, n, 0, 0});
  // Hold them open until the parent says so ('E': check that every
  // connection was closed by the server first). A dead parent (EOF) or
  // two minutes of silence also end it.
  pollfd p{go_fd, POLLIN, 0};
  const timespec wait{120, 0};
  char cmd = 0;
  if (syscall(SYS_ppoll, &p, 1, &wait, nullptr, 0) != 1 || syscall(SYS_read, go_fd, &cmd, 1) != 1) {
    ChildExit(report_fd, kChildGo, 0, errno);
  }
  if (cmd == 'E') {
    for (int i = 0; i < n; ++i) {
      char c;
      const long r = syscall(SYS_read, fds[i], &c, 1);
      if (r > 0 || (r < 0 && errno != ECONNRESET)) {
        ChildExit(report_fd, kChildNoEof, i, r < 0 ? errno : 0);
      }
    }
  }
  for (int i = 0; i < n; ++i) syscall(SYS_close, fds[i]);
  ChildExit(report_fd, kChildOk, n, 0);
}

// Kills and reaps the child unless the test reaped it.
struct ChildGuard {
  pid_t pid = -1;
  ~ChildGuard() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      int st;
      waitpid(pid, &st, 0);
    }
  }
  // The exit status within `limit`, or -1 (the child is then killed).
  int Wait(milliseconds limit) {
    const int64_t deadline = now_ms() + limit.count();
    int st = 0;
    while (now_ms() < deadline) {
      const pid_t r = waitpid(pid, &st, WNOHANG);
      if (r == pid) {
        pid = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(milliseconds(10));
    }
    return -1;
  }
};

bool ReadReport(int fd, ChildReport* r, milliseconds limit) {
  const int64_t deadline = now_ms() + limit.count();
  size_t got = 0;
  while (got < sizeof(*r)) {
    const int64_t left = deadline - now_ms();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    const ssize_t n = read(fd, reinterpret_cast<char*>(r) + got, sizeof(*r) - got);
    if (n == 0) return false;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    got += static_cast<size_t>(n);
  }
  return true;
}

std::string Describe(const ChildReport& r) {
  return std::string("child stage '") + StageName(r.stage) + "' at connection " +
         std::to_string(r.index) + ": " + (r.err != 0 ? strerror(r.err) : "no errno");
}

TEST(AcceptTest, TenThousandConcurrentConnections) {
  const int n = 10000;
  rlimit rl;
  ASSERT_EQ(0, getrlimit(RLIMIT_NOFILE, &rl));
  const rlim_t need = static_cast<rlim_t>(n + 1000);
  const rlim_t saved_soft = rl.rlim_cur;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
    // Raising the hard limit needs root (CAP_SYS_RESOURCE); CI runs as root.
    rlimit raised{need, need};
    if (setrlimit(RLIMIT_NOFILE, &raised) != 0) {
      GTEST_SKIP() << "the hard RLIMIT_NOFILE (" << rl.rlim_max << ") cannot hold " << n
                   << " connections and raising it failed: " << strerror(errno);
    }
    rl = raised;
  }
  rl.rlim_cur = rl.rlim_max;
  ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &rl));
  const int max_fd = rl.rlim_max == RLIM_INFINITY ? 1 << 20 : static_cast<int>(rl.rlim_max);

  const int64_t baseline = Socket::live_count();
  Acceptor a(EchoOnMessages);
  // somaxconn may cap the backlog; connects then wait for the kernel's SYN
  // retry, which the deadlines allow for.
  const uint16_t port = StartEcho(&a, 0, 4096);
  ASSERT_NE(0, port);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

  int report_pipe[2];
  int go_pipe[2];
  ASSERT_EQ(0, pipe2(report_pipe, O_CLOEXEC));
  ASSERT_EQ(0, pipe2(go_pipe, O_CLOEXEC));
  std::vector<int> fds(n, -1);  // The child's, allocated before the fork.
  const int64_t t0 = now_ms();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0) << strerror(errno);
  if (pid == 0) ChildMain(&addr, fds.data(), n, report_pipe[1], go_pipe[0], max_fd);
  ChildGuard guard;
  guard.pid = pid;
  close(report_pipe[1]);
  close(go_pipe[0]);

  ChildReport r{};
  ASSERT_TRUE(ReadReport(report_pipe[0], &r, milliseconds(120000 * kTimeScale)))
      << "the child did not report in time; server has " << a.ConnectionCount() << " connections";
  ASSERT_EQ(kChildOk, r.stage) << Describe(r) << "; server has " << a.ConnectionCount();
  ASSERT_EQ(n, r.index);
  ::testing::Test::RecordProperty("connect_and_echo_ms", static_cast<int>(now_ms() - t0));
  // Every connection answered, so every one was accepted; all still open.
  EXPECT_TRUE(wait_until([&] { return a.ConnectionCount() == static_cast<size_t>(n); }, kLong))
      << a.ConnectionCount();
  EXPECT_EQ(static_cast<size_t>(n), a.ConnectionCount());
  EXPECT_EQ(baseline + n + 1, Socket::live_count());

  StopWithin(&a, kLong * 2);
  EXPECT_EQ(0u, a.ConnectionCount());
  EXPECT_EQ(baseline, Socket::live_count());

  // The child checks that each of its connections was closed, then exits.
  ASSERT_EQ(1, write(go_pipe[1], "E", 1));
  ASSERT_TRUE(ReadReport(report_pipe[0], &r, kLong * 2)) << "the child did not finish";
  EXPECT_EQ(kChildOk, r.stage) << Describe(r);
  EXPECT_EQ(0, guard.Wait(kLong)) << "child exit status";
  close(report_pipe[0]);
  close(go_pipe[1]);
  rl.rlim_cur = saved_soft;
  EXPECT_EQ(0, setrlimit(RLIMIT_NOFILE, &rl));
}

}  // namespace
