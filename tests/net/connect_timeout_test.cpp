// Client sockets whose connect hangs (a listener with a full accept
// queue): the connect timeout, the write's abstime, and the run of
// consecutive timeouts that --weft_connect_timeout_as_unreachable turns
// into ENETUNREACH.
#include "connect_test_util.h"
#include "socket_internal.h"

namespace {
using namespace weft_connect_test;

// ---------------------------------------------------------------------------
// 2. Connect timeouts.

// A listener whose accept queue is full and never accepted from. Linux drops
// SYNs to a full accept queue, so a connect to it stays in SYN_SENT (the
// kernel retries for minutes): only the connect timeout ends it.
class FullBacklogListener {
 public:
  FullBacklogListener() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        listen(fd_, 0) != 0) {
      why_not_ = std::string("cannot listen on 127.0.0.1: ") + strerror(errno);
      return;
    }
    ep_ = weft::get_local_side(fd_);
    Fill();
  }
  ~FullBacklogListener() {
    for (const int fd : queued_) close(fd);
    if (fd_ >= 0) close(fd_);
  }
  FullBacklogListener(const FullBacklogListener&) = delete;
  FullBacklogListener& operator=(const FullBacklogListener&) = delete;

  bool full() const { return full_; }
  const std::string& why_not() const { return why_not_; }
  const EndPoint& ep() const { return ep_; }
  size_t queued() const { return queued_.size(); }

  // Takes one connection off the accept queue, making room for one more.
  bool AcceptOne() {
    const int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return false;
    queued_.push_back(c);
    return true;
  }
  // True when a fresh non-blocking connect stays in progress for 200 ms.
  bool ProbeFull() {
    bool hung = false;
    const int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c < 0) return false;
    if (connect(c, ep_.addr(), ep_.addr_len()) != 0 && errno == EINPROGRESS) {
      pollfd p{c, POLLOUT, 0};
      hung = poll(&p, 1, 200) == 0;
      if (!hung) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err == 0) {
          queued_.push_back(c);  // It got in: the queue had room.
          return false;
        }
      }
    }
    close(c);
    return hung;
  }

 private:
  void Fill() {
    for (int i = 0; i < 64; ++i) {
      if (ProbeFull()) {
        full_ = true;
        return;
      }
    }
    why_not_ =
        "64 connects to a listen(fd, 0) socket that never accepts all completed: this "
        "kernel does not drop SYNs to a full accept queue, so no connect can hang";
  }

  int fd_ = -1;
  EndPoint ep_;
  std::vector<int> queued_;
  bool full_ = false;
  std::string why_not_;
};

class ConnectTimeoutTest : public ::testing::Test {
 protected:
  // The consecutive-timeout count of an address outlives its sockets (and
  // this test): drive it to the conversion, which erases it, so a later
  // listener that happens to get the same port starts from zero.
  static void ClearTimeoutCount(const EndPoint& ep) {
    const int saved = FLAGS_weft_connect_timeout_as_unreachable;
    FLAGS_weft_connect_timeout_as_unreachable = 1;
    EXPECT_EQ(ENETUNREACH, ConnectAndWait(ep, 100).code);
    FLAGS_weft_connect_timeout_as_unreachable = saved;
  }
  gflags::FlagSaver saver_;
};

TEST_F(ConnectTimeoutTest, HangingConnectTimesOutWithETIMEDOUT) {
  FullBacklogListener listener;
  if (!listener.full()) GTEST_SKIP() << listener.why_not();
  FLAGS_weft_connect_timeout_as_unreachable = 3;
  const int64_t baseline = Socket::live_count();

  const ConnectOutcome o = ConnectAndWait(listener.ep(), 100);
  EXPECT_EQ(ETIMEDOUT, o.code);
  EXPECT_EQ(ETIMEDOUT, o.socket_code);
  // The socket's own timer, not the kernel's SYN retries (seconds).
  EXPECT_GE(o.elapsed_ms, 90);
  EXPECT_LT(o.elapsed_ms, 2000 * kTimeScale);
  ClearTimeoutCount(listener.ep());
  EXPECT_TRUE(LiveCountBackTo(baseline)) << Socket::live_count() << " vs " << baseline;
}

