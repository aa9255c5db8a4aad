// weft-redis: a Redis (RESP2) server on weft::rpc::Server.
//
//   weft-redis --port 6379 [--bind 127.0.0.1] [--threads 2]
//
// Prints "listening on IP:PORT" (flushed) once it serves; --port 0 picks a
// free port. SIGINT or SIGTERM stops it (calls in flight finish, replies are
// flushed) and it exits 0.
#include <errno.h>
#include <gflags/gflags.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <string>

#include "../common/serve_until_stopped.h"
#include "redis_commands.h"
#include "redis_store.h"
#include "weft/bthread.h"
#include "weft/rpc/server.h"

DEFINE_int32(port, 6379, "port to listen on; 0 picks a free one");
DEFINE_string(bind, "127.0.0.1", "address to listen on");
DEFINE_int32(threads, 0, "worker threads (0: the runtime's default)");
DEFINE_int32(max_connections, 10000, "open connections; past it new ones are closed at once");
DEFINE_int32(expire_sweep_ms, 100, "how often expired keys nobody reads are swept");

DECLARE_int64(weft_redis_client_output_limit);
DECLARE_int64(weft_socket_max_unwritten_bytes);
DECLARE_int64(weft_max_body_size);

namespace {

using weft::redis_tool::RedisStore;

struct Sweeper {
  RedisStore* store;
  int period_ms;
};

// Removes expired keys nobody reads; a bounded batch per period so a shard
// is never held long. Ends when stopped (bthread_usleep fails with ESTOP).
void* SweepLoop(void* arg) {
  auto* s = static_cast<Sweeper*>(arg);
  while (bthread_usleep(static_cast<uint64_t>(s->period_ms) * 1000) == 0) {
    const int64_t now = weft::redis_tool::MonotonicMs();
    // Keep sweeping while a batch is mostly expired keys (Redis' rule of
    // thumb), at most a few batches per period.
    for (int round = 0; round < 8; ++round) {
      if (s->store->SweepExpired(now, 1000) < 250) break;
    }
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("weft-redis --port N [--bind IP] [--threads N]");
  // A Redis bulk may be 512 MB, and a client that pipelines without reading
  // must hit --weft_redis_client_output_limit (a close) before the socket's
  // own write bound (which only pauses reading): raise both defaults,
  // leaving whatever the command line says.
  gflags::SetCommandLineOptionWithMode("weft_max_body_size", "537001984",
                                       gflags::SET_FLAGS_DEFAULT);
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (gflags::GetCommandLineFlagInfoOrDie("weft_socket_max_unwritten_bytes").is_default &&
      FLAGS_weft_redis_client_output_limit > 0) {
    FLAGS_weft_socket_max_unwritten_bytes =
        FLAGS_weft_redis_client_output_limit + int64_t{64} * 1024 * 1024;
  }
  if (FLAGS_port < 0 || FLAGS_port > 65535 || FLAGS_threads < 0 || FLAGS_expire_sweep_ms <= 0) {
    fprintf(stderr, "weft-redis: bad --port, --threads or --expire_sweep_ms\n");
    return 2;
  }
  // Before the runtime starts its workers (see BlockStopSignals).
  const sigset_t stop_signals = weft_tools::BlockStopSignals();
  // A client gone mid-reply must not kill the server.
  signal(SIGPIPE, SIG_IGN);

  RedisStore store;
  weft::redis_tool::ServerInfo info;
  info.start_ms = weft::redis_tool::MonotonicMs();
  weft::rpc::Server server;
  if (weft::redis_tool::AddRedisCommands(&server, &store, &info) != 0) {
    fprintf(stderr, "weft-redis: cannot add the commands: %s\n", strerror(errno));
    return 1;
  }
  weft::rpc::ServerOptions opt;
  opt.num_threads = FLAGS_threads;
  opt.max_connections = FLAGS_max_connections;
  opt.protocols = {"redis"};
  const std::string addr = FLAGS_bind + ":" + std::to_string(FLAGS_port);
  if (server.Start(addr.c_str(), &opt) != 0) {
    fprintf(stderr, "weft-redis: cannot listen on %s: %s\n", addr.c_str(), strerror(errno));
    return 1;
  }
  info.tcp_port = server.listen_address().port();
  Sweeper sweeper{&store, FLAGS_expire_sweep_ms};
  bthread_t sweep_fiber;
  if (bthread_start_background(&sweep_fiber, nullptr, SweepLoop, &sweeper) != 0) {
    fprintf(stderr, "weft-redis: cannot start the expiry sweep\n");
    return 1;
  }
  weft_tools::ServeUntilStopped(&server, stop_signals);
  bthread_stop(sweep_fiber);
  bthread_join(sweep_fiber, nullptr);
  return 0;
}
