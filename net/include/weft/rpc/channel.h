// weft/rpc/channel.h: the client side of an RPC.
//
// A Channel names one server and how to reach it (protocol, connection
// type, timeouts); CallMethod runs a call over it:
// - single: every Channel of the process to the same server and protocol
//   shares one connection (the process-wide SocketMap). Any number of calls
//   are in flight on it, matched to replies by correlation id (a
//   bthread_id per call). A connection that fails is replaced on the next
//   call, and every call pending on it hears the failure at once (the
//   socket keeps the ids of written requests and errors them).
// - pooled: one connection per call in flight, taken from a per-server pool
//   of idle connections and returned after the reply
//   (--weft_max_connection_pool_size idle ones kept). A connection whose
//   call failed or timed out is closed, never returned, so a late reply
//   cannot be taken for another call's.
// - short: a connection per call, closed when the call ends.
//
// A call ends exactly once, with the first of: its reply, its deadline
// (ERPCTIMEDOUT; the deadline covers retries), a cancel (ECANCELED), or a
// connection error once retries are used up (retried only on connection
// errors, never after a timeout, at most max_retry times). A reply that
// arrives after its call ended is dropped and counted
// (weft_rpc_late_replies).
#ifndef WEFT_RPC_CHANNEL_H_
#define WEFT_RPC_CHANNEL_H_

#include <stdint.h>

#include <memory>
#include <string>

#include "weft/bthread_id.h"
#include "weft/net/endpoint.h"
#include "weft/net/iobuf.h"
#include "weft/rpc/closure.h"
#include "weft/rpc/controller.h"
#include "weft/rpc/protocol.h"

namespace weft::rpc {

struct ChannelOptions {
  // A registered protocol's name (weft/rpc/protocol.h).
  std::string protocol = "weft_std";
  // kSingle, kPooled or kShort (ParseConnectionType reads "single",
  // "pooled", "short"); the protocol must support it.
  ConnectionType connection_type = kSingle;
  // The whole call, retries included, in ms; -1: no deadline. A
  // Controller's set_timeout_ms overrides it per call.
  int64_t timeout_ms = 1000;
  // Each connect attempt, in ms (its expiry is ETIMEDOUT, retried); <= 0:
  // bounded only by the call's deadline.
  int connect_timeout_ms = 200;
  // Retries after connection errors (never after a timeout). A
  // Controller's set_max_retry overrides it per call.
  int max_retry = 3;
};

class Channel {
 public:
  Channel();
  // Calls in flight keep what they need: destroying a Channel does not end
  // them (they end by their reply, deadline or cancel).
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // "127.0.0.1:8000" or "[::1]:8000", or an EndPoint; options nullptr:
  // defaults. Returns 0, or -1 with errno: EINVAL (bad address, a
  // connection type the protocol does not support, a second Init),
  // ENOPROTOOPT (no such protocol). Does not connect (the first call
  // does). Any thread.
  int Init(const char* ip_port, const ChannelOptions* options);
  int Init(const EndPoint& server, const ChannelOptions* options);

  // Calls `method` with `request`; the reply's payload goes to *response
  // and the outcome to *cntl (Failed, ErrorCode, ErrorText, latency_us,
  // ...). done empty: synchronous, blocks the calling fiber (only the
  // fiber) or pthread until the call ends. done set: asynchronous, returns
  // at once and done() runs in a fiber when the call ends; cntl and
  // response must stay valid until then, and cntl->call_id() names the
  // call for Join / StartCancel. A Channel that was not initialised fails
  // the call with EINVAL (done still runs). Any fiber or pthread.
  void CallMethod(const char* method, Controller* cntl, const IOBuf& request, IOBuf* response,
                  Closure done);

  const EndPoint& server() const;
  const ChannelOptions& options() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

// Waits until the call named call_id has ended (its done has been started,
// for an asynchronous call). 0; also for a call that ended already. May
// suspend; fiber or pthread.
int Join(bthread_id_t call_id);
// Ends the call with ECANCELED unless it ended already (then nothing
// happens). Returns at once; the call's done runs as usual. Any thread.
void StartCancel(bthread_id_t call_id);

// Calls pending right now in this process (started, not ended): tests and
// diagnostics ("nothing leaked" is this back to 0).
int64_t PendingCallCount();

}  // namespace weft::rpc

#endif  // WEFT_RPC_CHANNEL_H_
