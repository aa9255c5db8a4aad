// Client sockets: a Socket created with a remote_side and no fd connects on
// its first Write. Covers connect errors (refused, timed out, the
// timeout-as-unreachable counter), writes queued while connecting, and IPv6.
// Peers are plain blocking sockets on 127.0.0.1 / ::1, never weft sockets,
// so a failure points at the client side.
#include <arpa/inet.h>
#include <errno.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft/bthread.h>
#include <weft/errno.h>
#include <weft/net/endpoint.h>
#include <weft/net/iobuf.h>
#include <weft/net/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../runtime/test_util.h"

DECLARE_int32(weft_connect_timeout_as_unreachable);

namespace {

using std::chrono::milliseconds;
using weft::EndPoint;
using weft::IOBuf;
using weft::Socket;
using weft::SocketId;
using weft::SocketOptions;
using weft::SocketUniquePtr;
using weft::test::wait_until;

// Deadlines stretch under sanitizers (they slow everything 5-20x); loop
// counts shrink with kScale instead.
#if defined(WEFT_TSAN) || defined(WEFT_ASAN)
constexpr int kTimeScale = 3;
#else
constexpr int kTimeScale = 1;
#endif
const milliseconds kLong(20000 * kTimeScale);

int64_t now_ms() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// wait_until for fibers: sleeps the fiber, not its worker (bthread_usleep
// is usleep in a pthread, so it works anywhere).
bool FiberWaitUntil(const std::function<bool()>& cond, milliseconds limit) {
  const int64_t deadline = now_ms() + limit.count();
  while (!cond()) {
    if (now_ms() > deadline) return cond();
    bthread_usleep(200);
  }
  return true;
}

// Aborts the process if not disarmed in time: a hang in the code under test
// (a join, a blocked accept) must fail loudly, not stall the suite.
class Watchdog {
 public:
  Watchdog(const char* what, milliseconds limit)
      : thread_([this, what, limit] {
          std::unique_lock<std::mutex> lock(mu_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            fprintf(stderr, "WATCHDOG: %s did not finish within %lld ms\n", what,
                    static_cast<long long>(limit.count()));
            abort();
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// A bthread id that hears write errors. One-shot ids (as a caller waiting
// for one RPC uses them) record the code and destroy themselves; counting
// ids record every error and stay alive until Close().
struct IdWatch {
  bthread_id_t id{0};
  std::atomic<int> first_code{0};
  std::atomic<int> calls{0};
  bool one_shot = true;
  std::mutex mu;
  std::vector<int> codes;  // guarded by mu

  static int OnError(bthread_id_t id, void* data, int error_code) {
    IdWatch* const w = static_cast<IdWatch*>(data);
    {
      std::lock_guard<std::mutex> lock(w->mu);
      w->codes.push_back(error_code);
    }
    int expected = 0;
    w->first_code.compare_exchange_strong(expected, error_code);
    // Read one_shot before publishing `calls`: the test may delete *w as
    // soon as it sees the call.
    const bool one_shot = w->one_shot;
    w->calls.fetch_add(1, std::memory_order_release);
    return one_shot ? bthread_id_unlock_and_destroy(id) : bthread_id_unlock(id);
  }
  // Heap-allocated: if a test fails before the id fires, the watch leaks
  // rather than being freed under a live id.
  static IdWatch* New(bool one_shot) {
    IdWatch* const w = new IdWatch;
    w->one_shot = one_shot;
    EXPECT_EQ(0, bthread_id_create(&w->id, w, OnError));
    return w;
  }
  bool WaitCalls(int n, milliseconds limit) {
    return FiberWaitUntil([&] { return calls.load(std::memory_order_acquire) >= n; }, limit);
  }
  // Counting ids: destroy the id (no error can be pending by then).
  void Close() {
    ASSERT_FALSE(one_shot);
    ASSERT_EQ(0, bthread_id_lock(id, nullptr));
    ASSERT_EQ(0, bthread_id_unlock_and_destroy(id));
  }
};

// A port on 127.0.0.1 nobody listens on: bound and closed again.
uint16_t ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(0, bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)));
  EXPECT_EQ(0, listen(fd, 1));
  const uint16_t port = weft::get_local_side(fd).port();
  close(fd);
  return port;
}

// A client socket connecting to `ep` on its first write.
SocketId NewClient(const EndPoint& ep, int connect_timeout_ms) {
  SocketOptions opt;
  opt.fd = -1;
  opt.remote_side = ep;
  opt.connect_timeout_ms = connect_timeout_ms;
  SocketId id = weft::INVALID_SOCKET_ID;
  EXPECT_EQ(0, Socket::Create(opt, &id));
  return id;
}

IOBuf Buf(const std::string& s) {
  IOBuf b;
  b.append(s);
  return b;
}

// Waits until every socket the test made has recycled.
bool LiveCountBackTo(int64_t baseline) {
  return wait_until([&] { return Socket::live_count() == baseline; }, kLong);
}

// Reads from a blocking fd until `want` bytes arrived, EOF, or the deadline.
std::string ReadUpTo(int fd, size_t want, int64_t deadline_ms) {
  std::string got;
  char buf[65536];
  while (got.size() < want) {
    const int64_t left = deadline_ms - now_ms();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    const int rc = poll(&p, 1, static_cast<int>(left < 100 ? left : 100));
    if (rc < 0 && errno != EINTR) break;
    if (rc <= 0) continue;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      break;
    }
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// A plain listener on 127.0.0.1:0 (or ::1) served by one pthread that
// accepts one connection and reads `want` bytes from it.
class OneShotServer {
 public:
  explicit OneShotServer(bool ipv6 = false) {
    listen_fd_ = weft::tcp_listen(ipv6 ? EndPoint::loopback6(0) : EndPoint::loopback(0), 16);
    if (listen_fd_ < 0) {
      error_ = errno;
      return;
    }
    port_ = weft::get_local_side(listen_fd_).port();
  }
  ~OneShotServer() {
    if (thread_.joinable()) thread_.join();
    if (conn_fd_ >= 0) close(conn_fd_);
    if (listen_fd_ >= 0) close(listen_fd_);
  }
  int error() const { return error_; }
  uint16_t port() const { return port_; }

  void Start(size_t want) {
    thread_ = std::thread([this, want] {
      const int64_t deadline = now_ms() + kLong.count();
      pollfd p{listen_fd_, POLLIN, 0};
      while (now_ms() < deadline && poll(&p, 1, 100) <= 0) {
      }
      sockaddr_storage ss{};
      socklen_t len = sizeof(ss);
      conn_fd_ = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
      if (conn_fd_ < 0) return;
      peer_ = EndPoint(reinterpret_cast<sockaddr*>(&ss), len);
      received_ = ReadUpTo(conn_fd_, want, deadline);
    });
  }
  // After Join: what the one connection sent, and from where.
  void Join() { thread_.join(); }
  const std::string& received() const { return received_; }
  const EndPoint& peer() const { return peer_; }
  bool accepted() const { return conn_fd_ >= 0; }
  // A second connection would be a bug (a write connecting twice).
  bool AnotherConnectionPending() {
    pollfd p{listen_fd_, POLLIN, 0};
    return poll(&p, 1, 0) > 0;
  }

 private:
  int listen_fd_ = -1;
  int error_ = 0;
  uint16_t port_ = 0;
  std::thread thread_;
  int conn_fd_ = -1;
  EndPoint peer_;
  std::string received_;
};

// ---------------------------------------------------------------------------
// 1. Refused connects.

TEST(ConnectTest, ClosedPortFailsTheWriteWithECONNREFUSED) {
  const int64_t baseline = Socket::live_count();
  const EndPoint ep = EndPoint::loopback(ClosedPort());
  const SocketId id = NewClient(ep, 5000);
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(id, &s));
  EXPECT_EQ(-1, s->fd());  // Not connected before the first write.
  EXPECT_FALSE(s->Failed());

  IdWatch* const w = IdWatch::New(true);
  IOBuf data = Buf("hello");
  Socket::WriteOptions wo;
  wo.id_wait = w->id;
  // With id_wait the error goes to the id, never to the return value.
  EXPECT_EQ(0, s->Write(&data, &wo));
  EXPECT_TRUE(data.empty());
  ASSERT_TRUE(w->WaitCalls(1, kLong)) << "the write's id never heard the connect error";
  EXPECT_EQ(ECONNREFUSED, w->first_code.load());
  EXPECT_EQ(EINVAL, bthread_id_error(w->id, EINVAL)) << "the id was not destroyed";
  std::this_thread::sleep_for(milliseconds(20));
  EXPECT_EQ(1, w->calls.load()) << "the error was reported more than once";
  delete w;

  EXPECT_TRUE(s->Failed());
  EXPECT_EQ(ECONNREFUSED, s->non_zero_error_code());
  EXPECT_NE(std::string::npos, s->error_text().find(ep.to_string())) << s->error_text();
  SocketUniquePtr again;
  EXPECT_NE(0, Socket::Address(id, &again));
  EXPECT_EQ(1, Socket::AddressFailedAsWell(id, &again));  // We still hold it.
  again.reset();

  // A write to the failed socket fails at once with the socket's error.
  IOBuf more = Buf("more");
  errno = 0;
  EXPECT_EQ(-1, s->Write(&more));
  EXPECT_EQ(ECONNREFUSED, errno);

  s.reset();
  EXPECT_TRUE(LiveCountBackTo(baseline)) << Socket::live_count() << " vs " << baseline;
  EXPECT_EQ(-1, Socket::AddressFailedAsWell(id, &again));  // Recycled.
}

// Many sockets, from many fibers, refused at once; some with id_wait and
// some without (Write then returns -1 if it fails synchronously, else the
// socket fails later): every one ends failed with ECONNREFUSED.
struct RefusedArg {
  EndPoint ep;
  bool with_id = false;
  int code = 0;           // the error the caller saw
  bool sync_ok = false;   // Write returned 0 without id_wait
  int socket_code = 0;    // the socket's error
};

void* RefusedWriter(void* a) {
  RefusedArg* const arg = static_cast<RefusedArg*>(a);
  const SocketId id = NewClient(arg->ep, 5000);
  SocketUniquePtr s;
  if (Socket::Address(id, &s) != 0) return nullptr;
  IOBuf data = Buf("x");
  if (arg->with_id) {
    IdWatch* const w = IdWatch::New(true);
    Socket::WriteOptions wo;
    wo.id_wait = w->id;
    if (s->Write(&data, &wo) != 0) arg->code = -1;
    if (w->WaitCalls(1, kLong)) {
      arg->code = w->first_code.load();
      delete w;
    }
  } else {
    if (s->Write(&data) == 0) {
      arg->sync_ok = true;
    } else {
      arg->code = errno;
    }
  }
  FiberWaitUntil([&] { return s->Failed(); }, kLong);
  if (s->Failed()) arg->socket_code = s->non_zero_error_code();
  return nullptr;
}

TEST(ConnectTest, ManyConcurrentRefusedConnectsAllFail) {
  const int64_t baseline = Socket::live_count();
  const EndPoint ep = EndPoint::loopback(ClosedPort());
  const int n = 64;
  std::vector<RefusedArg> args(n);
  std::vector<bthread_t> tids(n);
  for (int i = 0; i < n; ++i) {
    args[i].ep = ep;
    args[i].with_id = (i % 2) == 0;
    ASSERT_EQ(0, bthread_start_background(&tids[i], nullptr, RefusedWriter, &args[i]));
  }
  {
    Watchdog wd("joining the refused writers", kLong * 2);
    for (int i = 0; i < n; ++i) ASSERT_EQ(0, bthread_join(tids[i], nullptr));
  }
  for (int i = 0; i < n; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(ECONNREFUSED, args[i].socket_code);
    if (args[i].with_id) {
      EXPECT_EQ(ECONNREFUSED, args[i].code);
    } else if (!args[i].sync_ok) {
      EXPECT_EQ(ECONNREFUSED, args[i].code);
    }
  }
  EXPECT_TRUE(LiveCountBackTo(baseline)) << Socket::live_count() << " vs " << baseline;
}

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
    why_not_ = "64 connects to a listen(fd, 0) socket that never accepts all completed: this "
               "kernel does not drop SYNs to a full accept queue, so no connect can hang";
  }

