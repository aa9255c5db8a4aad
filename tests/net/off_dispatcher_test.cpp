// Issue 9, section 4: users' code never runs in the dispatcher fiber, a
// connect whose AppConnect never finishes is bounded by its deadline, and a
// handler may stop its own acceptor.
//
// The dispatcher is one fiber per epoll set (--weft_event_dispatcher_num=1
// here, so every socket of the test shares it). If it ran an AppConnect's
// StartConnect, or the id_wait handlers of a failed connect, one slow
// handshake would stall every socket. The tests make that causal instead of
// timing it: the slow code waits (fiber sleep, bounded) until echo round
// trips on another socket have completed, and the echo client waits (bounded)
// for its replies. Before the fix the echo server is never dispatched while
// the slow code waits, so the round trips time out; after it, they complete
// and release the slow code.
#include <errno.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "../runtime/test_util.h"
#include "base/time_util.h"
#include "connect_test_util.h"
#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/errno.h"
#include "weft/net/acceptor.h"
#include "weft/net/endpoint.h"
#include "weft/net/input_messenger.h"
#include "weft/net/socket.h"

namespace {

using std::chrono::milliseconds;
using weft::Acceptor;
using weft::EndPoint;
using weft::IOBuf;
using weft::Socket;
using weft::SocketId;
using weft::SocketOptions;
using weft::SocketUniquePtr;
using weft::test::kLong;
using weft::test::kTimeScale;
using weft::test::now_ms;
using weft::test::wait_until;
using weft::test::Watchdog;
using weft_connect_test::Buf;
using weft_connect_test::FiberWaitUntil;
using weft_connect_test::IdWatch;
using weft_connect_test::LiveCountBackTo;

// How long the slow code waits for the echo before giving up, and how long
// the echo client waits for one reply. Both far above a round trip (a few
// ms even under sanitizers); the client gives up first, so a stalled
// dispatcher shows as a failed round trip, not as a hang.
const milliseconds kSlowCodeLimit(4000 * kTimeScale);
const int64_t kReplyLimitMs = 2000 * kTimeScale;
constexpr int kRoundTrips = 20;

// Opened by the test once the echo round trips are done (or failed).
struct Gate {
  std::atomic<bool> open{false};
  // From a fiber or a pthread; true if the gate opened within the limit.
  bool Wait() {
    return FiberWaitUntil([this] { return open.load(std::memory_order_acquire); }, kSlowCodeLimit);
  }
};

// An echo server on the shared dispatcher and a blocking client of it.
class Echo {
 public:
  Echo() : acceptor_(weft::test::EchoOnMessages) {
    const int lfd = weft::tcp_listen(EndPoint::loopback(0), 16);
    EXPECT_GE(lfd, 0);
    ep_ = weft::get_local_side(lfd);
    EXPECT_EQ(0, acceptor_.StartAccept(lfd, 0));
    client_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(0, connect(client_, ep_.addr(), ep_.addr_len()));
  }
  ~Echo() {
    close(client_);
    acceptor_.StopAccept();
  }
  // kRoundTrips 16-byte round trips, each answered within kReplyLimitMs.
  bool RoundTrips() {
    int64_t worst_ms = 0;
    for (int i = 0; i < kRoundTrips; ++i) {
      char msg[17];
      snprintf(msg, sizeof(msg), "echo-%010d", i);
      const int64_t t0 = now_ms();
      if (write(client_, msg, 16) != 16) return false;
      const std::string got = weft::test::read_until(client_, 16, kReplyLimitMs);
      if (got != std::string(msg, 16)) {
        printf("round trip %d not answered within %lld ms\n", i,
               static_cast<long long>(kReplyLimitMs));
        return false;
      }
      if (now_ms() - t0 > worst_ms) worst_ms = now_ms() - t0;
    }
    printf("%d round trips, the slowest %lld ms\n", kRoundTrips, static_cast<long long>(worst_ms));
    return true;
  }

 private:
  Acceptor acceptor_;
  EndPoint ep_;
  int client_ = -1;
};

// A listener nobody accepts on: the kernel completes connects into its
// backlog, so a client socket gets to its AppConnect.
class Backlog {
 public:
  Backlog() : fd_(weft::tcp_listen(EndPoint::loopback(0), 64)) { EXPECT_GE(fd_, 0); }
  ~Backlog() { close(fd_); }
  EndPoint ep() const { return weft::get_local_side(fd_); }

