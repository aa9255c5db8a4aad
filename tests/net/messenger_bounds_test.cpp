// InputMessenger against hostile peers: every bound of net.md's "a hostile
// peer closes only its own connection and never grows memory without bound"
// has a test here. In each, the hostile connection is closed (or paused)
// with its reason recorded on the socket, the process's RSS stays bounded
// and a second, well-behaved connection is answered before and after.
//
// Registered with --weft_socket_max_unwritten_bytes=1048576 (see
// tests/CMakeLists.txt) so a peer that never reads overcrowds its
// connection quickly. The messenger's own flags are read as relaxed atomics,
// so tests lower them with __atomic_store_n before starting the acceptor.
#include <arpa/inet.h>
#include <errno.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "../runtime/test_util.h"
#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/net/acceptor.h"
#include "weft/net/input_messenger.h"

DECLARE_int64(weft_max_body_size);
DECLARE_int64(weft_max_read_buffer_bytes);
DECLARE_int32(weft_read_timeout_ms);
DECLARE_int32(weft_max_messages_in_flight_per_connection);

namespace weft {
namespace {

using test::kTimeScale;

// Process RSS in bytes (/proc/self/statm).
int64_t rss_bytes() {
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long size = 0;
  long resident = 0;
  const int n = fscanf(f, "%ld %ld", &size, &resident);
  fclose(f);
  return n == 2 ? static_cast<int64_t>(resident) * sysconf(_SC_PAGESIZE) : -1;
}

// RSS growth since rss0 stays under limit. Not checked under sanitizers:
// their shadow memory and per-fiber state dwarf what the test bounds.
void ExpectRssGrewLessThan(int64_t rss0, int64_t limit) {
#if defined(WEFT_TSAN) || defined(WEFT_ASAN)
  (void)rss0;
  (void)limit;
#else
  EXPECT_LT(rss_bytes() - rss0, limit);
#endif
}

// ---- a lazy framed protocol: 'L' + 4-byte big-endian length + payload ----
// It checks no size: whatever it claims, the messenger must bound it.

struct FrameMessage : public InputMessageBase {
  std::string payload;
};

std::string frame(const std::string& payload) {
  std::string out("L");
  const uint32_t n = htonl(static_cast<uint32_t>(payload.size()));
  out.append(reinterpret_cast<const char*>(&n), 4);
  return out + payload;
}

std::string frame_header(uint32_t claimed) {
  std::string out("L");
  const uint32_t n = htonl(claimed);
  out.append(reinterpret_cast<const char*>(&n), 4);
  return out;
}

ParseResult parse_lazy_frame(IOBuf* source, Socket*, bool, const void*) {
  if (source->size() < 1) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  if (source->byte_at(0) != 'L') return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
  if (source->size() < 5) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  char head[5];
  source->copy_to(head, 5);
  uint32_t n;
  memcpy(&n, head + 1, 4);
  n = ntohl(n);
  if (source->size() < 5 + static_cast<size_t>(n)) {
    return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  }
  auto* msg = new FrameMessage;
  source->pop_front(5);
  source->cutn(&msg->payload, n);
  return ParseResult::Ok(msg);
}

struct Stats {
  std::atomic<int> processed{0};
  std::atomic<int> concurrent{0};
  std::atomic<int> max_concurrent{0};
  std::atomic<int> overcrowded{0};
  // Microseconds each process sleeps (0: none).
  std::atomic<int> sleep_us{0};
  // Bytes of each reply (0: "ok:" + payload, framed).
  std::atomic<int> reply_bytes{0};
};
Stats g_stats;

void process_frame(InputMessageBase* base) {
  auto* msg = static_cast<FrameMessage*>(base);
  const int now = g_stats.concurrent.fetch_add(1) + 1;
  int prev = g_stats.max_concurrent.load();
  while (now > prev && !g_stats.max_concurrent.compare_exchange_weak(prev, now)) {
  }
  if (g_stats.sleep_us.load() > 0) bthread_usleep(g_stats.sleep_us.load());
  IOBuf reply;
  const int rb = g_stats.reply_bytes.load();
  if (rb > 0 && msg->payload != "ping") {
    reply.append(std::string(static_cast<size_t>(rb), 'r'));
  } else {
    reply.append(frame("ok:" + msg->payload));
  }
  if (msg->socket()->Write(&reply) != 0 && errno == EOVERCROWDED) g_stats.overcrowded.fetch_add(1);
  g_stats.concurrent.fetch_sub(1);
  g_stats.processed.fetch_add(1);
  msg->Destroy();
}

// ---- a buggy protocol: 'Z' is "parsed" without consuming it; 'E' is
// consumed, and at EOF an empty buffer "parses" without consuming ----

ParseResult parse_buggy(IOBuf* source, Socket*, bool read_eof, const void*) {
  if (source->empty()) {
    return read_eof ? ParseResult::Ok(nullptr) : ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  }
  const char c = source->byte_at(0);
  if (c == 'Z') return ParseResult::Ok(nullptr);
  if (c == 'E') {
    source->pop_front(1);
    return ParseResult::Ok(nullptr);
  }
  return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
}

void process_never(InputMessageBase* msg) { msg->Destroy(); }

class MessengerBoundsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    g_stats.processed = 0;
    g_stats.max_concurrent = 0;
    g_stats.overcrowded = 0;
    g_stats.sleep_us = 0;
    g_stats.reply_bytes = 0;
    saved_body_ = __atomic_load_n(&FLAGS_weft_max_body_size, __ATOMIC_RELAXED);
    saved_cap_ = __atomic_load_n(&FLAGS_weft_max_read_buffer_bytes, __ATOMIC_RELAXED);
    saved_timeout_ = __atomic_load_n(&FLAGS_weft_read_timeout_ms, __ATOMIC_RELAXED);
    saved_inflight_ =
        __atomic_load_n(&FLAGS_weft_max_messages_in_flight_per_connection, __ATOMIC_RELAXED);
    InputMessageHandler frames;
    frames.parse = parse_lazy_frame;
    frames.process = process_frame;
    frames.name = "lazy-frame";
    InputMessageHandler buggy;
    buggy.parse = parse_buggy;
    buggy.process = process_never;
    buggy.name = "buggy";
    ASSERT_EQ(0, acceptor_.AddHandler(frames));
    ASSERT_EQ(0, acceptor_.AddHandler(buggy));
  }
  void Start(int idle_timeout_sec = 0) {
    const int lfd = tcp_listen(EndPoint::loopback(0));
    ASSERT_GE(lfd, 0);
    ep_ = get_local_side(lfd);
    ASSERT_EQ(0, acceptor_.StartAccept(lfd, idle_timeout_sec));
  }
  void TearDown() override {
    acceptor_.StopAccept();
    __atomic_store_n(&FLAGS_weft_max_body_size, saved_body_, __ATOMIC_RELAXED);
    __atomic_store_n(&FLAGS_weft_max_read_buffer_bytes, saved_cap_, __ATOMIC_RELAXED);
    __atomic_store_n(&FLAGS_weft_read_timeout_ms, saved_timeout_, __ATOMIC_RELAXED);
    __atomic_store_n(&FLAGS_weft_max_messages_in_flight_per_connection, saved_inflight_,
                     __ATOMIC_RELAXED);
  }