  int fd_ = -1;
  EndPoint ep_;
  std::vector<int> queued_;
  bool full_ = false;
  std::string why_not_;
};

// Connects a fresh client to `ep` by writing to it; returns the error the
// write's id heard (0: none within the limit) and the time it took.
struct ConnectOutcome {
  int code = 0;
  int socket_code = 0;
  int64_t elapsed_ms = 0;
};

ConnectOutcome ConnectAndWait(const EndPoint& ep, int timeout_ms) {
  ConnectOutcome out;
  const SocketId id = NewClient(ep, timeout_ms);
  SocketUniquePtr s;
  if (Socket::Address(id, &s) != 0) {
    ADD_FAILURE() << "a new socket does not address";
    return out;
  }
  IdWatch* const w = IdWatch::New(true);
  IOBuf data = Buf("ping");
  Socket::WriteOptions wo;
  wo.id_wait = w->id;
  const int64_t t0 = now_ms();
  EXPECT_EQ(0, s->Write(&data, &wo));
  if (w->WaitCalls(1, kLong)) {
    out.elapsed_ms = now_ms() - t0;
    out.code = w->first_code.load();
    delete w;
  } else {
    out.elapsed_ms = now_ms() - t0;
    ADD_FAILURE() << "no connect error within " << kLong.count() << " ms";
  }
  if (s->Failed()) out.socket_code = s->non_zero_error_code();
  return out;
}

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

