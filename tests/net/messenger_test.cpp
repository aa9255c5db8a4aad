// InputMessenger: messages cut by registered protocols, run in fibers (all
// of a read but the last in new fibers), verify once per connection before
// any process, EOF fed to the parser with the connection closed only after
// the messages in flight ran, hostile input closing only its connection.
// Servers are weft Acceptors; clients are plain blocking sockets.
#include <arpa/inet.h>
#include <errno.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "../runtime/test_util.h"
#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/net/acceptor.h"
#include "weft/net/input_messenger.h"

DECLARE_int64(weft_max_body_size);

namespace weft {
namespace {

using test::kTimeScale;

// ---- a toy framed protocol: 'L' + 4-byte big-endian length + payload ----

struct FrameMessage : public InputMessageBase {
  std::string payload;
};

std::string frame(const std::string& payload) {
  std::string out("L");
  const uint32_t n = htonl(static_cast<uint32_t>(payload.size()));
  out.append(reinterpret_cast<const char*>(&n), 4);
  return out + payload;
}

ParseResult parse_frame(IOBuf* source, Socket*, bool, const void*) {
  char head[5];
  if (source->size() < 1) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  if (source->byte_at(0) != 'L') return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
  if (source->size() < 5) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  source->copy_to(head, 5);
  uint32_t n;
  memcpy(&n, head + 1, 4);
  n = ntohl(n);
  if (n > max_body_size()) return ParseResult::Error(PARSE_ERROR_TOO_BIG_DATA, "frame too big");
  if (source->size() < 5 + static_cast<size_t>(n)) {
    return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  }
  auto* msg = new FrameMessage;
  source->pop_front(5);
  source->cutn(&msg->payload, n);
  return ParseResult::Ok(msg);
}

struct ServerStats {
  std::atomic<int> processed{0};
  std::atomic<int> verified{0};
  std::atomic<int> concurrent{0};
  std::atomic<int> max_concurrent{0};
  std::atomic<int> sleep_ms{0};
};
ServerStats g_stats;

// Replies "ok:" + payload, framed; sleeps first if asked (to show
// messages of one read run in parallel fibers).
void process_frame(InputMessageBase* base) {
  auto* msg = static_cast<FrameMessage*>(base);
  const int now = g_stats.concurrent.fetch_add(1) + 1;
  int prev = g_stats.max_concurrent.load();
  while (now > prev && !g_stats.max_concurrent.compare_exchange_weak(prev, now)) {
  }
  if (g_stats.sleep_ms.load() > 0) bthread_usleep(g_stats.sleep_ms.load() * 1000);
  IOBuf reply;
  reply.append(frame("ok:" + msg->payload));
  msg->socket()->Write(&reply);
  g_stats.processed.fetch_add(1);
  g_stats.concurrent.fetch_sub(1);
  msg->Destroy();
}

bool verify_hello(const InputMessageBase* base) {
  g_stats.verified.fetch_add(1);
  return static_cast<const FrameMessage*>(base)->payload == "hello";
}

// ---- a protocol whose message ends with the connection: '!' + bytes ----

struct RawMessage : public InputMessageBase {
  std::string body;
};

ParseResult parse_raw(IOBuf* source, Socket*, bool read_eof, const void*) {
  if (!source->empty() && source->byte_at(0) != '!')
    return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
  if (!read_eof) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  if (source->empty()) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  auto* msg = new RawMessage;
  source->pop_front(1);
  source->cutn(&msg->body, source->size());
  return ParseResult::Ok(msg);
}

void process_raw(InputMessageBase* base) {
  auto* msg = static_cast<RawMessage*>(base);
  // Runs after the peer half-closed: the reply must still go out.
  bthread_usleep(50 * 1000);
  IOBuf reply;
  reply.append("got:" + msg->body);
  msg->socket()->Write(&reply);
  msg->Destroy();
}

class MessengerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    g_stats.processed = 0;
    g_stats.verified = 0;
    g_stats.max_concurrent = 0;
    g_stats.sleep_ms = 0;
    InputMessageHandler frames;
    frames.parse = parse_frame;
    frames.process = process_frame;
    frames.name = "frame";
    InputMessageHandler raw;
    raw.parse = parse_raw;
    raw.process = process_raw;
    raw.name = "raw";
    ASSERT_EQ(0, acceptor_.AddHandler(frames));
    ASSERT_EQ(0, acceptor_.AddHandler(raw));
    Start();
  }
  void Start() {
    const int lfd = tcp_listen(EndPoint::loopback(0));
    ASSERT_GE(lfd, 0);
    ep_ = get_local_side(lfd);
    ASSERT_EQ(0, acceptor_.StartAccept(lfd, 0));
  }
  void TearDown() override { acceptor_.StopAccept(); }

  int Connect() {
    const int fd = test::connect_to(ep_);
    EXPECT_GE(fd, 0);
    return fd;
  }
  static void Send(int fd, const std::string& bytes) {
    ASSERT_EQ(static_cast<ssize_t>(bytes.size()), write(fd, bytes.data(), bytes.size()));
  }
  static std::string Read(int fd, size_t n) { return test::read_until(fd, n, 10000 * kTimeScale); }

  Acceptor acceptor_;
  EndPoint ep_;
};

