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

class Server;

// The accounting of a batch: calls that one message of an in_order
// protocol carries and that run one after another (redis: the pipelined
// commands of one read), or several such messages of one connection run
// back to back (BeginBatch again before EndBatch: the next message's calls
// join the batch). Per-call accounting (the drain count, the concurrency
// slot, the clock reads and the metrics' shared counters) is taken once
// per batch instead of once per call:
//  - the drain count (Join waits for it) is held from BeginBatch to
//    EndBatch, so Join waits for the whole batch, and its replies are
//    queued before Join closes the connection. A message joining a batch
//    after a Stop continues it only if it was read before the Stop (so
//    what was read before the Stop is answered, every reply written);
//    a later one starts afresh, which lets Join in between: a client that
//    keeps sending cannot hold Join off;
//  - the stop is still checked per call (a plain load: the drain count is
//    already held), so calls after a Stop are refused ELOGOFF as before;
//  - max_concurrency: the batch takes one slot at its first call that runs
//    a handler and keeps it to EndBatch. Its calls run one at a time, so
//    that is the number of its calls running at once; a call that finds no
//    slot free is refused ELIMIT, and the next call tries again;
//  - per-method counts and errors count every call; latency is recorded
//    at RecordBatch, one clock read for the calls ended since the last
//    one, each taking (now - received_us of its message): from the read to its
//    reply being ready to write, exact for the last call of the group and
//    an upper bound for the others by at most the group's run time. They
//    are weighted per call (count and percentiles count calls);
//  - a method's max_concurrency metric counts a batch as one call of each
//    method it ran, from that method's first call in the batch to its end.
// Used by one fiber at a time (the one running the batch, handed over with
// the happens-before that orders the protocol's own state). Reusable for
// the next batch once EndBatch returned.
class CallBatch {
 public:
  CallBatch() = default;
  CallBatch(const CallBatch&) = delete;
  CallBatch& operator=(const CallBatch&) = delete;

 private:
  friend class Server;
  struct Tally {
    internal::MethodStatus* method;
    // Calls ended (and failed) since the last RecordBatch.
    int64_t calls;
    int64_t errors;
    // OnStart ran for this batch (OnLeave due at EndBatch).
    bool started;
  };
  Server* server_ = nullptr;
  // Between BeginBatch and EndBatch (holds a drain count).
  bool active_ = false;
  int64_t received_us_ = 0;
  // Holds one of calls_in_flight_ (see above).
  bool holds_slot_ = false;
  // The tally of the running call's method; -1 for a refused call with no
  // method (ELOGOFF before the lookup, ENOMETHOD).
  int current_ = -1;
  // The tally of the last method looked up: a pipeline of one command
  // finds it with one comparison, not a map lookup.
  int last_ = -1;
  // The methods of this batch (a handful; capacity kept across batches).
  std::vector<Tally> tallies_;
  bool pending_ = false;  // some tally has calls to record
};

struct ServerOptions {
  // Connections with no activity (a complete message read or a write) for
  // this long are closed gracefully. -1 (default): never.
  int idle_timeout_sec = -1;
  // Calls running at once, over all methods and connections; a call beyond
  // it is answered ELIMIT without running its handler. A batch of calls
  // that run one after another (CallBatch: redis' pipelined commands of a
  // connection) counts as one. 0 (default): unlimited.
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
  // Calls whose handler was entered and whose done has not finished yet,
  // a batch counting as one from its first such call to EndBatch (what
  // max_concurrency bounds).
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

  // ---- for in_order protocols running a message's calls in sequence ----
  // (see CallBatch). A batch is BeginBatch, then per call
  // ProcessBatchedCall and, from that call's done, EndBatchedCall; then
  // RecordBatch before writing replies (so a client that read a reply sees
  // its call counted) and EndBatch once the replies are queued on the
  // connection (after it the Server may be gone: Join waits for it).
  //
  // Begins batch b of a message received at received_us; on an active b,
  // records its calls so far (RecordBatch) and goes on with the next
  // message's calls in it (the drain count and the slot stay held). Any
  // fiber.
  void BeginBatch(CallBatch* b, int64_t received_us);
  // Runs one call of b as ProcessCall does (refusals: ELOGOFF, ELIMIT,
  // ENOMETHOD), except that `done` goes to the handler as it is (no
  // wrapper) and cntl->latency_us() is not set. `done` runs exactly once
  // and must call EndBatchedCall(b, *cntl) before the batch's next call.
  void ProcessBatchedCall(CallBatch* b, std::string_view method, Controller* cntl,
                          const IOBuf& request, IOBuf* response, Closure done);
  // The call ProcessBatchedCall ran ended (cntl has its error, if any).
  void EndBatchedCall(CallBatch* b, const Controller& cntl);
  // Records the metrics of b's calls ended since the last RecordBatch.
  void RecordBatch(CallBatch* b);
  // RecordBatch, then releases b's concurrency slot and its drain count
  // (the last touch of the Server). b may begin the next batch.
  void EndBatch(CallBatch* b);

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
  // The method called `name`, or nullptr.
  internal::MethodStatus* FindMethod(std::string_view name) const;
  // Counts a call in calls_in_flight_; false, with cntl failed with ELIMIT,
  // when max_concurrency calls already run.
  bool TakeConcurrencySlot(Controller* cntl);

  // Immutable after Start (read without a lock by ProcessCall).
  std::map<std::string, std::unique_ptr<internal::MethodStatus>, std::less<>> methods_;
  std::unique_ptr<Acceptor> acceptor_;
  // Calls running (handler entered, done not finished), for max_concurrency
  // and calls_in_flight. Relaxed increments are enough for the limit (it
  // is a bound, not a synchronization); the drain uses drained_.
  std::atomic<int64_t> calls_in_flight_{0};
  // When Stop first ran (monotonic us; INT64_MAX before): BeginBatch
  // continues a batch after a Stop only for messages read before it.
  // Written before Stop's CAS, read after a load that saw STOPPING; a
  // stale INT64_MAX only continues one batch more.
  std::atomic<int64_t> stop_us_{INT64_MAX};
  // 1 (the Server's own count) + calls begun and not ended. Join drops its
  // own count and waits for 0. CountdownEvent::signal touches nothing of
  // the event after its subtraction, so a call's end may race with Join
  // returning and the Server being destroyed.
  CountdownEvent drained_{1};
};

}  // namespace weft::rpc

#endif  // WEFT_RPC_SERVER_H_
