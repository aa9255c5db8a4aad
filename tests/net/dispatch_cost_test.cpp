// What the dispatcher and the read path pay per event (issue 9 section 7):
// no fcntl per accepted connection (accept4 already sets O_NONBLOCK and
// FD_CLOEXEC), and no malloc per large read that gets few bytes. fcntl is
// interposed to count the calls.
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <vector>

#include "net_test_util.h"
#include "weft/net/acceptor.h"
#include "weft/net/endpoint.h"
#include "weft/net/iobuf.h"

namespace {
std::atomic<bool> g_count_fcntl{false};
std::atomic<int> g_fcntl_calls{0};

using FcntlFn = int (*)(int, int, ...);

int forward_fcntl(const char* name, int fd, int cmd, void* arg) {
  static const FcntlFn real_fcntl = reinterpret_cast<FcntlFn>(dlsym(RTLD_NEXT, "fcntl"));
  static const FcntlFn real_fcntl64 = reinterpret_cast<FcntlFn>(dlsym(RTLD_NEXT, "fcntl64"));
  if (g_count_fcntl.load()) g_fcntl_calls.fetch_add(1);
  const FcntlFn f = (name[5] == '6' && real_fcntl64 != nullptr) ? real_fcntl64 : real_fcntl;
  return f(fd, cmd, arg);
}
}  // namespace

// Every fcntl command takes at most one argument, an int or a pointer:
// passing it on as a pointer-sized value is what glibc's own wrapper does.
extern "C" int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return forward_fcntl("fcntl", fd, cmd, arg);
}

extern "C" int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return forward_fcntl("fcntl64", fd, cmd, arg);
}

namespace weft {
namespace {

// An accepted connection comes from accept4(SOCK_NONBLOCK | SOCK_CLOEXEC):
// setting up its Socket makes no fcntl call.
TEST(DispatchCostTest, AcceptedConnectionsNeedNoFcntl) {
  test::Watchdog dog("accepting", test::kLong);
  Acceptor acceptor(test::EchoOnMessages);
  const int lfd = tcp_listen(EndPoint::loopback(0));
  ASSERT_GE(lfd, 0);
  const EndPoint ep = get_local_side(lfd);
  ASSERT_EQ(0, acceptor.StartAccept(lfd, 0));
  constexpr int kConns = 16;
  g_fcntl_calls = 0;
  g_count_fcntl = true;
  std::vector<int> fds;
  for (int i = 0; i < kConns; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(0, connect(fd, ep.addr(), ep.addr_len()));
    fds.push_back(fd);
  }
  // An echo on each proves its Socket exists (set up and in epoll).
  for (int fd : fds) {
    ASSERT_EQ(2, write(fd, "hi", 2));
    ASSERT_EQ("hi", test::read_until(fd, 2, 10000 * test::kTimeScale));
  }
  g_count_fcntl = false;
  // Counted just after its socket starts serving (the map is updated after
  // Socket::Create): an echo may come first.
  for (int i = 0; i < 10000 * test::kTimeScale && acceptor.ConnectionCount() != size_t(kConns);
       ++i) {
    usleep(1000);
  }
  EXPECT_EQ(size_t(kConns), acceptor.ConnectionCount());
  EXPECT_EQ(0, g_fcntl_calls.load()) << "fcntl calls for " << kConns << " accepted connections";
  for (int fd : fds) close(fd);
  acceptor.StopAccept();
}

// An fd whose flags are unknown (SocketOptions::fd from the user) still
// gets O_NONBLOCK and FD_CLOEXEC.
TEST(DispatchCostTest, AdoptedFdStillGetsItsFlags) {
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  ASSERT_EQ(0, fcntl(server, F_SETFD, 0));
  ASSERT_EQ(0, fcntl(server, F_SETFL, fcntl(server, F_GETFL) & ~O_NONBLOCK));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(server, &id, &s));
  EXPECT_NE(0, fcntl(s->fd(), F_GETFL) & O_NONBLOCK);
  EXPECT_NE(0, fcntl(s->fd(), F_GETFD) & FD_CLOEXEC);
  s->SetFailed();
  close(client);
}

// A large read that gets a few bytes keeps the blocks it offered to readv
// for the next read: repeated reads allocate nothing.
TEST(DispatchCostTest, LargeReadsKeepTheirSpareBlocks) {
  int fds[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
  constexpr size_t kMaxCount = 512 * 1024;
  constexpr int kReads = 50;
  auto one_read = [&] {
    IOBuf buf;
    if (write(fds[1], "0123456789abcdef", 16) != 16) return false;
    return buf.append_from_file_descriptor(fds[0], kMaxCount) == 16;
  };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(one_read());  // fills the thread's caches
  const int64_t before = IOBuf::block_allocations();
  for (int i = 0; i < kReads; ++i) ASSERT_TRUE(one_read());
  EXPECT_EQ(0, IOBuf::block_allocations() - before) << "block mallocs in " << kReads << " reads";
  close(fds[0]);
  close(fds[1]);
  IOBuf::release_thread_cache();
}

// The per-event lookups of an InputMessenger (OnNewMessages) and of a
// connect's EpollOutRequest (HandleEpollOut) use a tag, not RTTI: an
// Acceptor is found as a messenger, anything else is not.
TEST(DispatchCostTest, SocketUsersAreTaggedForTheEventPath) {
  Acceptor acceptor;
  EXPECT_EQ(SocketUser::Kind::kInputMessenger, acceptor.user_kind());
  // Static: the socket may recycle (and call BeforeRecycle) after the test.
  struct PlainUser : SocketUser {};
  static PlainUser plain;
  EXPECT_EQ(SocketUser::Kind::kOther, plain.user_kind());
  // A socket whose user is not a messenger fails on its first input.
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  SocketOptions opt;
  opt.fd = server;
  opt.user = &plain;
  opt.on_edge_triggered_events = InputMessenger::OnNewMessages;
  SocketId id;
  ASSERT_EQ(0, Socket::Create(opt, &id));
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(id, &s));
  ASSERT_EQ(1, write(client, "x", 1));
  for (int i = 0; i < 2000 && !s->Failed(); ++i) usleep(1000);
  EXPECT_TRUE(s->Failed());
  EXPECT_EQ(EINVAL, s->non_zero_error_code());
  s.reset();
  close(client);
}

}  // namespace
}  // namespace weft
