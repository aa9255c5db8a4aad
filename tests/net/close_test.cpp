// Graceful close: nothing accepted for writing is lost when a connection
// ends without an error (the peer's EOF after its last request, a stopping
// server, an idle timeout). The socket refuses new writes, lets the writer
// flush what is queued (bounded by --weft_socket_close_flush_ms) and only
// then fails. An abort (SetFailed) still drops the queue at once.
//
// The server is a weft Acceptor speaking a toy framed protocol whose request
// names the size of the reply; clients are plain blocking sockets with a
// small receive buffer, so replies stay queued on the server for a while.
#include <arpa/inet.h>
#include <errno.h>
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "../runtime/test_util.h"
#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/errno.h"
#include "weft/net/acceptor.h"
#include "weft/net/input_messenger.h"
#include "weft/net/socket.h"

DECLARE_int32(weft_socket_send_buffer_size);
DECLARE_int64(weft_socket_max_unwritten_bytes);
DECLARE_int32(weft_socket_close_flush_ms);

namespace weft {
namespace {

using test::kTimeScale;

// ---- 'L' + 4-byte big-endian length + payload; the payload of a request is
// the decimal size of the reply it wants ----

struct SizeRequest : public InputMessageBase {
  std::string payload;
};

std::string frame_header(size_t n) {
  std::string out("L");
  const uint32_t be = htonl(static_cast<uint32_t>(n));
  out.append(reinterpret_cast<const char*>(&be), 4);
  return out;
}

std::string request(size_t reply_size) {
  const std::string p = std::to_string(reply_size);
  return frame_header(p.size()) + p;
}

ParseResult parse_request(IOBuf* source, Socket*, bool, const void*) {
  if (source->size() < 1) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  if (source->byte_at(0) != 'L') return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
  if (source->size() < 5) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  char head[5];
  source->copy_to(head, 5);
  uint32_t n;
  memcpy(&n, head + 1, 4);
  n = ntohl(n);
  if (n > 64) return ParseResult::Error(PARSE_ERROR_TOO_BIG_DATA, "request too big");
  if (source->size() < 5 + static_cast<size_t>(n)) {
    return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  }
  auto* msg = new SizeRequest;
  source->pop_front(5);
  source->cutn(&msg->payload, n);
  return ParseResult::Ok(msg);
}

std::atomic<int> g_processed{0};
std::atomic<int> g_write_errors{0};

void process_request(InputMessageBase* base) {
  auto* msg = static_cast<SizeRequest*>(base);
  const size_t n = strtoull(msg->payload.c_str(), nullptr, 10);
  IOBuf reply;
  reply.append(frame_header(n));
  reply.append(std::string(n, 'r'));
  if (msg->socket()->Write(&reply) != 0) g_write_errors.fetch_add(1);
  g_processed.fetch_add(1);
  msg->Destroy();
}

// Counts the whole replies in a stream of reply frames; -1 on a malformed
// or truncated stream.
int count_replies(const std::string& stream, size_t each) {
  size_t pos = 0;
  int n = 0;
  while (pos < stream.size()) {
    if (stream.size() - pos < 5 + each || stream[pos] != 'L') return -1;
    if (stream.compare(pos, 5, frame_header(each)) != 0) return -1;
    pos += 5 + each;
    ++n;
  }
  return n;
}

class CloseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_sndbuf_ = FLAGS_weft_socket_send_buffer_size;
    saved_unwritten_ = FLAGS_weft_socket_max_unwritten_bytes;
    saved_flush_ms_ = FLAGS_weft_socket_close_flush_ms;
    // A small server send buffer keeps replies queued in KeepWrite.
    FLAGS_weft_socket_send_buffer_size = 32 * 1024;
    FLAGS_weft_socket_max_unwritten_bytes = 1LL << 30;
    // These tests are about the flush, not its bound (64 MiB take more than
    // the default 2 s under sanitizers); the bound has its own test.
    FLAGS_weft_socket_close_flush_ms = 20000 * kTimeScale;
    g_processed = 0;
    g_write_errors = 0;
    InputMessageHandler h;
    h.parse = parse_request;
    h.process = process_request;
    h.name = "size";
    ASSERT_EQ(0, acceptor_.AddHandler(h));
    const int lfd = tcp_listen(EndPoint::loopback(0));
    ASSERT_GE(lfd, 0);
    ep_ = get_local_side(lfd);
    ASSERT_EQ(0, acceptor_.StartAccept(lfd, 0));
  }
  void TearDown() override {
    acceptor_.StopAccept();
    FLAGS_weft_socket_send_buffer_size = saved_sndbuf_;
    FLAGS_weft_socket_max_unwritten_bytes = saved_unwritten_;
    FLAGS_weft_socket_close_flush_ms = saved_flush_ms_;
  }

