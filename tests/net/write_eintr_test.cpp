// A signal interrupting sendmsg (EINTR) is not an error of the connection:
// both the caller's write (StartWrite) and KeepWrite retry. sendmsg is
// interposed to fail with EINTR a given number of times on one fd.
#include <dlfcn.h>
#include <errno.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "../runtime/test_util.h"
#include "net_test_util.h"
#include "weft/errno.h"
#include "weft/net/socket.h"

DECLARE_int32(weft_socket_send_buffer_size);

namespace {
std::atomic<int> g_watched_fd{-1};
std::atomic<int> g_eintr_left{0};
std::atomic<int> g_eintr_raised{0};
}  // namespace

extern "C" ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
  using SendmsgFn = ssize_t (*)(int, const struct msghdr*, int);
  static const SendmsgFn real = reinterpret_cast<SendmsgFn>(dlsym(RTLD_NEXT, "sendmsg"));
  if (fd == g_watched_fd.load()) {
    int left = g_eintr_left.load();
    while (left > 0 && !g_eintr_left.compare_exchange_weak(left, left - 1)) {
    }
    if (left > 0) {
      g_eintr_raised.fetch_add(1);
      errno = EINTR;
      return -1;
    }
  }
  return real(fd, msg, flags);
}

namespace weft {
namespace {

TEST(WriteEintrTest, InterruptedWriteInTheCallerIsRetried) {
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(server, &id, &s));
  g_eintr_raised = 0;
  g_eintr_left = 3;
  g_watched_fd = s->fd();
  IOBuf data;
  data.append("hello, interrupted world");
  EXPECT_EQ(0, s->Write(&data));
  EXPECT_EQ("hello, interrupted world", test::read_until(client, 24, 10000 * test::kTimeScale));
  g_watched_fd = -1;
  EXPECT_EQ(3, g_eintr_raised.load());
  EXPECT_FALSE(s->Failed()) << s->error_text();
  close(client);
}

TEST(WriteEintrTest, InterruptedKeepWriteIsRetried) {
  const int32_t saved = FLAGS_weft_socket_send_buffer_size;
  FLAGS_weft_socket_send_buffer_size = 32 * 1024;
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(server, &id, &s));
  FLAGS_weft_socket_send_buffer_size = saved;
  constexpr size_t kBytes = 2 << 20;
  IOBuf data;
  data.append(std::string(kBytes, 'k'));
  ASSERT_EQ(0, s->Write(&data));
  ASSERT_GT(s->unwritten_bytes(), 0);  // KeepWrite owns the rest
  // KeepWrite's next writes are interrupted.
  g_eintr_raised = 0;
  g_eintr_left = 5;
  g_watched_fd = s->fd();
  const std::string got = test::read_until(client, kBytes, 20000 * test::kTimeScale);
  g_watched_fd = -1;
  EXPECT_EQ(kBytes, got.size());
  EXPECT_EQ(5, g_eintr_raised.load());
  EXPECT_FALSE(s->Failed()) << s->error_text();
  close(client);
}

}  // namespace
}  // namespace weft
