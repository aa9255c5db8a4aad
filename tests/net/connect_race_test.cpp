// A failed client socket must never connect again. Writers race the failure
// of a refused connect: one of them can win the (just released) write list
// after the socket failed, and must then fail instead of starting a new
// connect. connect(2) is interposed (this binary only) to count the calls
// made for the socket under test.
#include <dlfcn.h>
#include <errno.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft/bthread.h>
#include <weft/net/endpoint.h>
#include <weft/net/iobuf.h>
#include <weft/net/socket.h>

#include <atomic>
#include <thread>
#include <vector>

#include "../runtime/test_util.h"

namespace {
std::atomic<int> g_connects{0};
std::atomic<int> g_connects_on_failed{0};
std::atomic<weft::Socket*> g_sock{nullptr};
}  // namespace

extern "C" int connect(int fd, const struct sockaddr* addr, socklen_t len) {
  using ConnectFn = int (*)(int, const struct sockaddr*, socklen_t);
  static const ConnectFn real = reinterpret_cast<ConnectFn>(dlsym(RTLD_NEXT, "connect"));
  weft::Socket* const s = g_sock.load();
  if (s != nullptr) {
    g_connects.fetch_add(1);
    if (s->Failed()) g_connects_on_failed.fetch_add(1);
  }
  return real(fd, addr, len);
}

namespace {

TEST(ConnectRaceTest, AFailedSocketNeverConnectsAgain) {
  // A closed loopback port: every connect is refused.
  const int tmp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const weft::EndPoint any = weft::EndPoint::loopback(0);
  ASSERT_EQ(0, bind(tmp, any.addr(), any.addr_len()));
  const weft::EndPoint closed = weft::get_local_side(tmp);
  close(tmp);
  const int64_t baseline = weft::Socket::live_count();
  const int trials = 1500 / weft::test::kScale + 10;
  int reconnected = 0;
  for (int t = 0; t < trials; ++t) {
    weft::SocketOptions opt;
    opt.remote_side = closed;
    weft::SocketId id;
    ASSERT_EQ(0, weft::Socket::Create(opt, &id));
    weft::SocketUniquePtr s;
    ASSERT_EQ(0, weft::Socket::Address(id, &s));
    g_connects.store(0);
    g_sock.store(s.get());
    std::atomic<bool> go{false};
    std::vector<std::thread> writers;
    for (int i = 0; i < 3; ++i) {
      writers.emplace_back([&] {
        while (!go.load()) {
        }
        for (int k = 0; k < 100000; ++k) {
          weft::IOBuf b;
          b.append("x", 1);
          if (s->Write(&b) != 0) break;
        }
      });
    }
    go.store(true);
    for (auto& w : writers) w.join();
    ASSERT_TRUE(weft::test::wait_until([&] { return s->unwritten_bytes() == 0; }));
    if (g_connects.load() > 1) ++reconnected;
    g_sock.store(nullptr);
    EXPECT_TRUE(s->Failed());
    EXPECT_EQ(ECONNREFUSED, s->non_zero_error_code());
  }
  EXPECT_EQ(0, reconnected) << "trials in which a failed socket connected again";
  EXPECT_EQ(0, g_connects_on_failed.load());
  EXPECT_TRUE(weft::test::wait_until([&] { return weft::Socket::live_count() == baseline; }));
}

}  // namespace
