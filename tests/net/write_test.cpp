// Socket::Write: exactly once, in order per writer, under contention from
// fibers and pthreads; EOVERCROWDED against a peer that stops reading; every
// pending writer told through id_wait when the peer resets.
#include <gflags/gflags.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "../runtime/test_util.h"
#include "net_metrics.h"
#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/errno.h"
#include "weft/net/socket.h"

DECLARE_int32(weft_socket_send_buffer_size);
DECLARE_int64(weft_socket_max_unwritten_bytes);

namespace weft {
namespace {

using test::kScale;

// A record: "<WWW:SSSSSSSS:LLLL:" + LLLL payload bytes + ">". The payload
// letter depends on writer and seq, so a record spliced from two others or
// cut short fails to parse.
std::string make_record(int writer, int seq, int len) {
  char head[32];
  snprintf(head, sizeof(head), "<%03d:%08d:%04d:", writer, seq, len);
  std::string r(head);
  r.append(static_cast<size_t>(len), static_cast<char>('a' + (writer * 7 + seq) % 26));
  r.push_back('>');
  return r;
}

int record_len(int writer, int seq) { return 1 + (seq * 7 + writer * 13) % 200; }

// Parses a stream of records; fails the test on any malformed record and
// returns, per writer, the sequence numbers in the order they arrived.
std::map<int, std::vector<int>> parse_records(const std::string& stream) {
  std::map<int, std::vector<int>> seen;
  size_t pos = 0;
  while (pos < stream.size()) {
    int writer = -1, seq = -1, len = -1;
    // sscanf takes the header alone: given the stream it would strlen the
    // whole rest of it per record (quadratic, ~10 s for 7 MB).
    char head[20] = {};
    if (stream.size() - pos >= 19) stream.copy(head, 19, pos);
    if (stream.size() - pos < 19 || sscanf(head, "<%3d:%8d:%4d:", &writer, &seq, &len) != 3) {
      ADD_FAILURE() << "malformed record header at offset " << pos;
      return seen;
    }
    const size_t body = pos + 19;
    if (len < 0 || body + static_cast<size_t>(len) + 1 > stream.size()) {
      ADD_FAILURE() << "truncated record at offset " << pos;
      return seen;
    }
    const char letter = static_cast<char>('a' + (writer * 7 + seq) % 26);
    for (int i = 0; i < len; ++i) {
      if (stream[body + i] != letter) {
        ADD_FAILURE() << "interleaved record (writer " << writer << " seq " << seq << ")";
        return seen;
      }
    }
    if (stream[body + len] != '>') {
      ADD_FAILURE() << "record without its end at offset " << pos;
      return seen;
    }
    seen[writer].push_back(seq);
    pos = body + len + 1;
  }
  return seen;
}

int64_t counter_value(Counter& c) { return c.value(); }

struct WriterArgs {
  SocketId id;
  int writer;
  int count;
  std::atomic<int>* overcrowded_retries;
};

// Writes `count` records in order; an EOVERCROWDED write is retried (the
// same record) after a short sleep, so order is kept.
void write_records(const WriterArgs& a) {
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(a.id, &s));
  for (int seq = 0; seq < a.count; ++seq) {
    for (;;) {
      IOBuf buf;
      buf.append(make_record(a.writer, seq, record_len(a.writer, seq)));
      if (s->Write(&buf) == 0) break;
      ASSERT_EQ(EOVERCROWDED, errno) << "write failed: " << strerror(errno);
      a.overcrowded_retries->fetch_add(1);
      bthread_usleep(1000);
    }
  }
}

void* write_records_fiber(void* arg) {
  write_records(*static_cast<WriterArgs*>(arg));
  return nullptr;
}

// 64 fibers and 4 pthreads write to one socket; a pthread reads the peer,
// slowly when `slow_reader`.
void run_exactly_once(bool slow_reader) {
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  if (slow_reader) {
    // Not smaller: at <= 8 KiB this kernel rarely reports EPOLLOUT (KeepWrite
    // then advances only on its WAIT_EPOLLOUT_TIMEOUT_MS timeouts).
    const int small = 16384;
    setsockopt(server, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  }
  SocketOptions opt;
  opt.fd = client;
  SocketId id;
  ASSERT_EQ(0, Socket::Create(opt, &id));

  const int kFibers = 64, kPthreads = 4;
  const int kPerWriter = 1000 / kScale + 20;
  size_t expected_bytes = 0;
  for (int w = 0; w < kFibers + kPthreads; ++w) {
    for (int seq = 0; seq < kPerWriter; ++seq) expected_bytes += 20 + record_len(w, seq);
  }
  const int64_t keepwrite0 = counter_value(net_internal::net_metrics().nkeepwrite);
  const int64_t waitout0 = counter_value(net_internal::net_metrics().nwaitepollout);
  std::string received;
  std::thread reader([&] {
    if (slow_reader) {
      // Read nothing until a KeepWrite has found the fd full and waited for
      // EPOLLOUT: a reader that keeps up (one worker on a fast CPU) would
      // otherwise let every write through and leave that path untested. The
      // wait is bounded; if it never happens the EXPECT below says so.
      test::wait_until(
          [&] { return counter_value(net_internal::net_metrics().nwaitepollout) > waitout0; },
          std::chrono::seconds(10));
    }
    char buf[65536];
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    int reads = 0;
    while (received.size() < expected_bytes && std::chrono::steady_clock::now() < end) {
      pollfd p{server, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = read(server, buf, slow_reader ? 2048 : sizeof(buf));
      if (n <= 0) break;
      received.append(buf, static_cast<size_t>(n));
      if (slow_reader && ++reads % 16 == 0) usleep(500);
    }
  });

  std::atomic<int> retries{0};
  std::vector<WriterArgs> args;
  for (int w = 0; w < kFibers + kPthreads; ++w) args.push_back({id, w, kPerWriter, &retries});
  std::vector<bthread_t> fibers(kFibers);
  for (int w = 0; w < kFibers; ++w) {
    ASSERT_EQ(0, bthread_start_background(&fibers[w], nullptr, write_records_fiber, &args[w]));
  }
  std::vector<std::thread> threads;
  for (int w = kFibers; w < kFibers + kPthreads; ++w) {
    threads.emplace_back([&args, w] { write_records(args[w]); });
  }
  for (bthread_t t : fibers) bthread_join(t, nullptr);
  for (auto& t : threads) t.join();
  reader.join();

  ASSERT_EQ(expected_bytes, received.size());
  const auto seen = parse_records(received);
  ASSERT_EQ(static_cast<size_t>(kFibers + kPthreads), seen.size());
  for (const auto& [writer, seqs] : seen) {
    ASSERT_EQ(static_cast<size_t>(kPerWriter), seqs.size()) << "writer " << writer;
    for (int i = 0; i < kPerWriter; ++i) {
      ASSERT_EQ(i, seqs[i]) << "writer " << writer << " out of order or duplicated";
    }
  }
  if (slow_reader) {
    // The small buffers forced the background path.
    EXPECT_GT(counter_value(net_internal::net_metrics().nkeepwrite), keepwrite0);
    EXPECT_GT(counter_value(net_internal::net_metrics().nwaitepollout), waitout0);
  }
  {
    SocketUniquePtr s;
    ASSERT_EQ(0, Socket::Address(id, &s));
    EXPECT_TRUE(test::wait_until([&] { return s->unwritten_bytes() == 0; }));
    EXPECT_EQ(static_cast<int64_t>(expected_bytes), s->out_bytes());
    s->SetFailed();
  }
  close(server);
}

TEST(WriteTest, ExactlyOnceInOrderFromFibersAndPthreads) {
  const int64_t live0 = Socket::live_count();
  run_exactly_once(false);
  EXPECT_TRUE(test::wait_until([&] { return Socket::live_count() == live0; }));
}

TEST(WriteTest, ExactlyOnceInOrderWithTinySendBuffer) {
  const int64_t live0 = Socket::live_count();
  const int saved = FLAGS_weft_socket_send_buffer_size;
  FLAGS_weft_socket_send_buffer_size = 16384;
  run_exactly_once(true);
  FLAGS_weft_socket_send_buffer_size = saved;
  EXPECT_TRUE(test::wait_until([&] { return Socket::live_count() == live0; }));
}

TEST(WriteTest, OvercrowdedWhilePeerStopsReadingThenEverythingAcceptedArrives) {
  const int64_t saved_limit = FLAGS_weft_socket_max_unwritten_bytes;
  const int saved_sndbuf = FLAGS_weft_socket_send_buffer_size;
  const int64_t kLimit = 256 * 1024;
  FLAGS_weft_socket_max_unwritten_bytes = kLimit;
  FLAGS_weft_socket_send_buffer_size = 16384;
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  const int small = 16384;
  setsockopt(server, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(client, &id, &s));

  constexpr int kWriters = 8;
  constexpr int kRecordLen = 4000;
  struct Writer {
    Socket* s;
    int writer;
    std::vector<int> accepted;
    int rejected = 0;
    int64_t max_unwritten = 0;
  };
  std::vector<Writer> writers(kWriters);
  std::vector<bthread_t> tids(kWriters);
  for (int w = 0; w < kWriters; ++w) {
    writers[w].s = s.get();
    writers[w].writer = w;
    ASSERT_EQ(0, bthread_start_background(
                     &tids[w], nullptr,
                     [](void* arg) -> void* {
                       auto* me = static_cast<Writer*>(arg);
                       // Write until 20 rejections; nobody reads meanwhile.
                       for (int seq = 0; seq < 100000 && me->rejected < 20; ++seq) {
                         IOBuf buf;
                         buf.append(make_record(me->writer, seq, kRecordLen));
                         if (me->s->Write(&buf) == 0) {
                           me->accepted.push_back(seq);
                         } else {
                           EXPECT_EQ(EOVERCROWDED, errno);
                           ++me->rejected;
                           bthread_usleep(2000);
                         }
                         const int64_t u = me->s->unwritten_bytes();
                         if (u > me->max_unwritten) me->max_unwritten = u;
                       }
                       return nullptr;
                     },
                     &writers[w]));
  }
  for (bthread_t t : tids) bthread_join(t, nullptr);
  size_t expected = 0;
  for (const Writer& w : writers) {
    EXPECT_EQ(20, w.rejected) << "writer " << w.writer << " was never refused";
    // Accepting stops at the limit: at most one record per writer beyond it.
    EXPECT_LE(w.max_unwritten, kLimit + kWriters * (kRecordLen + 20));
    expected += w.accepted.size() * (kRecordLen + 20);
  }
  EXPECT_FALSE(s->Failed());
  // The peer reads again: everything accepted arrives, once, in order.
  test::set_blocking(server);
  const std::string got = test::read_until(server, expected, 30000);
  ASSERT_EQ(expected, got.size());
  const auto seen = parse_records(got);
  for (const Writer& w : writers) {
    auto it = seen.find(w.writer);
    if (w.accepted.empty()) {
      EXPECT_TRUE(it == seen.end()) << "writer " << w.writer << " had nothing accepted";
      continue;
    }
    ASSERT_TRUE(it != seen.end()) << "writer " << w.writer;
    EXPECT_EQ(w.accepted, it->second) << "writer " << w.writer;
  }
  EXPECT_TRUE(test::wait_until([&] { return s->unwritten_bytes() == 0; }));
  // No longer overcrowded.
  IOBuf more;
  more.append(make_record(99, 0, 10));
  EXPECT_EQ(0, s->Write(&more));
  EXPECT_EQ(make_record(99, 0, 10), test::read_until(server, 30, 10000));
  s->SetFailed();
  s.reset();
  close(server);
  FLAGS_weft_socket_max_unwritten_bytes = saved_limit;
  FLAGS_weft_socket_send_buffer_size = saved_sndbuf;
}

TEST(WriteTest, PeerResetTellsEveryPendingWriterThroughIdWait) {
  const int64_t live0 = Socket::live_count();
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  // Held until the checks below, so the socket cannot recycle before them.
  SocketId id;
  SocketUniquePtr held;
  ASSERT_TRUE(test::adopt_fd(client, &id, &held));

  constexpr int kWriters = 16;
  constexpr size_t kMsg = 64 * 1024;
  struct Shared {
    SocketId id;
    std::atomic<int> error_calls{0};
    std::atomic<int> bad_codes{0};
  } shared;
  shared.id = id;
  struct Writer {
    Shared* shared;
    std::vector<bthread_id_t> ids;
    int nonzero_returns = 0;
  };
  std::vector<Writer> writers(kWriters);
  std::vector<bthread_t> tids(kWriters);
  for (int w = 0; w < kWriters; ++w) {
    writers[w].shared = &shared;
    ASSERT_EQ(0, bthread_start_background(
                     &tids[w], nullptr,
                     [](void* arg) -> void* {
                       auto* me = static_cast<Writer*>(arg);
                       SocketUniquePtr s;
                       if (Socket::Address(me->shared->id, &s) != 0) return nullptr;
                       const std::string payload(kMsg, 'x');
                       for (int i = 0; i < 30 && !s->Failed(); ++i) {
                         bthread_id_t wid;
                         auto on_error = [](bthread_id_t eid, void* data, int code) -> int {
                           auto* sh = static_cast<Shared*>(data);
                           sh->error_calls.fetch_add(1);
                           if (code != ECONNRESET && code != EPIPE) sh->bad_codes.fetch_add(1);
                           return bthread_id_unlock_and_destroy(eid);
                         };
                         if (bthread_id_create(&wid, me->shared, on_error) != 0) break;
                         me->ids.push_back(wid);
                         IOBuf buf;
                         buf.append(payload);
                         Socket::WriteOptions wopt;
                         wopt.id_wait = wid;
                         wopt.ignore_eovercrowded = true;
                         if (s->Write(&buf, &wopt) != 0) ++me->nonzero_returns;
                         bthread_usleep(200);
                       }
                       return nullptr;
                     },
                     &writers[w]));
  }
  // Let some data through, then reset the connection.
  const std::string first = test::read_until(server, 1 << 20, 10000);
  EXPECT_GE(first.size(), 1u << 20);
  linger lg{1, 0};
  ASSERT_EQ(0, setsockopt(server, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
  close(server);
  for (bthread_t t : tids) bthread_join(t, nullptr);

  int64_t out_bytes = 0;
  {
    SocketUniquePtr s = std::move(held);
    // KeepWrite notices the reset (EPOLLERR, or its next writev).
    EXPECT_TRUE(test::wait_until([&] { return s->Failed(); })) << "the reset must fail the socket";
    EXPECT_TRUE(s->non_zero_error_code() == ECONNRESET || s->non_zero_error_code() == EPIPE)
        << s->non_zero_error_code();
    EXPECT_TRUE(test::wait_until([&] { return s->unwritten_bytes() == 0; }));
    out_bytes = s->out_bytes();
  }
  // Every write either failed through its id or went out in full.
  int total = 0, succeeded = 0;
  for (Writer& w : writers) {
    EXPECT_EQ(0, w.nonzero_returns);
    for (bthread_id_t wid : w.ids) {
      ++total;
      void* data = nullptr;
      if (bthread_id_lock(wid, &data) == 0) {
        ++succeeded;
        bthread_id_unlock_and_destroy(wid);
      }
    }
  }
  EXPECT_EQ(total, succeeded + shared.error_calls.load());
  EXPECT_GT(shared.error_calls.load(), 0) << "no write was pending at the reset";
  EXPECT_EQ(0, shared.bad_codes.load());
  EXPECT_LE(static_cast<int64_t>(succeeded) * static_cast<int64_t>(kMsg), out_bytes);
  // The socket recycles once the last reference goes.
  EXPECT_TRUE(test::wait_until([&] { return Socket::live_count() == live0; }));
  SocketUniquePtr gone;
  EXPECT_EQ(-1, Socket::AddressFailedAsWell(id, &gone));
}

// Issue 9, section 2: a request written in full is still waiting for its
// reply; when the connection dies its caller must hear it (not wait for its
// own timeout, or forever).
TEST(WriteTest, WrittenRequestsHearThatTheirConnectionDied) {
  test::Watchdog dog("written ids", test::kLong);
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  SocketOptions opt;
  opt.fd = client;
  // Reads, so the reset is noticed with nothing left to write.
  opt.on_edge_triggered_events = test::EchoOnMessages;
  SocketId id;
  ASSERT_EQ(0, Socket::Create(opt, &id));
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(id, &s));
  constexpr int kRequests = 100;
  test::IdErrorRecorder rec;
  size_t total = 0;
  for (int i = 0; i < kRequests; ++i) {
    IOBuf buf;
    buf.append("request " + std::to_string(i) + ";");
    total += buf.size();
    Socket::WriteOptions wopt;
    wopt.id_wait = rec.make();
    ASSERT_NE(0u, wopt.id_wait.value);
    ASSERT_EQ(0, s->Write(&buf, &wopt));
  }
  // All written and received: no request is queued any more.
  EXPECT_EQ(total, test::read_until(server, total, 10000 * test::kTimeScale).size());
  ASSERT_TRUE(test::wait_until([&] { return s->unwritten_bytes() == 0; }));
  EXPECT_EQ(0, rec.errors());
  linger lg{1, 0};
  ASSERT_EQ(0, setsockopt(server, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
  const int64_t t0 = test::now_ms();
  close(server);  // a reset
  const bool all = test::wait_until([&] { return rec.errors() == kRequests; },
                                    std::chrono::milliseconds(2000 * test::kTimeScale));
  printf("%d of %d written requests heard the reset after %lld ms\n", rec.errors(), kRequests,
         static_cast<long long>(test::now_ms() - t0));
  EXPECT_TRUE(all);
  ASSERT_TRUE(s->Failed());
  EXPECT_EQ(kRequests, rec.errors_with(s->non_zero_error_code()));
  EXPECT_EQ(ECONNRESET, s->non_zero_error_code());
}

// The RPC layer drops an id when its reply arrives: that id is not told of
// a later failure; the others are.
TEST(WriteTest, ForgottenWrittenIdsAreNotErrored) {
  int client = -1, server = -1;
  ASSERT_TRUE(test::make_tcp_pair(&client, &server));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(client, &id, &s));
  test::IdErrorRecorder rec;
  std::vector<bthread_id_t> ids;
  for (int i = 0; i < 10; ++i) {
    IOBuf buf;
    buf.append("r");
    Socket::WriteOptions wopt;
    wopt.id_wait = rec.make();
    ids.push_back(wopt.id_wait);
    ASSERT_EQ(0, s->Write(&buf, &wopt));
  }
  ASSERT_TRUE(test::wait_until([&] { return s->unwritten_bytes() == 0; }));
  EXPECT_EQ(10u, s->written_id_count());
  for (int i = 0; i < 4; ++i) s->ForgetWrittenId(ids[i]);
  EXPECT_EQ(6u, s->written_id_count());
  ASSERT_EQ(0, s->SetFailed(ECONNABORTED, "test"));
  EXPECT_EQ(6, rec.errors_with(ECONNABORTED));
  EXPECT_EQ(0u, s->written_id_count());
  // The forgotten ones are still alive (nobody destroyed them): clean up.
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(0, bthread_id_lock(ids[i], nullptr));
    bthread_id_unlock_and_destroy(ids[i]);
  }
  close(server);
}

}  // namespace
}  // namespace weft
