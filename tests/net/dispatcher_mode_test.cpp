// The dispatcher's modes (--weft_event_dispatcher_mode, registered once per
// mode in tests/CMakeLists.txt): every mode delivers every event, and the
// "worker" mode never keeps a ready fiber waiting behind its blocking
// epoll_wait.
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/net/acceptor.h"
#include "weft/net/endpoint.h"
#include "weft/net/event_dispatcher.h"

DECLARE_string(weft_event_dispatcher_mode);
DECLARE_int32(weft_event_dispatcher_block_us);

namespace weft {
namespace {

int connect_blocking(const EndPoint& ep) {
  const int fd = test::connect_to(ep);
  if (fd < 0) return -1;
  const int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  return fd;
}

TEST(DispatcherModeTest, ModeFlagParses) {
  DispatchMode mode = DispatchMode::kFiber;
  ASSERT_TRUE(ParseDispatchMode(FLAGS_weft_event_dispatcher_mode.c_str(), &mode))
      << FLAGS_weft_event_dispatcher_mode;
  EXPECT_FALSE(ParseDispatchMode("epoll", &mode));
}

// Every round trip on every connection comes back: no event is lost in the
// mode under test, with many connections served by one dispatcher.
TEST(DispatcherModeTest, EveryEventIsDeliveredInEveryMode) {
  test::Watchdog dog("echo rounds", test::kLong);
  Acceptor acceptor(test::EchoOnMessages);
  const int lfd = tcp_listen(EndPoint::loopback(0));
  ASSERT_GE(lfd, 0);
  const EndPoint ep = get_local_side(lfd);
  ASSERT_EQ(0, acceptor.StartAccept(lfd, 0));
  constexpr int kConns = 32;
  constexpr int kRounds = 50;
  std::vector<int> fds;
  for (int i = 0; i < kConns; ++i) {
    const int fd = connect_blocking(ep);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
  }
  for (int r = 0; r < kRounds; ++r) {
    const std::string msg = "round " + std::to_string(r);
    for (int fd : fds) ASSERT_EQ(ssize_t(msg.size()), write(fd, msg.data(), msg.size()));
    for (int fd : fds) {
      ASSERT_EQ(msg, test::read_until(fd, msg.size(), 10000 * test::kTimeScale)) << "round " << r;
    }
  }
  for (int fd : fds) close(fd);
  acceptor.StopAccept();
}

void* nothing(void*) { return nullptr; }

// Registered with one worker, mode=worker and a 5 s blocking wait: the
// dispatcher must never block the only worker (nobody else could run the
// fibers made ready meanwhile), so a fiber started from this pthread (it
// goes to the remote queue) runs at once, not after the 5 s wait.
TEST(DispatcherModeTest, WorkerModeNeverHoldsTheOnlyWorker) {
  if (FLAGS_weft_event_dispatcher_mode != "worker" || bthread_getconcurrency() != 1) {
    GTEST_SKIP() << "registered with --weft_concurrency=1 --weft_event_dispatcher_mode=worker";
  }
  ASSERT_GE(FLAGS_weft_event_dispatcher_block_us, 5000000);
  test::Watchdog dog("starting fibers", test::kLong);
  // Starts the global dispatcher, and gives it traffic so it is in its
  // blocking phase rather than parked after an empty wait.
  Acceptor acceptor(test::EchoOnMessages);
  const int lfd = tcp_listen(EndPoint::loopback(0));
  ASSERT_GE(lfd, 0);
  const EndPoint ep = get_local_side(lfd);
  ASSERT_EQ(0, acceptor.StartAccept(lfd, 0));
  const int fd = connect_blocking(ep);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(4, write(fd, "ping", 4));
    ASSERT_EQ("ping", test::read_until(fd, 4, 10000 * test::kTimeScale));
    usleep(20000);  // the dispatcher is back in its wait
    const auto start = std::chrono::steady_clock::now();
    bthread_t tid;
    ASSERT_EQ(0, bthread_start_background(&tid, nullptr, nothing, nullptr));
    ASSERT_EQ(0, bthread_join(tid, nullptr));
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    // Not a speed check: far below the 5 s a blocked worker would take,
    // far above any scheduling delay, sanitizers included.
    EXPECT_LT(ms, 2500) << "the fiber waited for the dispatcher's epoll_wait";
  }
  close(fd);
  acceptor.StopAccept();
}

}  // namespace
}  // namespace weft
