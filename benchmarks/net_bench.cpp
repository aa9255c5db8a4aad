// net_bench: messages per second through weft::Socket::Write on one loopback
// TCP connection, beside a plain blocking writev loop on an identical
// connection (the floor: one syscall per message) and a mutex-serialised
// writev from several pthreads, all in one process so ratios come from one
// run on one machine. Every connection has TCP_NODELAY, as weft's sockets
// do, except the plain loop's Nagle variant (nodelay:0).
//
//   net_bench --benchmark_min_time=0.5
//   net_bench --weft_event_dispatcher_mode=worker   (fiber|worker|pthread)
//
// Every benchmark measures wall time from the first write until a reader
// thread on the peer end has received every byte, so bytes still queued in
// weft count against it. Reported: msgs_per_s (and bytes_per_second).
#include <benchmark/benchmark.h>
#include <errno.h>
#include <gflags/gflags.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "weft/bthread.h"
#include "weft/butex.h"
#include "weft/errno.h"
#include "weft/net/acceptor.h"
#include "weft/net/endpoint.h"
#include "weft/net/iobuf.h"
#include "weft/net/socket.h"

namespace {

using Clock = std::chrono::steady_clock;

// A loopback connection whose server end is drained by a reader thread that
// counts bytes; wait_for(n) blocks until n bytes have arrived in total.
class Sink {
 public:
  explicit Sink(bool nodelay = true) {
    const int lfd = weft::tcp_listen(weft::EndPoint::loopback(0), 4);
    const weft::EndPoint ep = weft::get_local_side(lfd);
    client_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(client_, ep.addr(), ep.addr_len()) != 0) abort();
    // As weft sets on its sockets: every baseline sends with Nagle off too,
    // or the kernel would coalesce the plain loop's small writes for it.
    const int on = nodelay ? 1 : 0;
    setsockopt(client_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    pollfd p{lfd, POLLIN, 0};
    poll(&p, 1, 5000);
    server_ = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    close(lfd);
    if (server_ < 0) abort();
    reader_ = std::thread([this] { read_loop(); });
  }
  ~Sink() {
    shutdown(server_, SHUT_RDWR);
    reader_.join();
    close(server_);
  }
  // The client end; whoever uses it owns it from now on.
  int take_client() {
    const int fd = client_;
    client_ = -1;
    return fd;
  }
  int64_t received() const { return received_.load(std::memory_order_acquire); }
  void wait_for(int64_t total) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return received_.load(std::memory_order_acquire) >= total || eof_; });
  }

 private:
  void read_loop() {
    std::vector<char> buf(1 << 20);
    for (;;) {
      const ssize_t n = read(server_, buf.data(), buf.size());
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        std::lock_guard<std::mutex> lock(mu_);
        eof_ = true;
        cv_.notify_all();
        return;
      }
      received_.fetch_add(n, std::memory_order_release);
      std::lock_guard<std::mutex> lock(mu_);
      cv_.notify_all();
    }
  }

  int client_ = -1;
  int server_ = -1;
  std::atomic<int64_t> received_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool eof_ = false;
  std::thread reader_;
};

int64_t messages_for(size_t size) { return size <= 64 ? 400000 : 40000; }

void report(benchmark::State& state, int64_t msgs, size_t size) {
  state.SetItemsProcessed(msgs);
  state.SetBytesProcessed(msgs * static_cast<int64_t>(size));
  state.counters["msgs_per_s"] =
      benchmark::Counter(static_cast<double>(msgs), benchmark::Counter::kIsRate);
}

// ---- weft::Socket::Write from N writer fibers ----

struct WriterArg {
  weft::Socket* socket;
  const char* msg;
  size_t size;
  int64_t count;
};

void* write_messages(void* p) {
  auto* a = static_cast<WriterArg*>(p);
  for (int64_t i = 0; i < a->count; ++i) {
    weft::IOBuf buf;
    buf.append(a->msg, a->size);
    while (a->socket->Write(&buf) != 0) {
      if (errno != EOVERCROWDED) abort();
      bthread_usleep(100);
    }
  }
  return nullptr;
}