  int Connect() {
    const int fd = test::connect_to(ep_);
    EXPECT_GE(fd, 0);
    return fd;
  }
  // The server's socket of the client connection `fd` (a reference: it
  // stays readable after it fails, until released).
  SocketUniquePtr ServerSide(int fd) {
    const EndPoint local = get_local_side(fd);
    SocketUniquePtr found;
    test::wait_until(
        [&] {
          std::vector<SocketId> ids;
          acceptor_.ListConnections(&ids);
          for (const SocketId id : ids) {
            SocketUniquePtr s;
            if (Socket::AddressFailedAsWell(id, &s) >= 0 && s->remote_side() == local) {
              found = std::move(s);
              return true;
            }
          }
          return false;
        },
        test::kLong);
    return found;
  }
  static bool SendAll(int fd, const std::string& bytes) { return test::send_all(fd, bytes); }
  // One request/reply on a well-behaved connection.
  static bool Ping(int fd) {
    if (!SendAll(fd, frame("ping"))) return false;
    const std::string want = frame("ok:ping");
    return test::read_until(fd, want.size(), 10000 * kTimeScale) == want;
  }
  // True once the peer closed fd (EOF or reset), within timeout_ms.
  static bool ClosedWithin(int fd, int64_t timeout_ms) {
    const int64_t deadline = test::now_ms() + timeout_ms;
    char buf[65536];
    while (test::now_ms() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0) return true;
      if (n < 0 && errno != EAGAIN && errno != EINTR) return true;
    }
    return false;
  }
  static void ExpectFailedWith(const SocketUniquePtr& s, int code, const char* text) {
    ASSERT_TRUE(s != nullptr);
    ASSERT_TRUE(test::wait_until([&] { return s->Failed(); }, test::kLong));
    EXPECT_EQ(code, s->non_zero_error_code()) << s->error_text();
    EXPECT_NE(std::string::npos, s->error_text().find(text)) << s->error_text();
  }

  Acceptor acceptor_;
  EndPoint ep_;
  int64_t saved_body_ = 0;
  int64_t saved_cap_ = 0;
  int32_t saved_timeout_ = 0;
  int32_t saved_inflight_ = 0;
};