 private:
  const int fd_;
};

SocketId NewAppClient(const EndPoint& ep, std::shared_ptr<weft::AppConnect> app,
                      int connect_timeout_ms) {
  SocketOptions opt;
  opt.remote_side = ep;
  opt.app_connect = std::move(app);
  opt.connect_timeout_ms = connect_timeout_ms;
  SocketId id = weft::INVALID_SOCKET_ID;
  EXPECT_EQ(0, Socket::Create(opt, &id));
  return id;
}

// ---------------------------------------------------------------------------
// 1. A slow StartConnect runs in its own fiber.

// Blocks its caller's fiber until the gate opens (bounded), then succeeds.
class GatedAppConnect : public weft::AppConnect {
 public:
  explicit GatedAppConnect(Gate* gate) : gate_(gate) {}
  void StartConnect(Socket*, void (*done)(int, void*), void* data) override {
    started.store(true, std::memory_order_release);
    saw_gate_open.store(gate_->Wait());
    finished.store(true, std::memory_order_release);
    done(0, data);
  }
  std::atomic<bool> started{false};
  std::atomic<bool> saw_gate_open{false};
  std::atomic<bool> finished{false};

 private:
  Gate* const gate_;
};

TEST(OffDispatcherTest, SlowAppConnectDoesNotStallOtherSocketsOfItsDispatcher) {
  const int64_t baseline = Socket::live_count();
  {
    Echo echo;
    ASSERT_TRUE(echo.RoundTrips());  // Served at all.
    Backlog backlog;
    Gate gate;
    auto app = std::make_shared<GatedAppConnect>(&gate);
    SocketUniquePtr s;
    ASSERT_EQ(0, Socket::Address(NewAppClient(backlog.ep(), app, 0), &s));
    IOBuf data = Buf("x");
    ASSERT_EQ(0, s->Write(&data));
    ASSERT_TRUE(wait_until([&] { return app->started.load(std::memory_order_acquire); }, kLong));
    // StartConnect is blocked now; the other socket must still be served.
    const bool served = echo.RoundTrips();
    gate.open.store(true, std::memory_order_release);
    ASSERT_TRUE(wait_until([&] { return app->finished.load(std::memory_order_acquire); }, kLong));
    EXPECT_TRUE(served) << "a blocked StartConnect stalled another socket of its dispatcher";
    EXPECT_TRUE(app->saw_gate_open.load());
    EXPECT_TRUE(wait_until([&] { return s->unwritten_bytes() == 0; }, kLong));
    EXPECT_FALSE(s->Failed()) << s->error_text();
    s->SetFailed();
  }
  EXPECT_TRUE(LiveCountBackTo(baseline));
}

// ---------------------------------------------------------------------------
// 2. The id_wait handlers of a failed connect run in their own fiber.

// Fails the handshake at once (in StartConnect's own context).
class FailingAppConnect : public weft::AppConnect {
 public:
  void StartConnect(Socket*, void (*done)(int, void*), void* data) override {
    done(ECONNABORTED, data);
  }
};

// An id whose error handler blocks its caller's fiber until the gate opens.
struct GatedIdHandler {
  Gate* gate = nullptr;
  bthread_id_t id{0};
  std::atomic<bool> entered{false};
  std::atomic<int> code{0};
  std::atomic<bool> saw_gate_open{false};
  std::atomic<bool> finished{false};