void BM_socket_write(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const int writers = static_cast<int>(state.range(1));
  Sink sink;
  weft::SocketOptions opt;
  opt.fd = sink.take_client();
  weft::SocketId id;
  if (weft::Socket::Create(opt, &id) != 0) abort();
  weft::SocketUniquePtr s;
  weft::Socket::Address(id, &s);
  std::vector<char> msg(size, 'm');
  const int64_t per_writer = messages_for(size) / writers;
  const int64_t msgs = per_writer * writers;
  int64_t expected = 0;
  int64_t total_msgs = 0;
  for (auto _ : state) {
    expected += msgs * static_cast<int64_t>(size);
    const auto start = Clock::now();
    std::vector<WriterArg> args(writers, WriterArg{s.get(), msg.data(), size, per_writer});
    std::vector<bthread_t> tids(writers);
    for (int w = 0; w < writers; ++w) {
      bthread_start_background(&tids[w], nullptr, write_messages, &args[w]);
    }
    for (bthread_t t : tids) bthread_join(t, nullptr);
    sink.wait_for(expected);
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
    total_msgs += msgs;
  }
  report(state, total_msgs, size);
  s->SetFailed();
}

// ---- the floor: one blocking writev per message from one pthread ----
// range(1) == 1: TCP_NODELAY as weft's sockets; 0: Nagle on (the kernel then
// coalesces small writes, a batching the NODELAY connections do not get).

void BM_plain_writev(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  Sink sink(state.range(1) != 0);
  const int fd = sink.take_client();
  std::vector<char> msg(size, 'm');
  const int64_t msgs = messages_for(size);
  int64_t expected = 0;
  int64_t total_msgs = 0;
  for (auto _ : state) {
    expected += msgs * static_cast<int64_t>(size);
    const auto start = Clock::now();
    for (int64_t i = 0; i < msgs; ++i) {
      iovec iov{msg.data(), size};
      size_t done = 0;
      while (done < size) {
        iov.iov_base = msg.data() + done;
        iov.iov_len = size - done;
        const ssize_t n = writev(fd, &iov, 1);
        if (n < 0) abort();
        done += static_cast<size_t>(n);
      }
    }
    sink.wait_for(expected);
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
    total_msgs += msgs;
  }
  report(state, total_msgs, size);
  close(fd);
}

// ---- N pthreads sharing the fd under a std::mutex, one writev each ----