// Streams filler after a header until the peer closes, stops reading for
// half a second (a failed socket still referenced by the test is shut down
// but not closed, so the kernel stops taking bytes without a reset) or
// `limit` bytes went.
int64_t StreamUntilClosed(int fd, int64_t limit) {
  timeval tv{0, 500 * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  const std::string chunk(64 * 1024, 'x');
  int64_t sent = 0;
  while (sent < limit) {
    const ssize_t n = send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += n;
  }
  return sent;
}

TEST_F(MessengerBoundsTest, UnparsedBytesPastMaxBodySizeCloseTheConnection) {
  test::Watchdog dog("max body size test", test::kLong);
  __atomic_store_n(&FLAGS_weft_max_body_size, 1 << 20, __ATOMIC_RELAXED);
  Start();
  const int good = Connect();
  ASSERT_TRUE(Ping(good));
  const int64_t rss0 = rss_bytes();
  const int big = Connect();
  SocketUniquePtr server_big = ServerSide(big);
  // Claims 1 GiB; the lazy parser would wait for all of it.
  ASSERT_TRUE(SendAll(big, frame_header(1u << 30)));
  const int64_t sent = StreamUntilClosed(big, 128 << 20);
  EXPECT_LT(sent, 64 << 20) << "the server kept reading past --weft_max_body_size";
  EXPECT_TRUE(ClosedWithin(big, 5000 * kTimeScale));
  ExpectFailedWith(server_big, EMSGSIZE, "weft_max_body_size");
  ExpectRssGrewLessThan(rss0, 48 << 20);
  server_big.reset();
  close(big);
  EXPECT_TRUE(Ping(good));
  close(good);
}

TEST_F(MessengerBoundsTest, ReadBuffersPastTheProcessCapCloseTheLargestHolder) {
  test::Watchdog dog("read buffer cap test", test::kLong);
  __atomic_store_n(&FLAGS_weft_max_read_buffer_bytes, 8 << 20, __ATOMIC_RELAXED);
  Start();
  const int good = Connect();
  ASSERT_TRUE(Ping(good));
  // A connection holding a small partial message: under the cap, it must
  // survive the big one and complete later.
  const int small = Connect();
  const std::string small_body(100 * 1024, 's');
  const std::string small_msg = frame(small_body);
  ASSERT_TRUE(SendAll(small, small_msg.substr(0, 50 * 1024)));
  const int64_t rss0 = rss_bytes();
  const int big = Connect();
  SocketUniquePtr server_big = ServerSide(big);
  ASSERT_TRUE(SendAll(big, frame_header(1u << 30)));
  // Stays under --weft_max_body_size (64 MiB): only the process cap applies.
  const int64_t sent = StreamUntilClosed(big, 48 << 20);
  EXPECT_LT(sent, 40 << 20) << "the server kept reading past --weft_max_read_buffer_bytes";
  EXPECT_TRUE(ClosedWithin(big, 5000 * kTimeScale));
  ExpectFailedWith(server_big, ENOMEM, "weft_max_read_buffer_bytes");
  ExpectRssGrewLessThan(rss0, 32 << 20);
  server_big.reset();
  close(big);
  ASSERT_TRUE(SendAll(small, small_msg.substr(50 * 1024)));
  const std::string want = frame("ok:" + small_body);
  EXPECT_EQ(want.size(), test::read_until(small, want.size(), 10000 * kTimeScale).size());
  EXPECT_TRUE(Ping(good));
  close(small);
  close(good);
}

TEST_F(MessengerBoundsTest, AMessageNotCompletedInTheReadTimeoutClosesTheConnection) {
  test::Watchdog dog("read timeout test", test::kLong);
  __atomic_store_n(&FLAGS_weft_read_timeout_ms, 300, __ATOMIC_RELAXED);
  Start();
  const int good = Connect();
  ASSERT_TRUE(Ping(good));
  const int slow = Connect();
  SocketUniquePtr server_slow = ServerSide(slow);
  const int64_t t0 = test::now_ms();
  ASSERT_TRUE(SendAll(slow, frame_header(100)));
  // One byte each 50 ms (the slowloris, sped up): 100 bytes would take 5 s.
  bool closed = false;
  int pings = 0;
  for (int i = 0; i < 60 && !closed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!SendAll(slow, "x")) break;
    closed = ClosedWithin(slow, 0);
    if (i % 4 == 0 && Ping(good)) ++pings;
  }
  EXPECT_TRUE(closed || ClosedWithin(slow, 5000 * kTimeScale))
      << "the slow message was never cut off";
  EXPECT_GE(test::now_ms() - t0, 300);
  ExpectFailedWith(server_slow, ETIMEDOUT, "weft_read_timeout_ms");
  EXPECT_GT(pings, 0);
  server_slow.reset();
  close(slow);
  EXPECT_TRUE(Ping(good));
  close(good);
}