  static int OnError(bthread_id_t id, void* data, int error_code) {
    auto* h = static_cast<GatedIdHandler*>(data);
    h->code.store(error_code);
    h->entered.store(true, std::memory_order_release);
    h->saw_gate_open.store(h->gate->Wait());
    const int rc = bthread_id_unlock_and_destroy(id);
    h->finished.store(true, std::memory_order_release);
    return rc;
  }
};

TEST(OffDispatcherTest, SlowIdWaitHandlerOfAFailedConnectDoesNotStallTheDispatcher) {
  const int64_t baseline = Socket::live_count();
  {
    Echo echo;
    ASSERT_TRUE(echo.RoundTrips());
    Backlog backlog;
    Gate gate;
    // Heap: if the test fails before the handler ran, it leaks instead of
    // being freed under a live id.
    auto* handler = new GatedIdHandler;
    handler->gate = &gate;
    ASSERT_EQ(0, bthread_id_create(&handler->id, handler, GatedIdHandler::OnError));
    SocketUniquePtr s;
    ASSERT_EQ(0, Socket::Address(
                     NewAppClient(backlog.ep(), std::make_shared<FailingAppConnect>(), 0), &s));
    IOBuf data = Buf("x");
    Socket::WriteOptions wo;
    wo.id_wait = handler->id;
    ASSERT_EQ(0, s->Write(&data, &wo));
    ASSERT_TRUE(
        wait_until([&] { return handler->entered.load(std::memory_order_acquire); }, kLong));
    const bool served = echo.RoundTrips();
    gate.open.store(true, std::memory_order_release);
    ASSERT_TRUE(
        wait_until([&] { return handler->finished.load(std::memory_order_acquire); }, kLong));
    EXPECT_TRUE(served) << "a blocked id_wait handler stalled another socket of its dispatcher";
    EXPECT_TRUE(handler->saw_gate_open.load());
    EXPECT_EQ(ECONNABORTED, handler->code.load());
    EXPECT_TRUE(s->Failed());
    delete handler;
  }
  EXPECT_TRUE(LiveCountBackTo(baseline));
}

// ---------------------------------------------------------------------------
// 3. An AppConnect that never calls done is bounded by the connect deadline.

// Keeps done and never calls it (until the test does, late).
class SilentAppConnect : public weft::AppConnect {
 public:
  void StartConnect(Socket*, void (*done)(int, void*), void* data) override {
    std::lock_guard<std::mutex> lock(mu);
    done_ = done;
    data_ = data;
    started.store(true, std::memory_order_release);
  }
  void StopConnect(Socket*) override { stops.fetch_add(1, std::memory_order_release); }
  void CallDoneLate(int err) {
    void (*done)(int, void*) = nullptr;
    void* data = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu);
      done = done_;
      data = data_;
    }
    if (done != nullptr) done(err, data);
  }
  std::mutex mu;
  std::atomic<bool> started{false};
  std::atomic<int> stops{0};

 private:
  void (*done_)(int, void*) = nullptr;  // guarded by mu
  void* data_ = nullptr;                // guarded by mu
};

// by_abstime: the deadline is the write's WriteOptions::abstime, else the
// socket's connect_timeout_ms.
void ExpectSilentAppConnectTimesOut(bool by_abstime) {
  constexpr int kTimeoutMs = 200;
  // Far above kTimeoutMs, far below "never".
  const milliseconds limit(5000 * kTimeScale);
  const int64_t baseline = Socket::live_count();
  Backlog backlog;
  auto app = std::make_shared<SilentAppConnect>();
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(NewAppClient(backlog.ep(), app, by_abstime ? 0 : kTimeoutMs), &s));
  IdWatch* const first = IdWatch::New(true);
  IdWatch* const second = IdWatch::New(true);
  timespec deadline =
      weft::base::ns_to_timespec(weft::base::realtime_ns() + kTimeoutMs * 1000000LL);
  Socket::WriteOptions wo;
  wo.id_wait = first->id;
  if (by_abstime) wo.abstime = &deadline;
  IOBuf a = Buf("first");
  ASSERT_EQ(0, s->Write(&a, &wo));
  ASSERT_TRUE(wait_until([&] { return app->started.load(std::memory_order_acquire); }, kLong));
  // Queued behind the handshake.
  wo.id_wait = second->id;
  IOBuf b = Buf("second");
  ASSERT_EQ(0, s->Write(&b, &wo));

  const bool heard = first->WaitCalls(1, limit) && second->WaitCalls(1, limit);
  EXPECT_TRUE(heard) << "queued writes never heard of a handshake that never finished";
  if (heard) {
    EXPECT_EQ(ETIMEDOUT, first->first_code.load());
    EXPECT_EQ(ETIMEDOUT, second->first_code.load());
    EXPECT_TRUE(s->Failed());
    EXPECT_EQ(ETIMEDOUT, s->non_zero_error_code()) << s->error_text();
  }
  s.reset();
  if (heard) {
    // The socket recycles (no reference left behind) and its AppConnect is
    // told.
    EXPECT_TRUE(LiveCountBackTo(baseline));
    EXPECT_TRUE(wait_until([&] { return app->stops.load(std::memory_order_acquire) == 1; }, kLong));
  }
  // A late done, even twice, is harmless (ASan would see a freed context).
  // Before the fix it is what finally releases the socket.
  app->CallDoneLate(0);
  app->CallDoneLate(EIO);
  EXPECT_TRUE(LiveCountBackTo(baseline));
  EXPECT_EQ(1, app->stops.load());
  if (heard) {
    delete first;
    delete second;
  }
}

TEST(OffDispatcherTest, AppConnectThatNeverFinishesIsBoundedByConnectTimeoutMs) {
  ExpectSilentAppConnectTimesOut(false);
}

