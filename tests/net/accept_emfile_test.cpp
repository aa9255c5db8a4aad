// weft::Acceptor when accept() fails with EMFILE: the accepting fiber must
// neither spin (the listener stays readable while connections wait in the
// backlog) nor give up the listener; once fds are available again the
// waiting connections are accepted. Its own binary because it lowers the
// process's RLIMIT_NOFILE.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <weft/bthread.h>
#include <weft/errno.h>
#include <weft/net/acceptor.h>
#include <weft/net/endpoint.h>
#include <weft/net/iobuf.h>
#include <weft/net/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../runtime/test_util.h"
#include "net_test_util.h"

namespace {

using std::chrono::milliseconds;
using weft::Acceptor;
using weft::EndPoint;
using weft::IOBuf;
using weft::Socket;
using weft::SocketUniquePtr;
using weft::test::wait_until;
using weft::test::kLong;
using weft::test::kTimeScale;
using weft::test::now_ms;
using weft::test::Watchdog;
using weft::test::EchoOnMessages;




bool Echo(int fd, const std::string& msg) {
  if (send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size())) {
    return false;
  }
  std::string got;
  char buf[256];
  while (got.size() < msg.size()) {
    const ssize_t r = recv(fd, buf, sizeof(buf), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    got.append(buf, static_cast<size_t>(r));
  }
  return got == msg;
}

// A blocking, unconnected client socket with 10 s timeouts.
int NewClientSocket() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{10 * kTimeScale, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

int HighestOpenFd() {
  int highest = -1;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  const int self = dirfd(d);
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const int fd = atoi(e->d_name);
    if (fd != self && fd > highest) highest = fd;
  }
  closedir(d);
  return highest;
}

double CpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Runs the process out of fds: the soft RLIMIT_NOFILE at the highest open
// fd + 1 and every free fd below it taken. Undone by End or the destructor.
class FdShortage {
 public:
  ~FdShortage() { End(); }
  bool Begin() {
    if (getrlimit(RLIMIT_NOFILE, &saved_) != 0) return Fail("getrlimit");
    const int highest = HighestOpenFd();
    if (highest <= 0) return Fail("no /proc/self/fd");
    rlimit low = saved_;
    low.rlim_cur = static_cast<rlim_t>(highest + 1);
    if (setrlimit(RLIMIT_NOFILE, &low) != 0) return Fail("setrlimit");
    active_ = true;
    for (int i = 0; i < 100000; ++i) {
      const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        if (errno != EMFILE) return Fail("filling the fd table");
        break;
      }
      fillers_.push_back(fd);
    }
    const int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int err = errno;
    if (probe >= 0) {
      close(probe);
      return Fail("fds are still available");
    }
    if (err != EMFILE) return Fail("socket() failed, but not with EMFILE");
    return true;
  }
  bool End() {
    if (!active_) return true;
    for (const int fd : fillers_) close(fd);
    fillers_.clear();
    active_ = false;
    return setrlimit(RLIMIT_NOFILE, &saved_) == 0;
  }
  const std::string& why_not() const { return why_not_; }

 private:
  bool Fail(const char* what) {
    why_not_ = std::string(what) + ": " + strerror(errno);
    return false;
  }
  rlimit saved_{};
  bool active_ = false;
  std::vector<int> fillers_;
  std::string why_not_;
};

// Starts `a` on a fresh loopback listener (*ep: its address) and warms it
// up: one full round trip, so whatever the runtime and the net layer open
// lazily (dispatchers, timer, fd waiters) exists before fds run out; then
// lets the dispatcher go idle: its first park (bthread_fd_wait) creates the
// runtime's fd poller, which needs an fd. Running out of fds before that is
// a different failure, covered by FirstIdleParkWhileOutOfFds.
void StartWarmedUp(Acceptor* a, EndPoint* ep) {
  const int lfd = weft::tcp_listen(EndPoint::loopback(0), 128);
  ASSERT_GE(lfd, 0) << strerror(errno);
  *ep = EndPoint::loopback(weft::get_local_side(lfd).port());
  ASSERT_EQ(0, a->StartAccept(lfd, 0));
  const int fd = NewClientSocket();
  ASSERT_GE(fd, 0);
  ASSERT_EQ(0, connect(fd, ep->addr(), ep->addr_len()));
  EXPECT_TRUE(Echo(fd, "warm-up"));
  close(fd);
  ASSERT_TRUE(wait_until([&] { return a->ConnectionCount() == 0; }, kLong));
  std::this_thread::sleep_for(milliseconds(200));
}

