// weft/rpc/reply_orderer.h: replies of one connection in request order,
// for in_order protocols (RESP, HTTP/1.1 pipelining) whose requests may
// run in parallel and answer in any order.
//
// The protocol keeps one ReplyOrderer per connection (in its context slot,
// see Socket::InitContext). Its parse, which runs in the connection's
// reading fiber and so sees requests in arrival order, numbers each request
// with NextSequence(); whoever answers request n (any fiber or pthread,
// any time) calls Reply(n, ...). Reply writes n's bytes once every earlier
// request's reply has been written, so the wire order is the request
// order; replies that come early wait in the orderer (at most the
// connection's messages in flight: --weft_max_messages_in_flight_per_
// connection bounds them).
#ifndef WEFT_RPC_REPLY_ORDERER_H_
#define WEFT_RPC_REPLY_ORDERER_H_

#include <stdint.h>

#include <map>
#include <mutex>

#include "weft/net/iobuf.h"
#include "weft/net/socket.h"

namespace weft::rpc {

class ReplyOrderer {
 public:
  ReplyOrderer() = default;
  ReplyOrderer(const ReplyOrderer&) = delete;
  ReplyOrderer& operator=(const ReplyOrderer&) = delete;

  // The next request's number (0, 1, 2, ...). The connection's reading
  // fiber only (parse), in request order.
  uint64_t NextSequence() { return next_assigned_++; }

  // Request `seq`'s reply is *data (left empty). Written to `s` when every
  // earlier reply was; close_after: close the connection gracefully
  // (ESHUTDOWN) once this reply is queued, dropping
  // the replies of later requests (HTTP "Connection: close", RESP QUIT).
  // Each seq must be replied exactly once (an empty *data writes nothing
  // but still lets the next replies go). Returns 0, or -1 with errno when
  // the write of this or an earlier-held reply was refused (the connection
  // failed or is closing: the replies are dropped). Any fiber or pthread;
  // never suspends (a mutex held while queuing writes, which do not block).
  int Reply(Socket* s, uint64_t seq, IOBuf* data, bool close_after = false);

  // Replies received and waiting for earlier ones (tests, diagnostics).
  size_t held() const;

 private:
  uint64_t next_assigned_ = 0;  // reading fiber only
  mutable std::mutex mu_;
  // Guarded by mu_: the next reply to write, and the early ones.
  uint64_t next_to_write_ = 0;
  struct Held {
    IOBuf data;
    bool close_after = false;
  };
  std::map<uint64_t, Held> early_;
  bool closed_ = false;
};

}  // namespace weft::rpc

#endif  // WEFT_RPC_REPLY_ORDERER_H_