  // A blocking client with a small receive buffer (set before connecting,
  // so the window stays small).
  int Connect() {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int rcvbuf = 32 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    EXPECT_EQ(0, connect(fd, ep_.addr(), ep_.addr_len()));
    return fd;
  }
  static void Send(int fd, const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t n = write(fd, bytes.data() + off, bytes.size() - off);
      ASSERT_GT(n, 0) << strerror(errno);
      off += static_cast<size_t>(n);
    }
  }
  // Everything until EOF (or the generous deadline).
  static std::string ReadToEof(int fd) {
    return test::read_until(fd, SIZE_MAX, 20000 * kTimeScale);
  }

  Acceptor acceptor_;
  EndPoint ep_;
  int32_t saved_sndbuf_ = 0;
  int64_t saved_unwritten_ = 0;
  int32_t saved_flush_ms_ = 0;
};

TEST_F(CloseTest, ReplyQueuedWhenThePeerHalfClosesArrivesWhole) {
  test::Watchdog dog("half-close reply", test::kLong);
  constexpr size_t kReply = 4 << 20;
  const int fd = Connect();
  Send(fd, request(kReply));
  ASSERT_EQ(0, shutdown(fd, SHUT_WR));
  // Do not read yet: the server sees EOF and its process() returns while
  // most of the reply is still queued.
  ASSERT_TRUE(test::wait_until([] { return g_processed.load() == 1; }));
  bthread_usleep(100 * 1000);
  const std::string got = ReadToEof(fd);
  EXPECT_EQ(kReply + 5, got.size());
  EXPECT_EQ(1, count_replies(got, kReply));
  close(fd);
}

TEST_F(CloseTest, PipelinedRequestsThenEofGetEveryReply) {
  test::Watchdog dog("pipelined replies", test::kLong);
  constexpr int kRequests = 1000;
  constexpr size_t kReply = 4096;
  const int fd = Connect();
  std::string all;
  for (int i = 0; i < kRequests; ++i) all += request(kReply);
  // The client's reads start before its last send: the requests (9 bytes
  // each) fit the server's receive buffer anyway, but the replies do not
  // fit the client's, so a reader keeps the server from stalling on us.
  std::string got;
  std::thread reader([&] {
    bthread_usleep(200 * 1000);
    got = ReadToEof(fd);
  });
  Send(fd, all);
  ASSERT_EQ(0, shutdown(fd, SHUT_WR));
  reader.join();
  EXPECT_EQ(kRequests * (kReply + 5), got.size());
  EXPECT_EQ(kRequests, count_replies(got, kReply));
  close(fd);
}

TEST_F(CloseTest, StopAcceptFlushesEveryQueuedReply) {
  test::Watchdog dog("stop accept flush", test::kLong);
  constexpr int kRequests = 64;
  constexpr size_t kReply = 1 << 20;
  const int fd = Connect();
  std::string all;
  for (int i = 0; i < kRequests; ++i) all += request(kReply);
  Send(fd, all);
  // Every reply accepted for writing (most still queued: we do not read).
  ASSERT_TRUE(test::wait_until([] { return g_processed.load() == kRequests; }));
  EXPECT_EQ(0, g_write_errors.load());
  std::string got;
  std::thread reader([&] { got = ReadToEof(fd); });
  // Returns once the connection recycled, i.e. after the flush.
  acceptor_.StopAccept();
  reader.join();
  EXPECT_EQ(kRequests * (kReply + 5), got.size());
  EXPECT_EQ(kRequests, count_replies(got, kReply));
  close(fd);
}

TEST_F(CloseTest, GracefulCloseOfAPeerThatNeverReadsIsBoundedByTheFlushTimeout) {
  test::Watchdog dog("bounded flush", test::kLong);
  FLAGS_weft_socket_close_flush_ms = 200;
  const int fd = Connect();
  Send(fd, request(8 << 20));
  ASSERT_EQ(0, shutdown(fd, SHUT_WR));
  ASSERT_TRUE(test::wait_until([] { return g_processed.load() == 1; }));
  // We never read: the flush gives up after ~200 ms and the connection
  // closes (recycles) instead of holding its queue forever.
  const int64_t t0 = test::now_ms();
  ASSERT_TRUE(test::wait_until([&] { return acceptor_.ConnectionCount() == 0; },
                               std::chrono::milliseconds(10000 * kTimeScale)));
  printf("connection closed %lld ms after its reply was queued\n",
         static_cast<long long>(test::now_ms() - t0));
  close(fd);
}