// n client sockets, made before the fds run out and connected after.
void MakeClients(int n, std::vector<int>* clients) {
  for (int i = 0; i < n; ++i) {
    const int fd = NewClientSocket();
    ASSERT_GE(fd, 0);
    clients->push_back(fd);
  }
}

TEST(AcceptEmfileTest, OutOfFdsNeitherSpinsNorLosesTheListener) {
  const int64_t baseline = Socket::live_count();
  Acceptor a(EchoOnMessages);
  EndPoint ep;
  ASSERT_NO_FATAL_FAILURE(StartWarmedUp(&a, &ep));
  const int kClients = 20;
  std::vector<int> clients;
  ASSERT_NO_FATAL_FAILURE(MakeClients(kClients, &clients));

  // No fd left for accept().
  FdShortage shortage;
  ASSERT_TRUE(shortage.Begin()) << shortage.why_not();

  // connect() needs no new fd: the handshakes complete into the backlog and
  // the listener becomes readable; accept() fails with EMFILE.
  for (const int fd : clients) ASSERT_EQ(0, connect(fd, ep.addr(), ep.addr_len())) << strerror(errno);

  std::this_thread::sleep_for(milliseconds(50));  // Let the first accepts fail.
  const double cpu0 = CpuSeconds();
  const auto wall0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(milliseconds(500));
  const double cpu = CpuSeconds() - cpu0;
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  ::testing::Test::RecordProperty("cpu_percent_while_out_of_fds", static_cast<int>(100 * cpu / wall));
  EXPECT_LT(cpu, 0.25 * wall) << "the accepting fiber spins: " << cpu << " s CPU in " << wall
                              << " s";
  EXPECT_EQ(0u, a.ConnectionCount());
  {
    SocketUniquePtr listener;
    EXPECT_EQ(0, Socket::Address(a.listening_id(), &listener)) << "the listener failed";
  }

  // Fds again: the waiting connections are accepted without a new event.
  ASSERT_TRUE(shortage.End());
  ASSERT_TRUE(wait_until([&] { return a.ConnectionCount() == kClients; }, milliseconds(5000 * kTimeScale)))
      << a.ConnectionCount() << " of " << kClients << " accepted";
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(Echo(clients[i], "after-emfile-" + std::to_string(i))) << "client " << i;
  }
  // And the listener still takes new connections.
  {
    const int fd = NewClientSocket();
    ASSERT_GE(fd, 0);
    ASSERT_EQ(0, connect(fd, ep.addr(), ep.addr_len()));
    EXPECT_TRUE(Echo(fd, "new"));
    close(fd);
  }
  for (const int fd : clients) close(fd);
  {
    Watchdog wd("Acceptor::StopAccept", kLong);
    a.StopAccept();
  }
  EXPECT_EQ(0u, a.ConnectionCount());
  EXPECT_EQ(baseline, Socket::live_count());
}

// StopAccept while the accepting fiber backs off from EMFILE: it returns
// promptly, the listener and everything else recycle, and the connections
// waiting in the backlog end (reset) instead of hanging.
TEST(AcceptEmfileTest, StopAcceptWhileOutOfFds) {
  const int64_t baseline = Socket::live_count();
  Acceptor a(EchoOnMessages);
  EndPoint ep;
  ASSERT_NO_FATAL_FAILURE(StartWarmedUp(&a, &ep));
  std::vector<int> clients;
  ASSERT_NO_FATAL_FAILURE(MakeClients(5, &clients));
  FdShortage shortage;
  ASSERT_TRUE(shortage.Begin()) << shortage.why_not();
  for (const int fd : clients) ASSERT_EQ(0, connect(fd, ep.addr(), ep.addr_len())) << strerror(errno);
  std::this_thread::sleep_for(milliseconds(150));  // The fiber is backing off now.
  const auto t0 = std::chrono::steady_clock::now();
  {
    Watchdog wd("Acceptor::StopAccept while out of fds", kLong);
    a.StopAccept();
  }
  const auto took = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t0);
  EXPECT_LT(took.count(), 1000 * kTimeScale) << "StopAccept waited for the backoff too long";
  EXPECT_EQ(0u, a.ConnectionCount());
  EXPECT_EQ(baseline, Socket::live_count());
  ASSERT_TRUE(shortage.End());
  for (const int fd : clients) {
    char c;
    const ssize_t r = recv(fd, &c, 1, 0);
    EXPECT_TRUE(r == 0 || (r < 0 && errno == ECONNRESET)) << r << " " << strerror(errno);
    close(fd);
  }
}

