// Client sockets: a Socket created with a remote_side and no fd connects on
// its first Write. Covers connect errors (refused, timed out, the
// timeout-as-unreachable counter), writes queued while connecting, and IPv6.
// Peers are plain blocking sockets on 127.0.0.1 / ::1, never weft sockets,
// so a failure points at the client side.
#include "connect_test_util.h"
#include "net_metrics.h"

namespace {
using namespace weft_connect_test;
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

// Starts `writers` QueuedWriter fibers on socket `id`, releases them at
// once and joins them; args receives each writer's outcome.
void RunQueuedWriters(SocketId id, int writers, int records, size_t record_size,
                      bthread_id_t errors, std::atomic<int>* unconnected,
                      std::vector<QueuedWriterArg>* args) {
  std::atomic<bool> go{false};
  args->assign(writers, QueuedWriterArg());
  std::vector<bthread_t> tids(writers);
  for (int w = 0; w < writers; ++w) {
    QueuedWriterArg& a = (*args)[w];
    a.id = id;
    a.writer = w;
    a.records = records;
    a.record_size = record_size;
    a.errors = errors;
    a.go = &go;
    a.unconnected_writes = unconnected;
    ASSERT_EQ(0, bthread_start_background(&tids[w], nullptr, QueuedWriter, &a));
  }
  go.store(true, std::memory_order_release);
  Watchdog wd("joining the writers", kLong * 2);
  for (int w = 0; w < writers; ++w) ASSERT_EQ(0, bthread_join(tids[w], nullptr));
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
  std::atomic<int> unconnected{0};
  std::vector<QueuedWriterArg> args;
  ASSERT_NO_FATAL_FAILURE(
      RunQueuedWriters(id, writers, records, record_size, errors->id, &unconnected, &args));
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
  std::atomic<int> unconnected{0};
  std::vector<QueuedWriterArg> args;
  ASSERT_NO_FATAL_FAILURE(
      RunQueuedWriters(id, writers, records, 16, errors->id, &unconnected, &args));
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

// Issue 9, section 5: once an AppConnect finished, writes are plain writes:
// the caller writes once itself like on any socket instead of starting a
// KeepWrite fiber per write.
TEST(ConnectTest, WritesAfterAnAppConnectAreWrittenInTheCaller) {
  OneShotServer server;
  ASSERT_EQ(0, server.error());
  constexpr int kWrites = 100;
  const std::string first = "connect";
  server.Start(first.size() + kWrites);
  auto app = std::make_shared<RecordingAppConnect>();
  SocketOptions opt;
  opt.remote_side = EndPoint::loopback(server.port());
  opt.connect_timeout_ms = 5000;
  opt.app_connect = app;
  SocketId id;
  ASSERT_EQ(0, Socket::Create(opt, &id));
  SocketUniquePtr s;
  ASSERT_EQ(0, Socket::Address(id, &s));
  IOBuf data = Buf(first);
  ASSERT_EQ(0, s->Write(&data));
  ASSERT_TRUE(wait_until([&] { return s->unwritten_bytes() == 0; }, kLong));
  ASSERT_TRUE(app->started.load(std::memory_order_acquire));
  const int64_t keepwrites0 = weft::net_internal::net_metrics().nkeepwrite.value();
  for (int i = 0; i < kWrites; ++i) {
    IOBuf one = Buf("x");
    ASSERT_EQ(0, s->Write(&one));
    ASSERT_TRUE(wait_until([&] { return s->unwritten_bytes() == 0; }, kLong));
  }
  const int64_t keepwrites = weft::net_internal::net_metrics().nkeepwrite.value() - keepwrites0;
  printf("%lld KeepWrite fibers for %d one-byte writes\n", static_cast<long long>(keepwrites),
         kWrites);
  // One-byte writes into an empty socket never see EAGAIN.
  EXPECT_EQ(0, keepwrites);
  server.Join();
  EXPECT_EQ(first + std::string(kWrites, 'x'), server.received());
  EXPECT_FALSE(s->Failed()) << s->error_text();
  s->SetFailed();
}

}  // namespace