TEST(OffDispatcherTest, AppConnectThatNeverFinishesIsBoundedByTheWritesAbstime) {
  ExpectSilentAppConnectTimesOut(true);
}

// No deadline at all: SetFailed must end the handshake, or the queued
// writes wait for a done that never comes.
TEST(OffDispatcherTest, SetFailedEndsAHandshakeInProgress) {
  const milliseconds limit(5000 * kTimeScale);
  const int64_t baseline = Socket::live_count();
  Backlog backlog;
  auto app = std::make_shared<SilentAppConnect>();
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(NewAppClient(backlog.ep(), app, 0), &s));
  IdWatch* const queued = IdWatch::New(true);
  Socket::WriteOptions wo;
  wo.id_wait = queued->id;
  IOBuf a = Buf("queued");
  ASSERT_EQ(0, s->Write(&a, &wo));
  ASSERT_TRUE(wait_until([&] { return app->started.load(std::memory_order_acquire); }, kLong));
  s->SetFailed(ECONNABORTED, "the test gives up on the handshake");
  const bool heard = queued->WaitCalls(1, limit);
  EXPECT_TRUE(heard) << "a failed socket's handshake held its queued write";
  if (heard) {
    EXPECT_EQ(ECONNABORTED, queued->first_code.load());
  }
  s.reset();
  if (heard) {
    EXPECT_TRUE(LiveCountBackTo(baseline));
  }
  app->CallDoneLate(0);  // late: harmless
  EXPECT_TRUE(LiveCountBackTo(baseline));
  if (heard) delete queued;
}

// ---------------------------------------------------------------------------
// 4. A handler may stop its own acceptor.

// One-byte messages: 'S' stops the acceptor, anything else is echoed.
struct ByteMessage : public weft::InputMessageBase {
  char c = 0;
};

std::atomic<int> g_stops_returned{0};
// 'S' handlers wait (bounded) until this many have arrived, so that they
// all call StopAccept while the others are still running.
std::atomic<int> g_stoppers_expected{1};
std::atomic<int> g_stoppers_entered{0};

weft::ParseResult ParseByte(IOBuf* source, Socket*, bool, const void*) {
  if (source->empty()) return weft::ParseResult::Error(weft::PARSE_ERROR_NOT_ENOUGH_DATA);
  auto* msg = new ByteMessage;
  source->cutn(&msg->c, 1);
  return weft::ParseResult::Ok(msg);
}

void ProcessByte(weft::InputMessageBase* base) {
  auto* msg = static_cast<ByteMessage*>(base);
  if (msg->c == 'S') {
    g_stoppers_entered.fetch_add(1);
    FiberWaitUntil([] { return g_stoppers_entered.load() >= g_stoppers_expected.load(); }, kLong);
    // The handler's own connection is one of the acceptor's.
    auto* acceptor = static_cast<Acceptor*>(msg->socket()->user());
    acceptor->StopAccept();
    g_stops_returned.fetch_add(1);
  } else {
    IOBuf reply;
    reply.append(&msg->c, 1);
    msg->socket()->Write(&reply);
  }
  msg->Destroy();
}

// True once fd reads EOF (after any bytes) within the limit.
bool SeesEof(int fd) {
  const int64_t deadline = now_ms() + kLong.count();
  char buf[256];
  while (now_ms() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0) return true;
    if (n < 0 && errno != EINTR && errno != EAGAIN) return errno == ECONNRESET;
  }
  return false;
}