TEST_F(MessengerBoundsTest, TheIdleTimerIsRefreshedByCompleteMessagesNotBytes) {
  test::Watchdog dog("idle timer test", test::kLong);
  Start(/*idle_timeout_sec=*/1);
  const int good = Connect();
  const int slow = Connect();
  SocketUniquePtr server_slow = ServerSide(slow);
  ASSERT_TRUE(SendAll(slow, frame_header(1000)));
  // The good connection completes a message every 200 ms and must stay;
  // the slow one sends a byte every 100 ms and completes nothing.
  const int64_t t0 = test::now_ms();
  bool closed = false;
  int pings = 0;
  int rounds = 0;
  while (test::now_ms() - t0 < 3000 && !closed) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!SendAll(slow, "x")) break;
    closed = ClosedWithin(slow, 0);
    if (++rounds % 2 == 0 && Ping(good)) ++pings;
  }
  EXPECT_TRUE(closed || ClosedWithin(slow, 3000 * kTimeScale))
      << "bytes without a complete message kept the connection from idling out";
  ExpectFailedWith(server_slow, ETIMEDOUT, "idle");
  EXPECT_EQ(rounds / 2, pings) << "the busy connection was not served throughout";
  server_slow.reset();
  close(slow);
  EXPECT_TRUE(Ping(good));
  close(good);
}

TEST_F(MessengerBoundsTest, MessagesInFlightPerConnectionAreCapped) {
  test::Watchdog dog("in-flight cap test", test::kLong);
  __atomic_store_n(&FLAGS_weft_max_messages_in_flight_per_connection, 64, __ATOMIC_RELAXED);
  Start();
  const int good = Connect();
  ASSERT_TRUE(Ping(good));
  // process() counts just after writing its reply: let the ping's count
  // land before resetting.
  ASSERT_TRUE(test::wait_until([] { return g_stats.processed.load() == 1; }));
  g_stats.processed = 0;
  g_stats.max_concurrent = 0;
  g_stats.sleep_us = 100;
  const int n = 100000 / test::kScale;
  const int64_t rss0 = rss_bytes();
  const int burst = Connect();
  std::string bytes;
  for (int i = 0; i < n; ++i) bytes += frame("");
  std::thread sender([&] { EXPECT_TRUE(SendAll(burst, bytes)); });
  const std::string want_one = frame("ok:");
  const std::string got =
      test::read_until(burst, want_one.size() * static_cast<size_t>(n), 30000 * kTimeScale);
  sender.join();
  EXPECT_EQ(want_one.size() * static_cast<size_t>(n), got.size());
  EXPECT_TRUE(test::wait_until([&] { return g_stats.processed.load() == n; }, test::kLong));
  EXPECT_LE(g_stats.max_concurrent.load(), 64)
      << "more messages of one connection ran at once than the cap";
  ExpectRssGrewLessThan(rss0, 64 << 20);
  g_stats.sleep_us = 0;
  EXPECT_TRUE(Ping(good));
  close(burst);
  close(good);
}