// WriteOptions::abstime overrides the socket's connect_timeout_ms.
TEST_F(ConnectTimeoutTest, WriteAbstimeBoundsTheConnect) {
  FullBacklogListener listener;
  if (!listener.full()) GTEST_SKIP() << listener.why_not();
  FLAGS_weft_connect_timeout_as_unreachable = 100;
  const int64_t baseline = Socket::live_count();
  const SocketId id = NewClient(listener.ep(), 0);  // No socket-level timeout.
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(id, &s));
  IdWatch* const w = IdWatch::New(true);
  IOBuf data = Buf("ping");
  Socket::WriteOptions wo;
  wo.id_wait = w->id;
  const timespec abstime = weft::test::realtime_after_ms(150);
  wo.abstime = &abstime;
  const int64_t t0 = now_ms();
  EXPECT_EQ(0, s->Write(&data, &wo));
  ASSERT_TRUE(w->WaitCalls(1, kLong));
  const int64_t elapsed = now_ms() - t0;
  EXPECT_EQ(ETIMEDOUT, w->first_code.load());
  delete w;
  EXPECT_GE(elapsed, 130);
  EXPECT_LT(elapsed, 2000 * kTimeScale);
  EXPECT_EQ(ETIMEDOUT, s->non_zero_error_code());
  s.reset();
  ClearTimeoutCount(listener.ep());
  EXPECT_TRUE(LiveCountBackTo(baseline));
}

TEST_F(ConnectTimeoutTest, ThirdConsecutiveTimeoutIsENETUNREACHThenTheCountResets) {
  FullBacklogListener listener;
  if (!listener.full()) GTEST_SKIP() << listener.why_not();
  FLAGS_weft_connect_timeout_as_unreachable = 3;
  const int64_t baseline = Socket::live_count();
  // Two full rounds: T T U, T T U.
  const int expected[] = {ETIMEDOUT, ETIMEDOUT, ENETUNREACH, ETIMEDOUT, ETIMEDOUT, ENETUNREACH};
  for (int i = 0; i < 6; ++i) {
    SCOPED_TRACE(i);
    const ConnectOutcome o = ConnectAndWait(listener.ep(), 100);
    EXPECT_EQ(expected[i], o.code) << strerror(o.code);
    EXPECT_EQ(expected[i], o.socket_code);
  }
  EXPECT_TRUE(LiveCountBackTo(baseline));
}

// The count is per address and a successful connect clears it.
TEST_F(ConnectTimeoutTest, SuccessfulConnectResetsTheTimeoutCount) {
  FullBacklogListener listener;
  if (!listener.full()) GTEST_SKIP() << listener.why_not();
  FullBacklogListener other;
  ASSERT_TRUE(other.full()) << other.why_not();
  FLAGS_weft_connect_timeout_as_unreachable = 3;
  const int64_t baseline = Socket::live_count();

  EXPECT_EQ(ETIMEDOUT, ConnectAndWait(listener.ep(), 100).code);
  EXPECT_EQ(ETIMEDOUT, ConnectAndWait(listener.ep(), 100).code);
  // Another address has its own count.
  EXPECT_EQ(ETIMEDOUT, ConnectAndWait(other.ep(), 100).code);

  // Make room for exactly one connection: the next connect succeeds.
  ASSERT_TRUE(listener.AcceptOne());
  {
    const SocketId id = NewClient(listener.ep(), 5000);
    SocketUniquePtr s;
    ASSERT_EQ(0, Socket::Address(id, &s));
    IdWatch* const w = IdWatch::New(false);
    IOBuf data = Buf("ping");
    Socket::WriteOptions wo;
    wo.id_wait = w->id;
    ASSERT_EQ(0, s->Write(&data, &wo));
    EXPECT_TRUE(wait_until([&] { return s->out_bytes() == 4 || s->Failed(); }, kLong));
    EXPECT_FALSE(s->Failed()) << s->error_text();
    EXPECT_EQ(4, s->out_bytes());
    EXPECT_EQ(0, w->calls.load());
    w->Close();
    delete w;
    s->SetFailed();
  }
  ASSERT_TRUE(LiveCountBackTo(baseline));
  // The queue is full again. Without the reset the next timeout would be
  // the third.
  EXPECT_EQ(ETIMEDOUT, ConnectAndWait(listener.ep(), 100).code);
  EXPECT_EQ(ETIMEDOUT, ConnectAndWait(listener.ep(), 100).code);
  EXPECT_EQ(ENETUNREACH, ConnectAndWait(listener.ep(), 100).code);
  // `other` had one timeout: two more make it unreachable.
  EXPECT_EQ(ETIMEDOUT, ConnectAndWait(other.ep(), 100).code);
  EXPECT_EQ(ENETUNREACH, ConnectAndWait(other.ep(), 100).code);
  EXPECT_TRUE(LiveCountBackTo(baseline));
}

