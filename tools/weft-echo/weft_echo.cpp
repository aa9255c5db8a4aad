// weft-echo: an echo server and a load-generating client over weft::rpc
// (rpc.md, "weft-echo"):
//   weft-echo server [--port N] [--threads N]
//   weft-echo client --server 127.0.0.1:N [--connection_type single|pooled|short]
//                    [--concurrency C] [--payload BYTES] [--duration S] [--histogram FILE]
//   weft-echo demo
// Any weft gflag (--weft_*) is accepted too. Bad flags exit 2.
#include <errno.h>
#include <gflags/gflags.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../common/serve_until_stopped.h"
#include "latency_histogram.h"
#include "weft/bthread.h"
#include "weft/rpc/channel.h"
#include "weft/rpc/errno.h"
#include "weft/rpc/http.h"
#include "weft/rpc/server.h"

DEFINE_int32(port, 8000, "server: port to listen on (127.0.0.1); 0 picks a free one");
DEFINE_int32(threads, 0, "server: worker threads (0: the runtime's default)");
DEFINE_string(server, "", "client: the server, ip:port");
DEFINE_string(connection_type, "single", "client: single, pooled or short");
DEFINE_int32(concurrency, 8, "client: fibers calling echo in a loop");
DEFINE_int32(payload, 64, "client: bytes per request");
DEFINE_double(duration, 5, "client: seconds to run");
DEFINE_string(histogram, "", "client: write the latency histogram here (CSV)");

namespace {

using weft::IOBuf;
using weft::rpc::Channel;
using weft::rpc::ChannelOptions;
using weft::rpc::Closure;
using weft::rpc::Controller;
using weft::rpc::Server;
using weft_echo::LatencyHistogram;

int64_t now_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

void usage() {
  fprintf(stderr,
          "usage:\n"
          "  weft-echo server [--port N] [--threads N]\n"
          "  weft-echo client --server 127.0.0.1:N [--connection_type single|pooled|short]\n"
          "                   [--concurrency C] [--payload BYTES] [--duration S] "
          "[--histogram FILE]\n"
          "  weft-echo demo\n");
}

// Sets the flags in argv[first..] ("--name=value" or "--name value"); only
// `allowed` of the tool's own flags, or any --weft_* flag. False (after
// printing why) on anything else.
bool parse_flags(int argc, char** argv, int first, const std::vector<std::string>& allowed) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      fprintf(stderr, "weft-echo: unexpected argument '%s'\n", arg.c_str());
      return false;
    }
    arg = arg.substr(2);
    std::string name = arg, value;
    bool has_value = false;
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    bool ok_name = name.rfind("weft_", 0) == 0;
    for (const std::string& a : allowed) ok_name = ok_name || a == name;
    gflags::CommandLineFlagInfo info;
    if (!ok_name || !gflags::GetCommandLineFlagInfo(name.c_str(), &info)) {
      fprintf(stderr, "weft-echo: unknown flag --%s\n", name.c_str());
      return false;
    }
    if (!has_value) {
      if (info.type == "bool") {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        fprintf(stderr, "weft-echo: --%s needs a value\n", name.c_str());
        return false;
      }
    }
    if (gflags::SetCommandLineOption(name.c_str(), value.c_str()).empty()) {
      fprintf(stderr, "weft-echo: bad value '%s' for --%s\n", value.c_str(), name.c_str());
      return false;
    }
  }
  return true;
}

void add_echo_methods(Server* server) {
  server->AddMethod("echo", [](Controller*, const IOBuf& req, IOBuf* resp, Closure done) {
    resp->append(req);
    done();
  });
  server->AddMethod("sleep", [](Controller* cntl, const IOBuf& req, IOBuf* resp, Closure done) {
    const std::string text = req.to_string();
    char* end = nullptr;
    errno = 0;
    const long long ms = text.empty() ? -1 : strtoll(text.c_str(), &end, 10);
    if (text.empty() || errno != 0 || *end != '\0' || ms < 0 || text[0] == '+' || text[0] == '-' ||
        text[0] == ' ') {
      cntl->SetFailed(EREQUEST, "sleep: the payload must be a decimal number of milliseconds");
      done();
      return;
    }
    bthread_usleep(static_cast<uint64_t>(ms) * 1000);
    resp->append(req);
    done();
  });
}

// ---- client ----

// One caller fiber's counts. Each fiber bumps only its own (its own cache
// lines: no atomic shared by all callers on the call path); the reporter
// sums them with relaxed loads (the counts only grow).
struct alignas(64) CallerStats {
  LatencyHistogram ok;   // successful calls (the percentiles)
  LatencyHistogram all;  // every ended call (the CSV)
  std::atomic<int64_t> calls{0};
  std::atomic<int64_t> errors{0};
};

struct LoadState {
  Channel* channel = nullptr;
  std::string payload;
  // Read by every caller each call; set once before they start (or to 0
  // to stop them early). Relaxed: a deadline, no data hangs on it.
  std::atomic<int64_t> end_us{0};
  std::vector<std::unique_ptr<CallerStats>> callers;

