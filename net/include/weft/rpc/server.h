// weft/rpc/server.h: a server of named methods over the registered
// protocols.
//
//   weft::rpc::Server server;
//   server.AddMethod("echo", [](weft::rpc::Controller*, const weft::IOBuf& req,
//                               weft::IOBuf* resp, weft::rpc::Closure done) {
//     resp->append(req);
//     done();
//   });
//   server.Start("127.0.0.1:0", nullptr);   // listen_address() has the port
//   ...
//   server.Stop();                           // refuse new calls (ELOGOFF)
//   server.Join();                           // drain, then close
//
// The Server owns an Acceptor (an InputMessenger) whose handlers are the
// protocols of ServerOptions::protocols, each with the Server as `arg`;
// each connection picks its protocol on its first message. A protocol's
// process_request hands every request to ProcessCall, which finds the
// method, enforces max_concurrency and the stop, runs the handler and
// keeps the per-method metrics. The Server never names a concrete protocol.
#ifndef WEFT_RPC_SERVER_H_
#define WEFT_RPC_SERVER_H_

#include <stdint.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "weft/bthread.h"
#include "weft/countdown_event.h"
#include "weft/net/acceptor.h"
#include "weft/net/endpoint.h"
#include "weft/net/iobuf.h"
#include "weft/rpc/closure.h"
#include "weft/rpc/controller.h"
#include "weft/rpc/errno.h"

namespace weft::rpc {

namespace internal {
class MethodStatus;
}

struct ServerOptions {
  // Connections with no activity (a complete message read or a write) for
  // this long are closed gracefully. -1 (default): never.
  int idle_timeout_sec = -1;
  // Calls running at once, over all methods and connections; a call beyond
  // it is answered ELIMIT without running its handler. 0 (default):
  // unlimited.
  int max_concurrency = 0;
  // Open connections; past it a new connection is accepted and closed at
  // once. 0 (default): unlimited.
  int max_connections = 0;
  // > 0: the runtime's worker count is raised to this at Start (it can
  // only grow, process-wide). 0 (default): left as it is.
  int num_threads = 0;
  // Names of the protocols to speak (RegisterProtocol). Empty (default):
  // every registered protocol that can serve (has process_request).
  std::vector<std::string> protocols;
};

// A method: fill *response (or cntl->SetFailed) and call done, once, now or
// later from any fiber or pthread. `request`, `response` and `cntl` stay
// valid until done runs and must not be touched after. Runs in a fiber;
// calls on one connection of a protocol that is not in_order run in
// parallel.
using MethodHandler =
    std::function<void(Controller* cntl, const IOBuf& request, IOBuf* response, Closure done)>;

class Server {
 public:
  Server();
  // Stop() and Join().
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Adds a method before Start. 0, or -1 with errno: EINVAL (empty name or
  // over 255 bytes, or no handler), EEXIST (name taken), EBUSY (started).
  // Not in parallel with Start.
  int AddMethod(std::string name, MethodHandler handler);

  // Listens on "ip:port" (port 0 picks a free one; see listen_address) and
  // serves. 0, or -1 with errno: EINVAL (malformed address, an unknown or
  // non-serving protocol, no protocol at all), EBUSY (already started; a
  // Server starts once), EADDRINUSE and the other bind/listen errors.
  // options == nullptr: the defaults. Any fiber or pthread; may suspend.
  int Start(const char* ip_port, const ServerOptions* options);
  int Start(const EndPoint& ep, const ServerOptions* options);

  // Stops accepting connections and answers every new call ELOGOFF (calls
  // already running go on). Returns at once; idempotent. Any thread.
  void Stop();
  // Stop() if needed, then waits for every call in flight to end (its
  // reply queued on its connection), then closes every connection
  // gracefully (queued replies are written in full first, bounded by
  // --weft_socket_close_flush_ms) and waits until they are gone. Calls that
  // arrive meanwhile are answered ELOGOFF. Any fiber or pthread (not a
  // handler of this server: it would wait for itself); suspends.
  void Join();

  // Started and not yet stopped.
  bool IsRunning() const { return status_.load(std::memory_order_acquire) == RUNNING; }
  // The address listened on (the real port when Start got port 0); unset
  // before Start.
  EndPoint listen_address() const { return listen_address_; }
  // Open connections (0 before Start).
  size_t connection_count() const;
  // The ids of the open connections (none before Start), for status pages.
  // Any thread after Start returned (acceptor_ is set before then).
  void ListConnections(std::vector<SocketId>* ids) const {
    ids->clear();
    if (acceptor_ != nullptr) acceptor_->ListConnections(ids);
  }
  // Calls whose handler was entered and whose done has not finished yet
  // (what max_concurrency bounds).
  int64_t calls_in_flight() const { return calls_in_flight_.load(std::memory_order_relaxed); }
  const ServerOptions& options() const { return options_; }

  // ---- for protocols (process_request) ----
  // Runs one call: finds `method`, refuses it when stopping (ELOGOFF), at
  // max_concurrency (ELIMIT) or unknown (ENOMETHOD, with a non-empty text),
  // else runs its handler; in every case `done` runs exactly once (at once
  // for a refusal, else after the handler's done), with cntl->latency_us()
  // set and the metrics recorded. The protocol then sends cntl's error or
  // *response from `done`. Any fiber; may suspend only if the handler does.
  void ProcessCall(std::string_view method, Controller* cntl, const IOBuf& request, IOBuf* response,
                   int64_t received_us, Closure done);

 private:
  enum Status { READY, RUNNING, STOPPING, STOPPED };

  // The end of a call: metrics, then the protocol's done, then the drain
  // count (the last touch of the Server, see drained_).
  void EndCall(internal::MethodStatus* method, Controller* cntl, int64_t received_us,
               bool counted_concurrency, Closure* done);

  // A Status. An int so that ProcessCall can read it with an RMW (see
  // there): every change and every call's read are then one modification
  // order, which decides who saw whom.
  std::atomic<int> status_{READY};
  // Held through Join, so concurrent Joins drain once and all return after
  // it (a fiber-aware mutex: Join may run in a fiber).
  bthread_mutex_t join_mutex_;
  ServerOptions options_;
  EndPoint listen_address_;
  // Immutable after Start (read without a lock by ProcessCall).
  std::map<std::string, std::unique_ptr<internal::MethodStatus>, std::less<>> methods_;
  std::unique_ptr<Acceptor> acceptor_;
  // Calls running (handler entered, done not finished), for max_concurrency
  // and calls_in_flight. Relaxed increments are enough for the limit (it
  // is a bound, not a synchronization); the drain uses drained_.
  std::atomic<int64_t> calls_in_flight_{0};
  // 1 (the Server's own count) + calls begun and not ended. Join drops its
  // own count and waits for 0. CountdownEvent::signal touches nothing of
  // the event after its subtraction, so a call's end may race with Join
  // returning and the Server being destroyed.
  CountdownEvent drained_{1};
};

}  // namespace weft::rpc

#endif  // WEFT_RPC_SERVER_H_