// SetFailed while the connect hangs cancels it at once: the queued write
// hears the socket's error, nothing stays counted, and when the listener
// later makes room the failed socket neither adopts a connection nor sends.
TEST_F(ConnectTimeoutTest, SetFailedCancelsAPendingConnect) {
  FullBacklogListener listener;
  if (!listener.full()) GTEST_SKIP() << listener.why_not();
  const int64_t baseline = Socket::live_count();
  const SocketId id = NewClient(listener.ep(), /*connect_timeout_ms=*/0);
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(id, &s));
  IdWatch* const w = IdWatch::New(true);
  IOBuf data = Buf("must-not-arrive");
  Socket::WriteOptions wo;
  wo.id_wait = w->id;
  ASSERT_EQ(0, s->Write(&data, &wo));
  bthread_usleep(100 * 1000);
  EXPECT_EQ(0, w->calls.load()) << "the connect should still be pending";
  ASSERT_EQ(0, s->SetFailed(ECANCELED, "cancelled by the test"));
  ASSERT_TRUE(w->WaitCalls(1, milliseconds(2000 * kTimeScale)))
      << "the queued write was not told within 2 s of SetFailed";
  EXPECT_EQ(ECANCELED, w->first_code.load());
  delete w;
  // The writer is told before its bytes are uncounted (ReturnFailedWrite-
  // Request), on the thread that failed it: the count drops just after.
  EXPECT_TRUE(wait_until([&] { return s->unwritten_bytes() == 0; }, kLong))
      << s->unwritten_bytes() << " bytes still counted";
  // Room in the queue: a connection still in SYN_SENT would now complete.
  ASSERT_TRUE(listener.AcceptOne());
  bthread_usleep(300 * 1000);
  EXPECT_EQ(-1, s->fd()) << "a failed socket adopted a connection";
  s.reset();
  EXPECT_TRUE(LiveCountBackTo(baseline));
}

// Issue 9, section 5: the consecutive-timeout count is per remote address
// and a successful connect does not wait for a timeout being counted
// elsewhere (it took a process-wide mutex before). The hook holds a
// timeout's counting open until the successful connect is done (or 3 s).
std::atomic<bool> g_in_hook{false};
std::atomic<bool> g_success_done{false};
std::atomic<bool> g_saw_success{false};

TEST_F(ConnectTimeoutTest, SuccessfulConnectNeverWaitsForATimeoutBeingCounted) {
  FullBacklogListener listener;
  if (!listener.full()) GTEST_SKIP() << listener.why_not();
  OneShotServer server;
  ASSERT_EQ(0, server.error());
  server.Start(4);
  FLAGS_weft_connect_timeout_as_unreachable = 100;
  g_in_hook = false;
  g_success_done = false;
  g_saw_success = false;
  weft::net_internal::connect_timeout_count_hook.store(+[] {
    g_in_hook.store(true);
    const int64_t deadline = now_ms() + 3000;
    // bthread_usleep: the hook runs in a fiber, and with one worker a
    // blocking sleep would keep the successful connect from running.
    while (!g_success_done.load() && now_ms() < deadline) bthread_usleep(1000);
    g_saw_success.store(g_success_done.load());
  });
  std::thread timing_out([&] { EXPECT_EQ(ETIMEDOUT, ConnectAndWait(listener.ep(), 100).code); });
  ASSERT_TRUE(wait_until([] { return g_in_hook.load(); }, kLong));
  {
    const SocketId id = NewClient(EndPoint::loopback(server.port()), 5000);
    SocketUniquePtr s;
    ASSERT_EQ(0, Socket::Address(id, &s));
    IOBuf data = Buf("ping");
    ASSERT_EQ(0, s->Write(&data));
    EXPECT_TRUE(wait_until([&] { return s->out_bytes() == 4 || s->Failed(); }, kLong));
    EXPECT_FALSE(s->Failed()) << s->error_text();
    g_success_done.store(true);
    s->SetFailed();
  }
  timing_out.join();
  weft::net_internal::connect_timeout_count_hook.store(nullptr);
  server.Join();
  EXPECT_TRUE(g_saw_success.load()) << "the successful connect waited for the timeout's count";
  ClearTimeoutCount(listener.ep());
}

}  // namespace
