// redis: RESP2 as a weft::rpc::Protocol (in_order, kPooled | kShort).
// Depends on the protocol API alone (weft/rpc/*.h).
//
// Server side: parse cuts commands with the connection's
// RespRequestParser and numbers them with its ReplyOrderer; process_request
// runs them one after another in request order (a pipelined SET then GET
// must see the SET, so execution, not only the replies, is ordered) through
// Server::ProcessCall under the command's lower-cased name, and replies
// through the orderer. A protocol error is answered like any command (in
// its place in the pipeline) and then closes the connection, as Redis does.
// A connection whose unwritten replies pass
// --weft_redis_client_output_limit is closed (Redis'
// client-output-buffer-limit).
//
// Client side (redis_client.cpp): one call is one RedisRequest, possibly of
// many commands; its response collects that many replies.
#ifndef WEFT_NET_SRC_PROTOCOLS_REDIS_REDIS_PROTOCOL_H_
#define WEFT_NET_SRC_PROTOCOLS_REDIS_REDIS_PROTOCOL_H_

#include <stdint.h>

#include <string>

#include "protocols/redis/resp_request_parser.h"
#include "weft/net/input_messenger.h"
#include "weft/rpc/protocol.h"

namespace weft::rpc::redis {

// One command cut from a server connection, or a protocol error in its
// place (protocol_error non-empty: the reply, then the close).
class RedisMessage : public InputMessageBase {
 public:
  RespCommand command;
  std::string protocol_error;
  uint64_t seq = 0;
};

// Protocol::parse (server side when arg is the Server, client side when
// nullptr). With socket == nullptr (tests) each call parses afresh and
// consumes nothing unless a whole command (or an error) is there.
ParseResult ParseRedis(IOBuf* source, Socket* socket, bool read_eof, const void* arg);

// Protocol::process_request: queues the command on its connection's
// executor (see above). Runs in a fiber.
void ProcessRedisRequest(InputMessageBase* msg);

// The largest unwritten output a connection may have
// (--weft_redis_client_output_limit).
int64_t client_output_limit();

// The redis Protocol struct, registered once under "redis" by the rpc
// library's built-ins.
Protocol MakeRedisProtocol();

}  // namespace weft::rpc::redis

#endif  // WEFT_NET_SRC_PROTOCOLS_REDIS_REDIS_PROTOCOL_H_