// The same shortage at a worse moment: the process runs out of fds before
// the event dispatcher first goes idle (a server hit by a connection storm
// at start-up). Its first bthread_fd_wait then happens with no fd free; once
// fds are back the server must work, and nothing may spin meanwhile.
//
// Runs in a death-test child, a fresh process, so that it really is the
// first park. Every worker is held by a spinning fiber while the acceptor
// starts and the fds run out, so the dispatcher fiber cannot run (and park)
// before that.
struct Spinner {
  std::atomic<int>* running;
  std::atomic<bool>* release;
};

void* Spin(void* arg) {
  Spinner* const sp = static_cast<Spinner*>(arg);
  sp->running->fetch_add(1);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!sp->release->load() && std::chrono::steady_clock::now() < give_up) {
  }
  return nullptr;
}

[[noreturn]] void Fail(const std::string& why) {
  fprintf(stderr, "FAILED: %s\n", why.c_str());
  fflush(stderr);
  _exit(1);
}

[[noreturn]] void FirstIdleParkWhileOutOfFds() {
  const int workers = bthread_getconcurrency();
  std::atomic<int> running{0};
  std::atomic<bool> release{false};
  Spinner sp{&running, &release};
  for (int i = 0; i < workers; ++i) {
    bthread_t tid;
    if (bthread_start_background(&tid, nullptr, Spin, &sp) != 0) Fail("bthread_start_background");
  }
  if (!wait_until([&] { return running.load() == workers; }, std::chrono::seconds(10))) {
    Fail("the spinning fibers did not occupy every worker");
  }
  // Leaked on purpose: the child ends with _exit, whatever happens.
  Acceptor* const a = new Acceptor(EchoOnMessages);
  const int lfd = weft::tcp_listen(EndPoint::loopback(0), 128);
  if (lfd < 0) Fail(std::string("tcp_listen: ") + strerror(errno));
  const EndPoint ep = EndPoint::loopback(weft::get_local_side(lfd).port());
  if (a->StartAccept(lfd, 0) != 0) Fail(std::string("StartAccept: ") + strerror(errno));
  const int client = NewClientSocket();  // Made now, connected later.
  if (client < 0) Fail("socket");
  const timeval five_s{5, 0};
  setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &five_s, sizeof(five_s));

  FdShortage shortage;
  if (!shortage.Begin()) Fail(shortage.why_not());

  // The dispatcher runs now and, with nothing to do, parks.
  release.store(true);
  std::this_thread::sleep_for(milliseconds(300));

  if (!shortage.End()) Fail("restoring the limit");
  std::this_thread::sleep_for(milliseconds(100));
  const double cpu0 = CpuSeconds();
  const auto wall0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(milliseconds(500));
  const double cpu = CpuSeconds() - cpu0;
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  std::string problems;
  if (cpu > 0.25 * wall) {
    problems += "idle process burns CPU after the fd shortage: " + std::to_string(cpu) +
                " s in " + std::to_string(wall) + " s; ";
  }
  if (connect(client, ep.addr(), ep.addr_len()) != 0) {
    problems += std::string("connect: ") + strerror(errno) + "; ";
  } else if (!Echo(client, "after the shortage")) {
    problems += "no echo after the fd shortage (" + std::to_string(a->ConnectionCount()) +
                " connections accepted); ";
  }
  if (!problems.empty()) Fail(problems);
  _exit(0);
}

TEST(AcceptEmfileDeathTest, FirstIdleParkWhileOutOfFds) {
  EXPECT_EXIT(FirstIdleParkWhileOutOfFds(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