// Socket level: CloseGracefully refuses new writes at once, flushes what
// was accepted, then fails with the given code; SetFailed drops the queue.
TEST(GracefulCloseTest, RefusesNewWritesFlushesAcceptedOnesThenFails) {
  test::Watchdog dog("socket graceful close", test::kLong);
  const int32_t saved = FLAGS_weft_socket_send_buffer_size;
  FLAGS_weft_socket_send_buffer_size = 32 * 1024;
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(server, &id, &s));
  FLAGS_weft_socket_send_buffer_size = saved;
  // This test is about the flush, not its bound.
  const int32_t saved_flush_ms = FLAGS_weft_socket_close_flush_ms;
  FLAGS_weft_socket_close_flush_ms = 60000;
  constexpr size_t kBytes = 4 << 20;
  IOBuf data;
  data.append(std::string(kBytes, 'g'));
  ASSERT_EQ(0, s->Write(&data));
  ASSERT_GT(s->unwritten_bytes(), 0);  // queued: the client does not read
  ASSERT_EQ(0, s->CloseGracefully(ELOGOFF, "test close"));
  EXPECT_FALSE(s->Failed());  // still flushing
  IOBuf late;
  late.append("late");
  errno = 0;
  EXPECT_EQ(-1, s->Write(&late));
  EXPECT_EQ(ELOGOFF, errno);
  const int64_t t0 = test::now_ms();
  const std::string got = test::read_until(client, SIZE_MAX, 20000 * kTimeScale);
  printf("flushed %zu bytes in %lld ms\n", got.size(), static_cast<long long>(test::now_ms() - t0));
  FLAGS_weft_socket_close_flush_ms = saved_flush_ms;
  EXPECT_EQ(kBytes, got.size());
  EXPECT_TRUE(test::wait_until([&] { return s->Failed(); }));
  EXPECT_EQ(ELOGOFF, s->non_zero_error_code());
  close(client);
}

}  // namespace
// An asynchronous server: process() hands the message to a fiber that
// answers 200 ms later and only then destroys it.
void* answer_later(void* arg) {
  auto* msg = static_cast<SizeRequest*>(arg);
  bthread_usleep(200 * 1000);
  const size_t n = strtoull(msg->payload.c_str(), nullptr, 10);
  IOBuf reply;
  reply.append(frame_header(n));
  reply.append(std::string(n, 'a'));
  if (msg->socket()->Write(&reply) != 0) g_write_errors.fetch_add(1);
  g_processed.fetch_add(1);
  msg->Destroy();
  return nullptr;
}

void process_later(InputMessageBase* base) {
  bthread_t tid;
  if (bthread_start_background(&tid, nullptr, answer_later, base) != 0) base->Destroy();
}

TEST(AsyncCloseTest, ReplyOfAHandlerThatAnswersLaterArrivesAfterThePeersEof) {
  test::Watchdog dog("async reply after EOF", test::kLong);
  g_processed = 0;
  g_write_errors = 0;
  Acceptor acceptor;
  InputMessageHandler h;
  h.parse = parse_request;
  h.process = process_later;
  h.name = "size-later";
  ASSERT_EQ(0, acceptor.AddHandler(h));
  const int lfd = tcp_listen(EndPoint::loopback(0));
  ASSERT_GE(lfd, 0);
  const EndPoint ep = get_local_side(lfd);
  ASSERT_EQ(0, acceptor.StartAccept(lfd, 0));
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(0, connect(fd, ep.addr(), ep.addr_len()));
  const std::string req = request(1000);
  ASSERT_EQ(static_cast<ssize_t>(req.size()), write(fd, req.data(), req.size()));
  // EOF reaches the server while the answer is still 200 ms away.
  ASSERT_EQ(0, shutdown(fd, SHUT_WR));
  const std::string got = test::read_until(fd, SIZE_MAX, 20000 * kTimeScale);
  EXPECT_EQ(0, g_write_errors.load());
  EXPECT_EQ(1, count_replies(got, 1000)) << got.size() << " bytes arrived";
  close(fd);
  acceptor.StopAccept();
}

}  // namespace weft