TEST_F(MessengerTest, EveryMessageOfAReadRunsOnceAndInParallelFibers) {
  // Long enough that a loaded VM's delays stay far under the serial time.
  g_stats.sleep_ms = 300;
  const int fd = Connect();
  std::string batch;
  for (int i = 0; i < 10; ++i) batch += frame("m" + std::to_string(i));
  const auto t0 = std::chrono::steady_clock::now();
  Send(fd, batch);  // one write: usually one read on the server
  std::string want_total;
  for (int i = 0; i < 10; ++i) want_total += frame("ok:m" + std::to_string(i));
  const std::string got = Read(fd, want_total.size());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(want_total.size(), got.size());
  // Each reply once (replies may come in any order).
  for (int i = 0; i < 10; ++i) {
    const std::string r = frame("ok:m" + std::to_string(i));
    const size_t at = got.find(r);
    EXPECT_NE(std::string::npos, at) << i;
    EXPECT_EQ(std::string::npos, got.find(r, at + 1)) << i;
  }
  // The counter moves just after each reply is written.
  EXPECT_TRUE(test::wait_until([&] { return g_stats.processed.load() == 10; }));
  // Ten 300 ms sleeps in sequence would take 3 s.
  EXPECT_GT(g_stats.max_concurrent.load(), 1);
  EXPECT_LT(secs, 2.0) << "messages of one read did not run in parallel";
  close(fd);
}

TEST_F(MessengerTest, ManyMessagesAcrossReadsAreAllProcessed) {
  const int fd = Connect();
  const int n = 2000 / test::kScale + 20;
  std::string want;
  std::thread sender([&] {
    for (int i = 0; i < n; ++i) Send(fd, frame("x" + std::to_string(i)));
  });
  for (int i = 0; i < n; ++i) want += frame("ok:x" + std::to_string(i));
  const std::string got = Read(fd, want.size());
  sender.join();
  EXPECT_EQ(want.size(), got.size());
  EXPECT_TRUE(test::wait_until([&] { return g_stats.processed.load() == n; }));
  close(fd);
}

TEST_F(MessengerTest, EofIsFedToTheParserAndTheReplyGoesOutBeforeClose) {
  const int fd = Connect();
  Send(fd, "!the whole body");
  ASSERT_EQ(0, shutdown(fd, SHUT_WR));
  EXPECT_EQ("got:the whole body", Read(fd, 18));
  // Then the server closes.
  char c;
  EXPECT_EQ(0, read(fd, &c, 1));
  close(fd);
}

TEST_F(MessengerTest, MalformedOrOversizedInputClosesOnlyThatConnection) {
  const int good = Connect();
  Send(good, frame("before"));
  EXPECT_EQ(frame("ok:before"), Read(good, frame("ok:before").size()));

  const int unknown = Connect();
  Send(unknown, "GET / HTTP/1.1\r\n\r\n");  // no protocol claims it
  char c;
  EXPECT_EQ(0, read(unknown, &c, 1)) << "unrecognised bytes must close the connection";
  close(unknown);

  const int64_t saved = FLAGS_weft_max_body_size;
  __atomic_store_n(&FLAGS_weft_max_body_size, 1024, __ATOMIC_RELAXED);
  const int big = Connect();
  std::string huge("L");
  const uint32_t len = htonl(1u << 30);  // claims 1 GiB
  huge.append(reinterpret_cast<const char*>(&len), 4);
  Send(big, huge);
  EXPECT_LE(read(big, &c, 1), 0) << "an oversized frame must close the connection";
  close(big);
  __atomic_store_n(&FLAGS_weft_max_body_size, saved, __ATOMIC_RELAXED);

  Send(good, frame("after"));
  EXPECT_EQ(frame("ok:after"), Read(good, frame("ok:after").size()));
  close(good);
}

class VerifiedMessengerTest : public MessengerTest {
 protected:
  void SetUp() override {
    g_stats.processed = 0;
    g_stats.verified = 0;
    g_stats.sleep_ms = 0;
    InputMessageHandler frames;
    frames.parse = parse_frame;
    frames.process = process_frame;
    frames.verify = verify_hello;
    frames.name = "frame+auth";
    ASSERT_EQ(0, acceptor_.AddHandler(frames));
    Start();
  }
};

TEST_F(VerifiedMessengerTest, VerifyRunsOncePerConnectionBeforeAnyProcess) {
  const int good = Connect();
  std::string batch = frame("hello");
  for (int i = 0; i < 20; ++i) batch += frame("n" + std::to_string(i));
  Send(good, batch);
  std::string want = frame("ok:hello");
  for (int i = 0; i < 20; ++i) want += frame("ok:n" + std::to_string(i));
  EXPECT_EQ(want.size(), Read(good, want.size()).size());
  EXPECT_TRUE(test::wait_until([&] { return g_stats.processed.load() == 21; }));
  EXPECT_EQ(1, g_stats.verified.load());

  const int bad = Connect();
  Send(bad, frame("let me in") + frame("n0"));
  char c;
  EXPECT_EQ(0, read(bad, &c, 1)) << "a connection failing verify must be closed";
  EXPECT_EQ(2, g_stats.verified.load());
  EXPECT_EQ(21, g_stats.processed.load()) << "nothing of the rejected connection may run";
  close(bad);
  close(good);
}

TEST(MessengerApiTest, HandlerNeedsParseAndProcess) {
  InputMessenger m;
  InputMessageHandler h;
  EXPECT_EQ(-1, m.AddHandler(h));
  EXPECT_EQ(EINVAL, errno);
  h.parse = parse_frame;
  h.process = process_frame;
  EXPECT_EQ(0, m.AddHandler(h));
  EXPECT_EQ(1u, m.handler_count());
}

}  // namespace
}  // namespace weft