void BM_mutex_writev(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const int writers = static_cast<int>(state.range(1));
  Sink sink;
  const int fd = sink.take_client();
  std::vector<char> msg(size, 'm');
  const int64_t per_writer = messages_for(size) / writers;
  const int64_t msgs = per_writer * writers;
  std::mutex mu;
  int64_t expected = 0;
  int64_t total_msgs = 0;
  for (auto _ : state) {
    expected += msgs * static_cast<int64_t>(size);
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w) {
      threads.emplace_back([&] {
        for (int64_t i = 0; i < per_writer; ++i) {
          std::lock_guard<std::mutex> guard(mu);
          size_t done = 0;
          while (done < size) {
            iovec iov{msg.data() + done, size - done};
            const ssize_t n = writev(fd, &iov, 1);
            if (n < 0) abort();
            done += static_cast<size_t>(n);
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    sink.wait_for(expected);
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
    total_msgs += msgs;
  }
  report(state, total_msgs, size);
  close(fd);
}

BENCHMARK(BM_plain_writev)
    ->ArgNames({"bytes", "nodelay"})
    ->ArgsProduct({{16, 4096}, {1, 0}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_mutex_writev)
    ->ArgNames({"bytes", "writers"})
    ->Args({16, 8})
    ->Args({4096, 8})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_socket_write)
    ->ArgNames({"bytes", "writers"})
    ->ArgsProduct({{16, 4096}, {1, 8, 64}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// ---- round trip: 16-byte ping-pong through an echo server ----
// weft: an Acceptor echoes; a client Socket's reading fiber counts reply
// bytes into a butex that the pinging fiber waits on. Baseline: two
// pthreads with blocking sockets. Reported: us per round trip.

void echo_back(weft::Socket* s) {
  int progress = weft::Socket::PROGRESS_INIT;
  for (;;) {
    const ssize_t n = s->DoRead(64 * 1024);
    if (n > 0) {
      weft::IOBuf out;
      out.swap(s->read_buf());
      s->Write(&out);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      s->SetFailed(EEOF, "closed");
      return;
    } else if (errno == EAGAIN && !s->MoreReadEvents(&progress)) {
      return;
    }
  }
}

std::atomic<int>* g_reply_bytes = nullptr;  // a butex

void count_replies(weft::Socket* s) {
  int progress = weft::Socket::PROGRESS_INIT;
  for (;;) {
    const ssize_t n = s->DoRead(64 * 1024);
    if (n > 0) {
      s->read_buf().clear();
      g_reply_bytes->fetch_add(static_cast<int>(n), std::memory_order_release);
      weft::butex_wake(g_reply_bytes);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      s->SetFailed(EEOF, "closed");
      return;
    } else if (errno == EAGAIN && !s->MoreReadEvents(&progress)) {
      return;
    }
  }
}

constexpr int kPingBytes = 16;

struct PingArg {
  weft::Socket* socket;
  int64_t rounds;
};

void* ping_rounds(void* p) {
  auto* a = static_cast<PingArg*>(p);
  char msg[kPingBytes];
  memset(msg, 'p', sizeof(msg));
  for (int64_t i = 0; i < a->rounds; ++i) {
    const int expected = g_reply_bytes->load(std::memory_order_acquire) + kPingBytes;
    weft::IOBuf buf;
    buf.append(msg, sizeof(msg));
    if (a->socket->Write(&buf) != 0) abort();
    int seen;
    while ((seen = g_reply_bytes->load(std::memory_order_acquire)) < expected) {
      weft::butex_wait(g_reply_bytes, seen, nullptr);
    }
  }
  return nullptr;
}

void BM_socket_echo_rtt(benchmark::State& state) {
  if (g_reply_bytes == nullptr) g_reply_bytes = weft::butex_create_checked<std::atomic<int>>();
  g_reply_bytes->store(0);
  weft::Acceptor acceptor(echo_back);
  const int lfd = weft::tcp_listen(weft::EndPoint::loopback(0));
  const weft::EndPoint ep = weft::get_local_side(lfd);
  if (acceptor.StartAccept(lfd, 0) != 0) abort();
  weft::SocketOptions opt;
  opt.remote_side = ep;
  opt.on_edge_triggered_events = count_replies;
  weft::SocketId id;
  if (weft::Socket::Create(opt, &id) != 0) abort();
  weft::SocketUniquePtr s;
  weft::Socket::Address(id, &s);
  PingArg warm{s.get(), 100};
  bthread_t tid;
  bthread_start_background(&tid, nullptr, ping_rounds, &warm);  // connects
  bthread_join(tid, nullptr);
  const int64_t rounds = 20000;
  int64_t total = 0;
  for (auto _ : state) {
    PingArg arg{s.get(), rounds};
    const auto start = Clock::now();
    bthread_start_background(&tid, nullptr, ping_rounds, &arg);
    bthread_join(tid, nullptr);
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
    total += rounds;
  }
  state.counters["rtt_us"] = benchmark::Counter(
      static_cast<double>(total) * 1e-6, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  s->SetFailed();
  s.reset();
  acceptor.StopAccept();
}

void BM_plain_echo_rtt(benchmark::State& state) {
  const int lfd = weft::tcp_listen(weft::EndPoint::loopback(0));
  const weft::EndPoint ep = weft::get_local_side(lfd);
  const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (connect(c, ep.addr(), ep.addr_len()) != 0) abort();
  pollfd p{lfd, POLLIN, 0};
  poll(&p, 1, 5000);
  const int srv = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  close(lfd);
  const int on = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  setsockopt(srv, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  std::thread server([srv] {
    char buf[4096];
    for (;;) {
      const ssize_t n = read(srv, buf, sizeof(buf));
      if (n <= 0 || write(srv, buf, static_cast<size_t>(n)) != n) return;
    }
  });
  char msg[kPingBytes];
  memset(msg, 'p', sizeof(msg));
  const int64_t rounds = 20000;
  int64_t total = 0;
  for (auto _ : state) {
    const auto start = Clock::now();
    for (int64_t i = 0; i < rounds; ++i) {
      if (write(c, msg, sizeof(msg)) != kPingBytes) abort();
      size_t got = 0;
      char in[kPingBytes];
      while (got < sizeof(in)) {
        const ssize_t n = read(c, in + got, sizeof(in) - got);
        if (n <= 0) abort();
        got += static_cast<size_t>(n);
      }
    }
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
    total += rounds;
  }
  state.counters["rtt_us"] = benchmark::Counter(
      static_cast<double>(total) * 1e-6, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  shutdown(c, SHUT_RDWR);
  server.join();
  close(c);
  close(srv);
}

BENCHMARK(BM_plain_echo_rtt)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_socket_echo_rtt)->UseManualTime()->Unit(benchmark::kMillisecond);

// ---- many connections: 1,000 clients, a 16-byte ping on each per round ----
// One round writes a ping on every client connection (from one fiber) and
// waits until every echo is back, so each round is a burst of ~1,000 input
// events on the server's dispatcher and ~1,000 on the clients'. The same
// count_replies readers and butex as echo_rtt. Reported: us per round and
// echoes per second.

void BM_socket_echo_1000conn(benchmark::State& state) {
  const int nconn = static_cast<int>(state.range(0));
  if (g_reply_bytes == nullptr) g_reply_bytes = weft::butex_create_checked<std::atomic<int>>();
  g_reply_bytes->store(0);
  weft::Acceptor acceptor(echo_back);
  const int lfd = weft::tcp_listen(weft::EndPoint::loopback(0), 4096);
  const weft::EndPoint ep = weft::get_local_side(lfd);
  if (acceptor.StartAccept(lfd, 0) != 0) abort();
  std::vector<weft::SocketUniquePtr> clients(static_cast<size_t>(nconn));
  for (auto& c : clients) {
    weft::SocketOptions opt;
    opt.remote_side = ep;
    opt.on_edge_triggered_events = count_replies;
    weft::SocketId id;
    if (weft::Socket::Create(opt, &id) != 0) abort();
    weft::Socket::Address(id, &c);
  }
  struct RoundArg {
    std::vector<weft::SocketUniquePtr>* clients;
    int64_t rounds;
  };
  auto run_rounds = [](void* p) -> void* {
    auto* a = static_cast<RoundArg*>(p);
    char msg[kPingBytes];
    memset(msg, 'p', sizeof(msg));
    const int burst = static_cast<int>(a->clients->size()) * kPingBytes;
    for (int64_t r = 0; r < a->rounds; ++r) {
      const int expected = g_reply_bytes->load(std::memory_order_acquire) + burst;
      for (auto& c : *a->clients) {
        weft::IOBuf buf;
        buf.append(msg, sizeof(msg));
        if (c->Write(&buf) != 0) abort();
      }
      int seen;
      while ((seen = g_reply_bytes->load(std::memory_order_acquire)) < expected) {
        weft::butex_wait(g_reply_bytes, seen, nullptr);
      }
    }
    return nullptr;
  };
  RoundArg warm{&clients, 3};  // connects every client
  bthread_t tid;
  bthread_start_background(&tid, nullptr, run_rounds, &warm);
  bthread_join(tid, nullptr);
  const int64_t rounds = 200;
  int64_t total = 0;
  for (auto _ : state) {
    RoundArg arg{&clients, rounds};
    const auto start = Clock::now();
    bthread_start_background(&tid, nullptr, run_rounds, &arg);
    bthread_join(tid, nullptr);
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - start).count());
    total += rounds;
  }
  state.counters["round_us"] = benchmark::Counter(
      static_cast<double>(total) * 1e-6, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["echoes_per_s"] =
      benchmark::Counter(static_cast<double>(total * nconn), benchmark::Counter::kIsRate);
  for (auto& c : clients) c->SetFailed();
  clients.clear();
  acceptor.StopAccept();
}

BENCHMARK(BM_socket_echo_1000conn)
    ->ArgNames({"conns"})
    ->Arg(1000)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