// ---------------------------------------------------------------------------
// 3. Writes queued while connecting.

constexpr int kHeader = 16;  // "<ww:iiiiii:cccc>"

void FormatRecord(int writer, int index, size_t size, std::string* out) {
  char head[64];
  snprintf(head, sizeof(head), "<%02d:%06d:%04d>", writer % 100, index % 1000000,
           (writer * 7919 + index * 31) % 10000);
  out->assign(head, kHeader);
  for (size_t k = kHeader; k < size; ++k) {
    out->push_back(static_cast<char>('a' + (writer + index + k) % 26));
  }
}

struct QueuedWriterArg {
  SocketId id = weft::INVALID_SOCKET_ID;
  int writer = 0;
  int records = 0;
  size_t record_size = 0;
  bthread_id_t errors{0};
  const std::atomic<bool>* go = nullptr;
  std::atomic<int>* unconnected_writes = nullptr;
  bool addressed = false;  // false: the socket had failed already
  int write_failures = 0;
};

void* QueuedWriter(void* a) {
  QueuedWriterArg* const arg = static_cast<QueuedWriterArg*>(a);
  SocketUniquePtr s;
  if (Socket::Address(arg->id, &s) != 0) return nullptr;
  arg->addressed = true;
  const int64_t give_up = now_ms() + kLong.count();
  while (!arg->go->load(std::memory_order_acquire) && now_ms() < give_up) bthread_usleep(50);
  std::string rec;
  for (int i = 0; i < arg->records; ++i) {
    FormatRecord(arg->writer, i, arg->record_size, &rec);
    IOBuf data;
    data.append(rec);
    Socket::WriteOptions wo;
    wo.id_wait = arg->errors;
    if (s->fd() < 0) arg->unconnected_writes->fetch_add(1, std::memory_order_relaxed);
    if (s->Write(&data, &wo) != 0) ++arg->write_failures;
  }
  return nullptr;
}

