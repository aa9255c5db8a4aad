// bthread_fd_wait remembers that an fd is registered with the poller's
// epoll set, so re-arming costs one epoll_ctl (MOD), not a failing ADD and
// then a MOD. epoll_ctl is interposed to count the calls per fd.
#include <dlfcn.h>
#include <errno.h>
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft/bthread.h>

#include <atomic>

#include "test_util.h"

namespace {
std::atomic<int> g_watched_fd{-1};
std::atomic<int> g_calls{0};
std::atomic<int> g_adds{0};
std::atomic<int> g_failed{0};
}  // namespace

extern "C" int epoll_ctl(int epfd, int op, int fd, struct epoll_event* ev) {
  using EpollCtlFn = int (*)(int, int, int, struct epoll_event*);
  static const EpollCtlFn real = reinterpret_cast<EpollCtlFn>(dlsym(RTLD_NEXT, "epoll_ctl"));
  const int rc = real(epfd, op, fd, ev);
  if (fd == g_watched_fd.load()) {
    const int saved = errno;
    g_calls.fetch_add(1);
    if (op == EPOLL_CTL_ADD) g_adds.fetch_add(1);
    if (rc != 0) g_failed.fetch_add(1);
    errno = saved;
  }
  return rc;
}

namespace {

void watch(int fd) {
  g_watched_fd.store(fd);
  g_calls.store(0);
  g_adds.store(0);
  g_failed.store(0);
}

struct Pair {
  int fds[2];
  Pair() { EXPECT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds)); }
};

struct Rounds {
  int fd;
  int peer;
  int n;
  int failures = 0;
};

// Waits for one byte n times; the byte is written before each wait, so the
// wait arms the fd and the poller fires at once.
void* wait_rounds(void* a) {
  auto* r = static_cast<Rounds*>(a);
  for (int i = 0; i < r->n; ++i) {
    char c = 'x';
    if (write(r->peer, &c, 1) != 1) ++r->failures;
    if (bthread_fd_wait(r->fd, EPOLLIN) != 0) ++r->failures;
    if (read(r->fd, &c, 1) != 1) ++r->failures;
  }
  return nullptr;
}

int run_rounds(int fd, int peer, int n) {
  Rounds r{fd, peer, n};
  bthread_t tid;
  EXPECT_EQ(0, bthread_start_background(&tid, nullptr, wait_rounds, &r));
  EXPECT_EQ(0, bthread_join(tid, nullptr));
  return r.failures;
}

TEST(FdEpollCtlTest, ReArmingARegisteredFdCostsOneEpollCtlPerWait) {
  Pair p;
  watch(p.fds[0]);
  const int n = 100;
  ASSERT_EQ(0, run_rounds(p.fds[0], p.fds[1], n));
  EXPECT_EQ(n, g_calls.load()) << "epoll_ctl calls for " << n << " waits";
  EXPECT_EQ(1, g_adds.load());
  EXPECT_EQ(0, g_failed.load());
  ASSERT_EQ(0, bthread_close(p.fds[0]));
  close(p.fds[1]);
}

TEST(FdEpollCtlTest, BthreadCloseForgetsTheRegistrationOfAReusedFdNumber) {
  Pair first;
  ASSERT_EQ(0, run_rounds(first.fds[0], first.fds[1], 2));
  const int number = first.fds[0];
  ASSERT_EQ(0, bthread_close(first.fds[0]));
  close(first.fds[1]);
  Pair second;  // the lowest free numbers: the same ones again
  ASSERT_EQ(number, second.fds[0]);
  watch(second.fds[0]);
  ASSERT_EQ(0, run_rounds(second.fds[0], second.fds[1], 3));
  // ADD for the new file, then MODs: no failing MOD first.
  EXPECT_EQ(3, g_calls.load());
  EXPECT_EQ(1, g_adds.load());
  EXPECT_EQ(0, g_failed.load());
  ASSERT_EQ(0, bthread_close(second.fds[0]));
  close(second.fds[1]);
}

TEST(FdEpollCtlTest, APlainCloseAndAReusedFdNumberStillWaits) {
  Pair first;
  ASSERT_EQ(0, run_rounds(first.fds[0], first.fds[1], 2));
  const int number = first.fds[0];
  // close(), not bthread_close: the kernel drops the registration behind
  // the runtime's back.
  close(first.fds[0]);
  close(first.fds[1]);
  Pair second;
  ASSERT_EQ(number, second.fds[0]);
  watch(second.fds[0]);
  ASSERT_EQ(0, run_rounds(second.fds[0], second.fds[1], 3));
  // At most one failed call (a MOD answered ENOENT) before the ADD.
  EXPECT_LE(g_calls.load(), 4);
  EXPECT_EQ(1, g_adds.load());
  ASSERT_EQ(0, bthread_close(second.fds[0]));
  close(second.fds[1]);
}

}  // namespace