  std::array<uint64_t, LatencyHistogram::kBuckets> ok() const {
    return sum([](const CallerStats& c) { return c.ok.snapshot(); });
  }
  std::array<uint64_t, LatencyHistogram::kBuckets> all() const {
    return sum([](const CallerStats& c) { return c.all.snapshot(); });
  }
  int64_t calls() const {
    int64_t n = 0;
    for (const auto& c : callers) n += c->calls.load(std::memory_order_relaxed);
    return n;
  }
  int64_t errors() const {
    int64_t n = 0;
    for (const auto& c : callers) n += c->errors.load(std::memory_order_relaxed);
    return n;
  }

 private:
  template <typename F>
  std::array<uint64_t, LatencyHistogram::kBuckets> sum(F snapshot_of) const {
    std::array<uint64_t, LatencyHistogram::kBuckets> total{};
    for (const auto& c : callers) {
      const auto one = snapshot_of(*c);
      for (size_t i = 0; i < total.size(); ++i) total[i] += one[i];
    }
    return total;
  }
};

struct Caller {
  LoadState* load;
  CallerStats* stats;
};

void* caller_fiber(void* arg) {
  const Caller* const me = static_cast<Caller*>(arg);
  LoadState* const st = me->load;
  CallerStats* const stats = me->stats;
  // One request for every call: CallMethod only reads it (the frame it
  // sends shares its bytes), so the payload is not copied again per call.
  IOBuf req;
  req.append(st->payload);
  // Two clock reads per call: the call's start, which is also the loop's
  // time check, and its end.
  for (int64_t t0 = now_us(); t0 < st->end_us.load(std::memory_order_relaxed); t0 = now_us()) {
    IOBuf resp;
    Controller cntl;
    st->channel->CallMethod("echo", &cntl, req, &resp, nullptr);
    const int64_t us = now_us() - t0;
    stats->all.add(us);
    if (cntl.Failed() || resp.size() != st->payload.size()) {
      stats->errors.fetch_add(1, std::memory_order_relaxed);
      // A dead server refuses at once: do not spin on it.
      if (cntl.Failed()) bthread_usleep(1000);
    } else {
      stats->ok.add(us);
    }
    stats->calls.fetch_add(1, std::memory_order_relaxed);
  }
  return nullptr;
}

int run_client(const std::string& server, const std::string& connection_type, int concurrency,
               int payload, double duration_s, const std::string& histogram_path) {
  ChannelOptions opt;
  if (!weft::rpc::ParseConnectionType(connection_type, &opt.connection_type)) {
    fprintf(stderr, "weft-echo: --connection_type must be single, pooled or short\n");
    return 2;
  }
  if (concurrency <= 0 || payload < 0 || duration_s <= 0) {
    fprintf(stderr, "weft-echo: --concurrency, --payload and --duration must be positive\n");
    return 2;
  }
  Channel channel;
  if (channel.Init(server.c_str(), &opt) != 0) {
    fprintf(stderr, "weft-echo: bad --server '%s': %s\n", server.c_str(), strerror(errno));
    return 2;
  }
  LoadState st;
  st.channel = &channel;
  st.payload.assign(static_cast<size_t>(payload), 'e');
  const int64_t start_us = now_us();
  st.end_us.store(start_us + static_cast<int64_t>(duration_s * 1e6), std::memory_order_relaxed);
  std::vector<bthread_t> tids(static_cast<size_t>(concurrency));
  std::vector<Caller> callers(static_cast<size_t>(concurrency));
  for (size_t i = 0; i < tids.size(); ++i) {
    st.callers.push_back(std::make_unique<CallerStats>());
    callers[i] = Caller{&st, st.callers.back().get()};
  }
  for (size_t i = 0; i < tids.size(); ++i) {
    if (bthread_start_background(&tids[i], nullptr, caller_fiber, &callers[i]) != 0) {
      fprintf(stderr, "weft-echo: cannot start a caller fiber\n");
      // The callers already started use st, callers and the channel, all
      // on this stack: end their loop and wait for them before returning.
      st.end_us.store(0, std::memory_order_relaxed);
      for (size_t j = 0; j < i; ++j) bthread_join(tids[j], nullptr);
      return 1;
    }
  }
  // One progress line a second, over that second's calls.
  auto prev = st.ok();
  int64_t prev_calls = 0, prev_us = start_us;
  for (int second = 1;; ++second) {
    const int64_t next_us = start_us + second * 1000000LL;
    if (next_us > st.end_us.load(std::memory_order_relaxed)) break;
    while (now_us() < next_us)
      usleep(static_cast<useconds_t>(
          std::min<int64_t>(100000, std::max<int64_t>(1, next_us - now_us()))));
    const auto cur = st.ok();
    auto delta = cur;
    for (size_t i = 0; i < delta.size(); ++i) delta[i] -= prev[i];
    const int64_t calls = st.calls();
    const int64_t t = now_us();
    printf("progress: t=%ds qps=%.0f p50_us=%lld p99_us=%lld p999_us=%lld errors=%lld\n", second,
           static_cast<double>(calls - prev_calls) * 1e6 / static_cast<double>(t - prev_us),
           static_cast<long long>(LatencyHistogram::percentile(delta, 0.50)),
           static_cast<long long>(LatencyHistogram::percentile(delta, 0.99)),
           static_cast<long long>(LatencyHistogram::percentile(delta, 0.999)),
           static_cast<long long>(st.errors()));
    fflush(stdout);
    prev = cur;
    prev_calls = calls;
    prev_us = t;
  }
  for (bthread_t t : tids) bthread_join(t, nullptr);
  const double elapsed_s = static_cast<double>(now_us() - start_us) / 1e6;
  const auto ok = st.ok();
  const long long calls = static_cast<long long>(st.calls());
  printf("summary: qps=%.1f p50_us=%lld p99_us=%lld p999_us=%lld errors=%lld calls=%lld\n",
         static_cast<double>(calls) / elapsed_s,
         static_cast<long long>(LatencyHistogram::percentile(ok, 0.50)),
         static_cast<long long>(LatencyHistogram::percentile(ok, 0.99)),
         static_cast<long long>(LatencyHistogram::percentile(ok, 0.999)),
         static_cast<long long>(st.errors()), calls);
  fflush(stdout);
  if (!histogram_path.empty()) {
    FILE* f = fopen(histogram_path.c_str(), "w");
    if (f == nullptr) {
      fprintf(stderr, "weft-echo: cannot write %s: %s\n", histogram_path.c_str(), strerror(errno));
      return 1;
    }
    fprintf(f, "upper_bound_us,count\n");
    const auto all = st.all();
    for (int i = 0; i < LatencyHistogram::kBuckets; ++i) {
      if (all[static_cast<size_t>(i)] == 0) continue;
      const int64_t bound = LatencyHistogram::upper_bound(i);
      if (bound < 0) {
        fprintf(f, "inf,%llu\n", static_cast<unsigned long long>(all[static_cast<size_t>(i)]));
      } else {
        fprintf(f, "%lld,%llu\n", static_cast<long long>(bound),
                static_cast<unsigned long long>(all[static_cast<size_t>(i)]));
      }
    }
    fclose(f);
  }
  return 0;
}