// stop_message: what the stopping client sends. "S" is the only message of
// its read (run in the reading fiber); "Sa" makes it a message that is not
// the last of its read (run in a fiber of its own, if both bytes arrive in
// one read).
// stoppers: how many clients send it at once (their handlers must not wait
// for each other's connections either).
void ExpectHandlerStopsItsOwnAcceptor(const char* stop_message, int stoppers = 1) {
  constexpr int kClients = 3;
  g_stops_returned = 0;
  g_stoppers_entered = 0;
  g_stoppers_expected = stoppers;
  Acceptor acceptor;
  weft::InputMessageHandler h;
  h.parse = ParseByte;
  h.process = ProcessByte;
  h.name = "byte";
  ASSERT_EQ(0, acceptor.AddHandler(h));
  const int lfd = weft::tcp_listen(EndPoint::loopback(0), 16);
  ASSERT_GE(lfd, 0);
  const EndPoint ep = weft::get_local_side(lfd);
  ASSERT_EQ(0, acceptor.StartAccept(lfd, 0));
  int fds[kClients];
  for (int i = 0; i < kClients; ++i) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(0, connect(fds[i], ep.addr(), ep.addr_len()));
    ASSERT_EQ(1, write(fds[i], "a", 1));
    ASSERT_EQ("a", weft::test::read_until(fds[i], 1, kLong.count()));
  }
  // The echo can come before the acceptor has counted the connection (its
  // reader may run on another worker as soon as the socket exists).
  ASSERT_TRUE(weft::test::wait_until(
      [&] { return acceptor.ConnectionCount() == static_cast<size_t>(kClients); }, kLong))
      << acceptor.ConnectionCount();
  {
    // Before the fix StopAccept waits for the handler's own connection,
    // which cannot recycle while the handler runs: a deadlock.
    Watchdog watchdog("StopAccept called from a handler of its own connection",
                      milliseconds(10000 * kTimeScale));
    const ssize_t len = static_cast<ssize_t>(strlen(stop_message));
    for (int i = 0; i < stoppers; ++i) ASSERT_EQ(len, write(fds[i], stop_message, len));
    ASSERT_TRUE(wait_until([&] { return g_stops_returned.load() == stoppers; }, kLong));
    // Every connection is closed, the caller's own included.
    for (int i = 0; i < kClients; ++i) EXPECT_TRUE(SeesEof(fds[i])) << "client " << i;
    // A later StopAccept from outside waits for everything.
    acceptor.StopAccept();
    EXPECT_EQ(0u, acceptor.ConnectionCount());
  }
  // Stopped for good: it starts again.
  const int lfd2 = weft::tcp_listen(EndPoint::loopback(0), 16);
  ASSERT_GE(lfd2, 0);
  EXPECT_EQ(0, acceptor.StartAccept(lfd2, 0));
  acceptor.StopAccept();
  for (const int fd : fds) close(fd);
}

TEST(OffDispatcherTest, StopAcceptFromAHandlerDoesNotWaitForItsOwnConnection) {
  ExpectHandlerStopsItsOwnAcceptor("S");
}

TEST(OffDispatcherTest, StopAcceptFromAPipelinedHandlerDoesNotWaitForItsOwnConnection) {
  ExpectHandlerStopsItsOwnAcceptor("Sa");
}

TEST(OffDispatcherTest, HandlersStoppingTheirAcceptorAtOnceDoNotWaitForEachOther) {
  ExpectHandlerStopsItsOwnAcceptor("S", 2);
}

// A reading callback of its own (no InputMessenger): 'S' stops the
// acceptor from the reading fiber itself, anything else is echoed.
void StopOnS(Socket* s) {
  int progress = Socket::PROGRESS_INIT;
  do {
    for (;;) {
      const ssize_t n = s->DoRead(4096);
      if (n > 0) continue;
      if (n == 0) {
        s->SetFailed(EEOF, "closed");
        return;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        s->SetFailed(errno, "read failed");
        return;
      }
      break;
    }
    std::string got;
    s->read_buf().cutn(&got, s->read_buf().size());
    if (got.find('S') != std::string::npos) {
      static_cast<Acceptor*>(s->user())->StopAccept();
      g_stops_returned.fetch_add(1);
    } else if (!got.empty()) {
      IOBuf reply;
      reply.append(got);
      s->Write(&reply);
    }
  } while (s->MoreReadEvents(&progress));
}

TEST(OffDispatcherTest, StopAcceptFromAReadingCallbackDoesNotWaitForItsOwnConnection) {
  g_stops_returned = 0;
  Acceptor acceptor(StopOnS);
  const int lfd = weft::tcp_listen(EndPoint::loopback(0), 16);
  ASSERT_GE(lfd, 0);
  const EndPoint ep = weft::get_local_side(lfd);
  ASSERT_EQ(0, acceptor.StartAccept(lfd, 0));
  int fds[2];
  for (int& fd : fds) {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(0, connect(fd, ep.addr(), ep.addr_len()));
    ASSERT_EQ(1, write(fd, "a", 1));
    ASSERT_EQ("a", weft::test::read_until(fd, 1, kLong.count()));
  }
  {
    Watchdog watchdog("StopAccept called from a reading callback of its own connection",
                      milliseconds(10000 * kTimeScale));
    ASSERT_EQ(1, write(fds[0], "S", 1));
    ASSERT_TRUE(wait_until([] { return g_stops_returned.load() == 1; }, kLong));
    for (const int fd : fds) EXPECT_TRUE(SeesEof(fd));
    acceptor.StopAccept();
    EXPECT_EQ(0u, acceptor.ConnectionCount());
  }
  for (const int fd : fds) close(fd);
}

}  // namespace
