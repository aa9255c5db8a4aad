// The tools' shared ending: a server that runs until SIGINT or SIGTERM, then
// stops gracefully (Stop + Join) so the process can exit 0.
#ifndef WEFT_TOOLS_COMMON_SERVE_UNTIL_STOPPED_H_
#define WEFT_TOOLS_COMMON_SERVE_UNTIL_STOPPED_H_

#include <pthread.h>
#include <signal.h>
#include <stdio.h>

#include "weft/rpc/server.h"

namespace weft_tools {

// Blocks SIGINT and SIGTERM in the calling thread. Call it before anything
// starts the runtime: its worker threads inherit the mask, so only the
// sigwait in ServeUntilStopped ever takes these signals.
inline sigset_t BlockStopSignals() {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  return stop_signals;
}

// For a started server: prints "listening on IP:PORT" (flushed, what the
// tests and scripts wait for), waits for one of stop_signals, then Stop
// and Join.
inline void ServeUntilStopped(weft::rpc::Server* server, const sigset_t& stop_signals) {
  printf("listening on %s\n", server->listen_address().to_string().c_str());
  fflush(stdout);
  int sig = 0;
  sigwait(&stop_signals, &sig);
  server->Stop();
  server->Join();
}

}  // namespace weft_tools

#endif  // WEFT_TOOLS_COMMON_SERVE_UNTIL_STOPPED_H_
