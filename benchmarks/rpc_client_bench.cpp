// rpc_client_bench: the client side of weft::rpc alone, over one single
// connection with 64-byte payloads:
// - AsyncCalls/<server>/<window>: one fiber issues `window` asynchronous
//   echo calls back to back, then waits for all their `done`s, again and
//   again. items_per_second is calls completed per second; issue_ns is the
//   time CallMethod itself takes per call (what one fiber pays to issue).
// - SyncRoundTrip/<server>/{pthread,fiber}: one caller, one synchronous
//   call at a time: the full round trip through weft on both ends (weft
//   server) or on the client only (epoll floor).
// - RawRoundTrip/epoll: the same round trip with a blocking socket and no
//   weft at all, the floor for SyncRoundTrip.
// Servers: an in-process weft::rpc::Server ("weft"), and the one-thread
// epoll echo server (benchmarks/echo_baselines) run as a child process
// ("epoll"). Both share the machine with the client, unpinned.
//
//   rpc_client_bench --benchmark_min_time=0.5 [--weft_concurrency=N]
#include <benchmark/benchmark.h>
#include <errno.h>
#include <gflags/gflags.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "weft/bthread.h"
#include "weft/countdown_event.h"
#include "weft/rpc/channel.h"
#include "weft/rpc/server.h"

namespace {

using weft::IOBuf;
using weft::rpc::Channel;
using weft::rpc::Controller;

constexpr size_t kPayload = 64;

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// The epoll floor as a child process; its port comes from its
// "listening on" line.
struct ChildServer {
  pid_t pid = -1;
  int port = 0;

