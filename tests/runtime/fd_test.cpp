// Fiber-aware fd waits on socketpairs and loopback sockets.
#include <arpa/inet.h>
#include <errno.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft/bthread.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

struct Pair {
  int fds[2];
  Pair() { EXPECT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds)); }
  ~Pair() {
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
  }
};

struct WaitArg {
  int fd;
  unsigned events;
  int timeout_ms = -1;
  std::atomic<int> started{0};
  std::atomic<int> rc{1};
  std::atomic<int> err{0};
};

void* wait_fd(void* a) {
  auto* p = static_cast<WaitArg*>(a);
  p->started.store(1);
  int rc;
  if (p->timeout_ms >= 0) {
    timespec t = weft::test::realtime_after_ms(p->timeout_ms);
    rc = bthread_fd_timedwait(p->fd, p->events, &t);
  } else {
    rc = bthread_fd_wait(p->fd, p->events);
  }
  p->err.store(rc == 0 ? 0 : errno);
  p->rc.store(rc);
  return nullptr;
}

TEST(FdTest, AFiberWakesWhenDataArrives) {
  Pair pair;
  WaitArg arg{pair.fds[0], EPOLLIN};
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, wait_fd, &arg));
  ASSERT_TRUE(weft::test::wait_until([&] { return arg.started.load() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(1, arg.rc.load());  // still waiting
  ASSERT_EQ(1, write(pair.fds[1], "x", 1));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(0, arg.rc.load());
}

TEST(FdTest, TimedWaitTimesOutAndInterruptEndsTheWait) {
  Pair pair;
  WaitArg timed{pair.fds[0], EPOLLIN, 20};
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, wait_fd, &timed));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(-1, timed.rc.load());
  EXPECT_EQ(ETIMEDOUT, timed.err.load());

  WaitArg interrupted{pair.fds[0], EPOLLIN};
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, wait_fd, &interrupted));
  ASSERT_TRUE(weft::test::wait_until([&] { return interrupted.started.load() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(0, bthread_interrupt(tid));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(-1, interrupted.rc.load());
  EXPECT_EQ(EINTR, interrupted.err.load());

  // The fd still works for the next waiter.
  WaitArg next{pair.fds[0], EPOLLIN};
  ASSERT_EQ(1, write(pair.fds[1], "y", 1));
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, wait_fd, &next));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(0, next.rc.load());
}

