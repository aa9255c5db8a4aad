// redis: RESP2 as a weft::rpc::Protocol (in_order, kPooled | kShort).
// Depends on the protocol API alone (weft/rpc/*.h).
//
// Server side: parse cuts every complete command of the read buffer into
// one message (a batch), so a pipeline of N commands in one read costs one
// message, one fiber at most and one write, as redis-server's event loop
// handles a client's query buffer. process_request runs a connection's
// batches one after another in cut order, and the commands of a batch in
// request order (a pipelined SET then GET must see the SET, so execution,
// not only the replies, is ordered), each through Server::ProcessBatchedCall
// under the command's lower-cased name (so max_concurrency, the stop and
// the per-method metrics see every command, with the Server's accounting
// taken once per batch: weft/rpc/server.h, CallBatch), appending the replies to one
// buffer written once per batch (or every kMaxBatchBytes). A protocol
// error is answered after the commands cut before it and then closes the
// connection, as Redis does; so does QUIT, dropping what follows. A
// connection whose unwritten replies pass --weft_redis_client_output_limit
// is closed (Redis' client-output-buffer-limit).
//
// A handler that completes later, or suspends its fiber, holds up only its
// own connection: the rest of the batch (and later batches) continue in
// the fiber that runs its done, and other connections' batches run in
// their own fibers meanwhile.
//
// Client side (redis_client.cpp): one call is one RedisRequest, possibly of
// many commands; its response collects that many replies.
#ifndef WEFT_NET_SRC_PROTOCOLS_REDIS_REDIS_PROTOCOL_H_
#define WEFT_NET_SRC_PROTOCOLS_REDIS_REDIS_PROTOCOL_H_

#include <stdint.h>

#include <string>
#include <vector>

#include "protocols/redis/resp_request_parser.h"
#include "weft/net/input_messenger.h"
#include "weft/rpc/protocol.h"

namespace weft::rpc::redis {

// The complete commands of one read of a server connection, in request
// order, then perhaps a protocol error (protocol_error non-empty: its
// reply, then the close). Never empty: it holds a command or an error.
class RedisMessage : public InputMessageBase {
 public:
  std::vector<RespCommand> commands;
  std::string protocol_error;
  // The connection's batches are numbered in cut order (reading fiber).
  uint64_t seq = 0;
};

// Protocol::parse (server side when arg is the Server, client side when
// nullptr). With socket == nullptr (tests) each call parses afresh, cuts
// at most one command and consumes nothing unless a whole command (or an
// error) is there.
ParseResult ParseRedis(IOBuf* source, Socket* socket, bool read_eof, const void* arg);

// Protocol::process_request: runs the batch after its connection's earlier
// ones (see above). Runs in a fiber.
void ProcessRedisRequest(InputMessageBase* msg);

// The largest unwritten output a connection may have
// (--weft_redis_client_output_limit).
int64_t client_output_limit();

// The redis Protocol struct, registered once under "redis" by the rpc
// library's built-ins.
Protocol MakeRedisProtocol();

}  // namespace weft::rpc::redis

#endif  // WEFT_NET_SRC_PROTOCOLS_REDIS_REDIS_PROTOCOL_H_