  bool start(const char* path) {
    int fds[2];
    if (pipe(fds) != 0) return false;
    pid = fork();
    if (pid == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      execl(path, path, "--port", "0", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    FILE* out = fdopen(fds[0], "r");
    char line[128];
    const bool ok = out != nullptr && fgets(line, sizeof(line), out) != nullptr &&
                    sscanf(line, "listening on 127.0.0.1:%d", &port) == 1;
    if (out != nullptr) fclose(out);
    return ok;
  }
  void stop() {
    if (pid <= 0) return;
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
    pid = -1;
  }
};

std::string g_weft_addr;
std::string g_epoll_addr;

// One Channel per server address for the whole run: the single connection
// is made by the first call and then shared (the process-wide socket map).
Channel* channel_for(const std::string& addr) {
  static std::vector<std::pair<std::string, std::unique_ptr<Channel>>> channels;
  for (auto& [a, ch] : channels) {
    if (a == addr) return ch.get();
  }
  auto ch = std::make_unique<Channel>();
  weft::rpc::ChannelOptions opt;
  opt.timeout_ms = 5000;
  if (ch->Init(addr.c_str(), &opt) != 0) abort();
  channels.emplace_back(addr, std::move(ch));
  return channels.back().second.get();
}

// One window of asynchronous calls, issued from one fiber.
struct AsyncBatch {
  Channel* channel = nullptr;
  IOBuf request;
  std::vector<Controller> cntls;
  std::vector<IOBuf> responses;
  weft::CountdownEvent done{0};
  std::atomic<int64_t> failures{0};
  int64_t issue_ns = 0;  // written by the issuing fiber, read after join

  explicit AsyncBatch(size_t window) : cntls(window), responses(window) {}
};

void* issue_window(void* arg) {
  AsyncBatch* const b = static_cast<AsyncBatch*>(arg);
  const size_t n = b->cntls.size();
  b->done.reset(static_cast<int>(n));
  const int64_t t0 = now_ns();
  for (size_t i = 0; i < n; ++i) {
    b->cntls[i].Reset();
    b->responses[i].clear();
    Controller* cntl = &b->cntls[i];
    IOBuf* resp = &b->responses[i];
    b->channel->CallMethod("echo", cntl, b->request, resp, [b, cntl, resp] {
      if (cntl->Failed() || resp->size() != kPayload) {
        b->failures.fetch_add(1, std::memory_order_relaxed);
      }
      b->done.signal();
    });
  }
  b->issue_ns += now_ns() - t0;
  b->done.wait();
  return nullptr;
}

void AsyncCalls(benchmark::State& state, const std::string* addr) {
  const size_t window = static_cast<size_t>(state.range(0));
  AsyncBatch batch(window);
  batch.channel = channel_for(*addr);
  batch.request.append(std::string(kPayload, 'x'));
  for (auto _ : state) {
    bthread_t t;
    if (bthread_start_background(&t, nullptr, issue_window, &batch) != 0) abort();
    bthread_join(t, nullptr);
  }
  const double calls = static_cast<double>(state.iterations()) * static_cast<double>(window);
  state.SetItemsProcessed(static_cast<int64_t>(calls));
  state.counters["issue_ns"] = static_cast<double>(batch.issue_ns) / calls;
  state.counters["failures"] = static_cast<double>(batch.failures.load());
  if (batch.failures.load() != 0) state.SkipWithError("calls failed");
}

// One synchronous call; false when it failed.
bool sync_call(Channel* ch, const IOBuf& req) {
  Controller cntl;
  IOBuf resp;
  ch->CallMethod("echo", &cntl, req, &resp, nullptr);
  return !cntl.Failed() && resp.size() == kPayload;
}

void SyncRoundTripPthread(benchmark::State& state, const std::string* addr) {
  Channel* ch = channel_for(*addr);
  IOBuf req;
  req.append(std::string(kPayload, 'x'));
  for (auto _ : state) {
    if (!sync_call(ch, req)) {
      state.SkipWithError("call failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

struct FiberLoop {
  Channel* ch;
  int64_t calls;
  bool ok = true;
};

void* sync_loop(void* arg) {
  FiberLoop* const l = static_cast<FiberLoop*>(arg);
  IOBuf req;
  req.append(std::string(kPayload, 'x'));
  for (int64_t i = 0; i < l->calls && l->ok; ++i) l->ok = sync_call(l->ch, req);
  return nullptr;
}

// Batches of 256 calls from one fiber per iteration, so a fiber's start and
// join are spread over many round trips.
void SyncRoundTripFiber(benchmark::State& state, const std::string* addr) {
  constexpr int64_t kBatch = 256;
  FiberLoop loop{channel_for(*addr), kBatch};
  for (auto _ : state) {
    bthread_t t;
    if (bthread_start_background(&t, nullptr, sync_loop, &loop) != 0) abort();
    bthread_join(t, nullptr);
    if (!loop.ok) {
      state.SkipWithError("call failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// A weft_std echo request with a blocking socket: write, read the whole
// response, again. No weft on either side.
void RawRoundTrip(benchmark::State& state, const std::string* addr) {
  const int port = atoi(addr->substr(addr->find(':') + 1).c_str());
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) abort();
  const int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  // Header: "WFT1", body_size = 4 + 64, correlation id, flags 0, meta 4, error 0.
  char frame[24 + 4 + kPayload] = {'W', 'F', 'T', '1', 0, 0, 0, 4 + kPayload};
  frame[19] = 4;
  memcpy(frame + 24, "echo", 4);
  memset(frame + 28, 'x', kPayload);
  char reply[24 + kPayload];
  uint64_t id = 0;
  for (auto _ : state) {
    ++id;
    memcpy(frame + 8, &id, sizeof(id));  // any 8 bytes: echoed unchanged
    if (write(fd, frame, sizeof(frame)) != static_cast<ssize_t>(sizeof(frame))) abort();
    size_t got = 0;
    while (got < sizeof(reply)) {
      const ssize_t n = read(fd, reply + got, sizeof(reply) - got);
      if (n <= 0) abort();
      got += static_cast<size_t>(n);
    }
    if (memcmp(reply + 8, &id, sizeof(id)) != 0) abort();
  }
  close(fd);
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  weft::rpc::Server server;
  server.AddMethod("echo", [](Controller*, const IOBuf& req, IOBuf* resp,
                              weft::rpc::Closure done) {
    resp->append(req);
    done();
  });
  if (server.Start("127.0.0.1:0", nullptr) != 0) {
    perror("rpc_client_bench: server");
    return 1;
  }
  g_weft_addr = server.listen_address().to_string();
  ChildServer floor;
  if (!floor.start(WEFT_EPOLL_ECHO_SERVER)) {
    fprintf(stderr, "rpc_client_bench: cannot start %s\n", WEFT_EPOLL_ECHO_SERVER);
    return 1;
  }
  g_epoll_addr = "127.0.0.1:" + std::to_string(floor.port);

  for (auto [name, addr] : {std::pair<const char*, const std::string*>{"weft", &g_weft_addr},
                            {"epoll", &g_epoll_addr}}) {
    benchmark::RegisterBenchmark((std::string("AsyncCalls/") + name).c_str(), AsyncCalls, addr)
        ->RangeMultiplier(4)
        ->Range(16, 1024)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("SyncRoundTrip/") + name + "/pthread").c_str(),
                                 SyncRoundTripPthread, addr)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("SyncRoundTrip/") + name + "/fiber").c_str(),
                                 SyncRoundTripFiber, addr)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("RawRoundTrip/epoll", RawRoundTrip, &g_epoll_addr)->UseRealTime();
  benchmark::RunSpecifiedBenchmarks();
  floor.stop();
  server.Stop();
  server.Join();
  return 0;
}