TEST(FdTest, CloseWakesTheWaiterWithEbadf) {
  Pair pair;
  WaitArg arg{pair.fds[0], EPOLLIN};
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, wait_fd, &arg));
  ASSERT_TRUE(weft::test::wait_until([&] { return arg.started.load() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(0, bthread_close(pair.fds[0]));
  pair.fds[0] = -1;
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(-1, arg.rc.load());
  EXPECT_EQ(EBADF, arg.err.load());
}

TEST(FdTest, PthreadCallersBlockNormally) {
  Pair pair;
  WaitArg arg{pair.fds[0], EPOLLIN, 10};
  wait_fd(&arg);
  EXPECT_EQ(ETIMEDOUT, arg.err.load());
  ASSERT_EQ(1, write(pair.fds[1], "z", 1));
  WaitArg ready{pair.fds[0], EPOLLIN};
  wait_fd(&ready);
  EXPECT_EQ(0, ready.rc.load());
}

// A BTHREAD_ATTR_PTHREAD fiber blocked in an fd wait: `end` must end the
// wait with `want`. If it does not, a byte from the peer releases the
// waiter so the test fails instead of hanging.
void expect_pthread_fiber_wait_ends(Pair* pair, int want, const std::function<void(bthread_t)>& end) {
  WaitArg arg{pair->fds[0], EPOLLIN};
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, &BTHREAD_ATTR_PTHREAD, wait_fd, &arg));
  ASSERT_TRUE(weft::test::wait_until([&] { return arg.started.load() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let it block
  EXPECT_EQ(1, arg.rc.load());
  end(tid);
  const bool ended =
      weft::test::wait_until([&] { return arg.rc.load() != 1; }, std::chrono::milliseconds(5000));
  if (!ended) {
    ASSERT_EQ(1, write(pair->fds[1], "u", 1));
  }
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_TRUE(ended) << "the wait did not end";
  EXPECT_EQ(-1, arg.rc.load());
  EXPECT_EQ(want, arg.err.load());
}

TEST(FdTest, PthreadFiberFdWaitEndsWithEintrOnInterrupt) {
  Pair pair;
  expect_pthread_fiber_wait_ends(&pair, EINTR, [](bthread_t t) { ASSERT_EQ(0, bthread_interrupt(t)); });
}

TEST(FdTest, PthreadFiberFdWaitEndsWithEintrOnStop) {
  Pair pair;
  expect_pthread_fiber_wait_ends(&pair, EINTR, [](bthread_t t) { ASSERT_EQ(0, bthread_stop(t)); });
}

TEST(FdTest, PthreadFiberFdWaitEndsWithEbadfOnBthreadClose) {
  Pair pair;
  const int fd = pair.fds[0];
  expect_pthread_fiber_wait_ends(&pair, EBADF, [fd](bthread_t) { ASSERT_EQ(0, bthread_close(fd)); });
  pair.fds[0] = -1;
}

TEST(FdTest, PthreadFiberFdWaitWakesOnData) {
  Pair pair;
  WaitArg arg{pair.fds[0], EPOLLIN};
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, &BTHREAD_ATTR_PTHREAD, wait_fd, &arg));
  ASSERT_TRUE(weft::test::wait_until([&] { return arg.started.load() == 1; }));
  ASSERT_EQ(1, write(pair.fds[1], "d", 1));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(0, arg.rc.load());
}

TEST(FdTest, WaitingFibersDoNotHoldTheirWorkers) {
  // More waiters than workers; a further fiber must still run, and every
  // waiter wakes once its peer writes.
  const int n = 64;
  std::vector<Pair> pairs(n);
  std::vector<std::unique_ptr<WaitArg>> args;
  std::vector<bthread_t> tids(n);
  for (int i = 0; i < n; ++i) {
    args.push_back(std::make_unique<WaitArg>());
    args[i]->fd = pairs[i].fds[0];
    args[i]->events = EPOLLIN;
    ASSERT_EQ(0, bthread_start_background(&tids[i], &BTHREAD_ATTR_SMALL, wait_fd, args[i].get()));
  }
  for (auto& a : args) ASSERT_TRUE(weft::test::wait_until([&] { return a->started.load() == 1; }));
  std::atomic<int> ran{0};
  bthread_t other;
  ASSERT_EQ(0, bthread_start_background(&other, nullptr, [](void* r) -> void* {
    static_cast<std::atomic<int>*>(r)->store(1);
    return nullptr;
  }, &ran));
  ASSERT_EQ(0, bthread_join(other, nullptr));
  EXPECT_EQ(1, ran.load());
  for (auto& p : pairs) ASSERT_EQ(1, write(p.fds[1], "w", 1));
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(0, bthread_join(tids[i], nullptr));
    EXPECT_EQ(0, args[i]->rc.load());
  }
}

TEST(FdTest, ConnectSucceedsToAListenerAndFailsOnAClosedPort) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(0, bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
  ASSERT_EQ(0, listen(listener, 16));
  socklen_t len = sizeof(addr);
  ASSERT_EQ(0, getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len));
  struct Arg {
    sockaddr_in addr;
    int rc = 1, err = 0;
  } ok{addr}, refused{addr};
  auto connect_fn = [](void* a) -> void* {
    auto* p = static_cast<Arg*>(a);
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    p->rc = bthread_connect(fd, reinterpret_cast<sockaddr*>(&p->addr), sizeof(p->addr));
    p->err = p->rc == 0 ? 0 : errno;
    close(fd);
    return nullptr;
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, connect_fn, &ok));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(0, ok.rc) << ok.err;
  close(listener);  // the port is closed now
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, connect_fn, &refused));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(-1, refused.rc);
  EXPECT_EQ(ECONNREFUSED, refused.err);
}

}  // namespace