// ---- server ----

int run_server(int port, int threads) {
  if (port < 0 || port > 65535 || threads < 0) {
    fprintf(stderr, "weft-echo: bad --port or --threads\n");
    return 2;
  }
  // Before the runtime starts its workers (see BlockStopSignals).
  const sigset_t stop_signals = weft_tools::BlockStopSignals();
  Server server;
  add_echo_methods(&server);
  // The status pages over HTTP on the same port (protocol detection).
  weft::rpc::EnableHttpBuiltinPages(&server);
  weft::rpc::ServerOptions opt;
  opt.num_threads = threads;
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  if (server.Start(addr.c_str(), &opt) != 0) {
    fprintf(stderr, "weft-echo: cannot listen on %s: %s\n", addr.c_str(), strerror(errno));
    return 1;
  }
  weft_tools::ServeUntilStopped(&server, stop_signals);
  return 0;
}

int run_demo() {
  Server server;
  add_echo_methods(&server);
  if (server.Start("127.0.0.1:0", nullptr) != 0) {
    fprintf(stderr, "weft-echo: cannot listen: %s\n", strerror(errno));
    return 1;
  }
  const std::string addr = server.listen_address().to_string();
  printf("listening on %s\n", addr.c_str());
  printf("demo: %d callers on one single connection, %d-byte payloads, 3 s\n", 8, 64);
  fflush(stdout);
  const int rc = run_client(addr, "single", 8, 64, 3, "");
  server.Stop();
  server.Join();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("weft-echo server|client|demo [flags]");
  if (argc < 2) {
    usage();
    return 2;
  }
  const std::string mode = argv[1];
  if (mode == "server") {
    if (!parse_flags(argc, argv, 2, {"port", "threads"})) return 2;
    return run_server(FLAGS_port, FLAGS_threads);
  }
  if (mode == "client") {
    if (!parse_flags(
            argc, argv, 2,
            {"server", "connection_type", "concurrency", "payload", "duration", "histogram"})) {
      return 2;
    }
    if (FLAGS_server.empty()) {
      fprintf(stderr, "weft-echo: client needs --server ip:port\n");
      return 2;
    }
    return run_client(FLAGS_server, FLAGS_connection_type, FLAGS_concurrency, FLAGS_payload,
                      FLAGS_duration, FLAGS_histogram);
  }
  if (mode == "demo") {
    if (!parse_flags(argc, argv, 2, {})) return 2;
    return run_demo();
  }
  usage();
  return 2;
}