TEST_F(MessengerBoundsTest, AConnectionWhoseOutputIsOvercrowdedStopsBeingRead) {
  test::Watchdog dog("overcrowded test", test::kLong);
  Start();
  const int good = Connect();
  ASSERT_TRUE(Ping(good));
  // process() counts just after writing its reply: let the ping's count
  // land before resetting.
  ASSERT_TRUE(test::wait_until([] { return g_stats.processed.load() == 1; }));
  g_stats.processed = 0;
  g_stats.reply_bytes = 64 * 1024;
  const int64_t rss0 = rss_bytes();
  const int hog = Connect();
  // Requests of about 4 KiB, each answered with 64 KiB the peer never
  // reads; 16 MB of them, more than the kernel's buffers on both sides.
  const int n = 4000;
  const std::string req = frame(std::string(4096, 'q'));
  fcntl(hog, F_SETFL, fcntl(hog, F_GETFL) | O_NONBLOCK);
  std::string pending;
  for (int i = 0; i < n; ++i) pending += req;
  size_t off = 0;
  int64_t stuck_since = -1;
  while (off < pending.size()) {
    const ssize_t w = send(hog, pending.data() + off, pending.size() - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += static_cast<size_t>(w);
      stuck_since = -1;
      continue;
    }
    ASSERT_TRUE(w < 0 && (errno == EAGAIN || errno == EINTR)) << strerror(errno);
    if (stuck_since < 0) stuck_since = test::now_ms();
    // TCP back-pressure held for a while: the server stopped reading.
    if (test::now_ms() - stuck_since > 300) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_LT(off, pending.size()) << "the server read every request of a peer that never reads";
  EXPECT_LT(g_stats.processed.load(), n);
  // Replies that found the output overcrowded: at most the messages in
  // flight when it became so (with one worker none has written yet when the
  // reader reaches the in-flight cap) plus what one read had buffered.
  const int in_flight_cap =
      __atomic_load_n(&FLAGS_weft_max_messages_in_flight_per_connection, __ATOMIC_RELAXED);
  EXPECT_LT(g_stats.overcrowded.load(), in_flight_cap + 64)
      << "the server kept reading while the connection's output was overcrowded";
  ExpectRssGrewLessThan(rss0, 64 << 20);
  EXPECT_TRUE(Ping(good)) << "another connection must be served meanwhile";
  // Draining the output lets reading resume: every request is processed.
  std::atomic<bool> stop{false};
  std::thread drainer([&] {
    char buf[65536];
    while (!stop.load()) {
      pollfd p{hog, POLLIN, 0};
      if (poll(&p, 1, 20) > 0 && recv(hog, buf, sizeof(buf), 0) == 0) break;
    }
  });
  while (off < pending.size()) {
    const ssize_t w = send(hog, pending.data() + off, pending.size() - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += static_cast<size_t>(w);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  // Every request, plus the ping above.
  EXPECT_TRUE(test::wait_until([&] { return g_stats.processed.load() == n + 1; }, test::kLong));
  stop.store(true);
  drainer.join();
  close(hog);
  g_stats.reply_bytes = 0;
  EXPECT_TRUE(Ping(good));
  close(good);
}

TEST_F(MessengerBoundsTest, AParseThatConsumesNothingClosesTheConnection) {
  test::Watchdog dog("consumes-nothing test", test::kLong);
  Start();
  const int good = Connect();
  ASSERT_TRUE(Ping(good));
  const int bad = Connect();
  SocketUniquePtr server_bad = ServerSide(bad);
  ASSERT_TRUE(SendAll(bad, "Z"));
  EXPECT_TRUE(ClosedWithin(bad, 5000 * kTimeScale));
  ExpectFailedWith(server_bad, EPROTO, "consumed nothing");
  server_bad.reset();
  close(bad);
  EXPECT_TRUE(Ping(good));

  // The same bug at EOF, with an empty buffer.
  const int eof = Connect();
  SocketUniquePtr server_eof = ServerSide(eof);
  ASSERT_TRUE(SendAll(eof, "E"));
  ASSERT_EQ(0, shutdown(eof, SHUT_WR));
  EXPECT_TRUE(ClosedWithin(eof, 5000 * kTimeScale));
  ExpectFailedWith(server_eof, EPROTO, "consumed nothing");
  server_eof.reset();
  close(eof);
  EXPECT_TRUE(Ping(good));
  close(good);
}

}  // namespace
}  // namespace weft