// Checks the byte stream: whole records, each writer's in order, each once.
void CheckRecords(const std::string& got, int writers, int records, size_t record_size) {
  ASSERT_EQ(static_cast<size_t>(writers) * records * record_size, got.size());
  std::vector<int> next(writers, 0);
  std::string want;
  for (size_t off = 0; off < got.size(); off += record_size) {
    int w = -1;
    int i = -1;
    if (sscanf(got.c_str() + off, "<%2d:%6d:", &w, &i) != 2 || w < 0 || w >= writers) {
      FAIL() << "garbage at offset " << off << ": " << got.substr(off, kHeader);
    }
    ASSERT_EQ(next[w], i) << "writer " << w << " out of order or duplicated at offset " << off;
    FormatRecord(w, i, record_size, &want);
    ASSERT_EQ(0, got.compare(off, record_size, want)) << "record corrupted at offset " << off;
    ++next[w];
  }
  for (int w = 0; w < writers; ++w) EXPECT_EQ(records, next[w]) << "writer " << w;
}

void RunQueuedWrites(int writers, int records, size_t record_size) {
  const int64_t baseline = Socket::live_count();
  OneShotServer server;
  ASSERT_EQ(0, server.error()) << strerror(server.error());
  const size_t total = static_cast<size_t>(writers) * records * record_size;
  server.Start(total);

  const SocketId id = NewClient(EndPoint::loopback(server.port()), 5000);
  IdWatch* const errors = IdWatch::New(false);
  std::atomic<bool> go{false};
  std::atomic<int> unconnected{0};
  std::vector<QueuedWriterArg> args(writers);
  std::vector<bthread_t> tids(writers);
  for (int w = 0; w < writers; ++w) {
    args[w].id = id;
    args[w].writer = w;
    args[w].records = records;
    args[w].record_size = record_size;
    args[w].errors = errors->id;
    args[w].go = &go;
    args[w].unconnected_writes = &unconnected;
    ASSERT_EQ(0, bthread_start_background(&tids[w], nullptr, QueuedWriter, &args[w]));
  }
  go.store(true, std::memory_order_release);
  {
    Watchdog wd("joining the writers", kLong * 2);
    for (int w = 0; w < writers; ++w) ASSERT_EQ(0, bthread_join(tids[w], nullptr));
  }
  server.Join();
  EXPECT_TRUE(server.accepted());
  EXPECT_FALSE(server.AnotherConnectionPending()) << "the socket connected more than once";
  for (int w = 0; w < writers; ++w) {
    EXPECT_TRUE(args[w].addressed) << "writer " << w;
    EXPECT_EQ(0, args[w].write_failures) << "writer " << w;
  }
  EXPECT_GE(unconnected.load(), 1);
  ::testing::Test::RecordProperty("writes_issued_before_connected", unconnected.load());

  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(id, &s)) << "the socket failed";
  EXPECT_TRUE(wait_until([&] { return s->unwritten_bytes() == 0; }, kLong));
  EXPECT_EQ(static_cast<int64_t>(total), s->out_bytes());
  EXPECT_EQ(0, errors->calls.load()) << "first error: " << errors->first_code.load();
  CheckRecords(server.received(), writers, records, record_size);
  s->SetFailed();
  s.reset();
  errors->Close();
  delete errors;
  EXPECT_TRUE(LiveCountBackTo(baseline));
}

