// Helpers shared by the client-socket tests (connect_test.cpp and
// connect_timeout_test.cpp).
#ifndef WEFT_TESTS_NET_CONNECT_TEST_UTIL_H_
#define WEFT_TESTS_NET_CONNECT_TEST_UTIL_H_

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
#include "net_test_util.h"

DECLARE_int32(weft_connect_timeout_as_unreachable);

namespace weft_connect_test {

using std::chrono::milliseconds;
using weft::EndPoint;
using weft::IOBuf;
using weft::Socket;
using weft::SocketId;
using weft::SocketOptions;
using weft::SocketUniquePtr;
using weft::test::wait_until;
using weft::test::kLong;
using weft::test::kTimeScale;
using weft::test::now_ms;
using weft::test::Watchdog;



// wait_until for fibers: sleeps the fiber, not its worker (bthread_usleep
// is usleep in a pthread, so it works anywhere).
inline bool FiberWaitUntil(const std::function<bool()>& cond, milliseconds limit) {
  const int64_t deadline = now_ms() + limit.count();
  while (!cond()) {
    if (now_ms() > deadline) return cond();
    bthread_usleep(200);
  }
  return true;
}


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
inline uint16_t ClosedPort() {
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
inline SocketId NewClient(const EndPoint& ep, int connect_timeout_ms) {
  SocketOptions opt;
  opt.fd = -1;
  opt.remote_side = ep;
  opt.connect_timeout_ms = connect_timeout_ms;
  SocketId id = weft::INVALID_SOCKET_ID;
  EXPECT_EQ(0, Socket::Create(opt, &id));
  return id;
}

inline IOBuf Buf(const std::string& s) {
  IOBuf b;
  b.append(s);
  return b;
}

// Waits until every socket the test made has recycled.
inline bool LiveCountBackTo(int64_t baseline) {
  return wait_until([&] { return Socket::live_count() == baseline; }, kLong);
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
      received_ = weft::test::read_until(conn_fd_, want, deadline - now_ms());
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


// Connects a fresh client to `ep` by writing to it; returns the error the
// write's id heard (0: none within the limit) and the time it took.
struct ConnectOutcome {
  int code = 0;
  int socket_code = 0;
  int64_t elapsed_ms = 0;
};

inline ConnectOutcome ConnectAndWait(const EndPoint& ep, int timeout_ms) {
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

}  // namespace weft_connect_test

#endif  // WEFT_TESTS_NET_CONNECT_TEST_UTIL_H_