TEST(ConnectTest, WritesQueuedWhileConnectingGoOutInOrder) {
  RunQueuedWrites(32, 100, 16);
}

// Records bigger than a socket buffer's worth in total: after connecting,
// the queued writes must also survive EAGAIN.
TEST(ConnectTest, LargeWritesQueuedWhileConnectingGoOutInOrder) {
  RunQueuedWrites(8, 40 / (weft::test::kScale > 1 ? 4 : 1), 32 * 1024);
}

// When the connect fails, every write queued behind it hears the error
// exactly once.
TEST(ConnectTest, WritesQueuedBehindARefusedConnectAllFail) {
  const int64_t baseline = Socket::live_count();
  const int writers = 32;
  const int records = 100;
  const SocketId id = NewClient(EndPoint::loopback(ClosedPort()), 5000);
  IdWatch* const errors = IdWatch::New(false);
  std::atomic<bool> go{false};
  std::atomic<int> unconnected{0};
  std::vector<QueuedWriterArg> args(writers);
  std::vector<bthread_t> tids(writers);
  for (int w = 0; w < writers; ++w) {
    args[w].id = id;
    args[w].writer = w;
    args[w].records = records;
    args[w].record_size = 16;
    args[w].errors = errors->id;
    args[w].go = &go;
    args[w].unconnected_writes = &unconnected;
    ASSERT_EQ(0, bthread_start_background(&tids[w], nullptr, QueuedWriter, &args[w]));
  }
  go.store(true, std::memory_order_release);
  {
    Watchdog wd("joining the writers", kLong * 2);
    for (int w = 0; w < writers; ++w) ASSERT_EQ(0, bthread_join(tids[w], nullptr));
  }
  int addressed = 0;
  for (int w = 0; w < writers; ++w) {
    EXPECT_EQ(0, args[w].write_failures);  // Errors go to the id.
    if (args[w].addressed) ++addressed;
  }
  // Writers that addressed the socket before it failed wrote all their
  // records; each write's error arrives exactly once.
  const int want = addressed * records;
  EXPECT_TRUE(errors->WaitCalls(want, kLong)) << errors->calls.load() << " of " << want;
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_EQ(want, errors->calls.load());
  {
    std::lock_guard<std::mutex> lock(errors->mu);
    for (const int c : errors->codes) {
      if (c != ECONNREFUSED) {
        ADD_FAILURE() << "unexpected error " << c << " " << strerror(c);
        break;
      }
    }
  }
  errors->Close();
  delete errors;
  EXPECT_TRUE(LiveCountBackTo(baseline));
}

// ---------------------------------------------------------------------------
// 4. IPv6.

// Records what the socket looks like when connected (StartConnect runs in
// the connecting fiber right after the fd is adopted).
class RecordingAppConnect : public weft::AppConnect {
 public:
  void StartConnect(Socket* s, void (*done)(int, void*), void* data) override {
    local = s->local_side();
    remote = s->remote_side();
    fd = s->fd();
    started.store(true, std::memory_order_release);
    done(0, data);
  }
  EndPoint local;
  EndPoint remote;
  int fd = -1;
  std::atomic<bool> started{false};
};

TEST(ConnectTest, ConnectsToIPv6Loopback) {
  OneShotServer server(true);
  if (server.error() != 0) {
    GTEST_SKIP() << "cannot listen on [::1]: " << strerror(server.error())
                 << " (no IPv6 loopback here)";
  }
  const int64_t baseline = Socket::live_count();
  const std::string msg = "hello over ipv6";
  server.Start(msg.size());
  auto app = std::make_shared<RecordingAppConnect>();
  SocketOptions opt;
  opt.remote_side = EndPoint::loopback6(server.port());
  opt.connect_timeout_ms = 5000;
  opt.app_connect = app;
  SocketId id;
  ASSERT_EQ(0, Socket::Create(opt, &id));
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(id, &s));
  IdWatch* const w = IdWatch::New(false);
  IOBuf data = Buf(msg);
  Socket::WriteOptions wo;
  wo.id_wait = w->id;
  ASSERT_EQ(0, s->Write(&data, &wo));
  server.Join();
  EXPECT_EQ(msg, server.received());
  EXPECT_EQ(0, w->calls.load()) << strerror(w->first_code.load());
  ASSERT_TRUE(app->started.load(std::memory_order_acquire));
  EXPECT_EQ(AF_INET6, app->local.family());
  EXPECT_EQ(app->local.to_string(), server.peer().to_string());
  EXPECT_EQ(EndPoint::loopback6(server.port()), app->remote);
  EXPECT_GE(app->fd, 0);
  EXPECT_EQ(AF_INET6, server.peer().family());
  EXPECT_TRUE(wait_until([&] { return s->unwritten_bytes() == 0; }, kLong));
  EXPECT_FALSE(s->Failed()) << s->error_text();
  s->SetFailed();
  s.reset();
  w->Close();
  delete w;
  EXPECT_TRUE(LiveCountBackTo(baseline));
}

TEST(ConnectTest, ClosedIPv6PortIsRefused) {
  const int lfd = weft::tcp_listen(EndPoint::loopback6(0), 1);
  if (lfd < 0) GTEST_SKIP() << "cannot listen on [::1]: " << strerror(errno);
  const uint16_t port = weft::get_local_side(lfd).port();
  close(lfd);
  const int64_t baseline = Socket::live_count();
  const ConnectOutcome o = ConnectAndWait(EndPoint::loopback6(port), 5000);
  EXPECT_EQ(ECONNREFUSED, o.code);
  EXPECT_EQ(ECONNREFUSED, o.socket_code);
  EXPECT_TRUE(LiveCountBackTo(baseline));
}

}  // namespace
