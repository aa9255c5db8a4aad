// redis, client side: calls over a weft::rpc::Channel.
//
// Redis replies carry no correlation id, so each call carries its own
// in-band: pack_request sends "ECHO weft:<id>:<n>" before the call's n
// commands, and the reply parser, reading replies in order, takes the
// echoed header to know which call the next n replies belong to. This
// works against any Redis (ECHO is in every version) and lets calls share
// one connection (replies come in write order, and each call's bytes go out
// in one Write).
#ifndef WEFT_NET_SRC_PROTOCOLS_REDIS_REDIS_CLIENT_H_
#define WEFT_NET_SRC_PROTOCOLS_REDIS_REDIS_CLIENT_H_

#include <stddef.h>
#include <stdint.h>

#include <string>

#include "weft/net/input_messenger.h"
#include "weft/net/iobuf.h"
#include "weft/rpc/controller.h"

namespace weft::rpc::redis {

// Deepest reply nesting the client accepts (Redis' own replies nest a few
// levels; a hostile server cannot make the scanner recurse without end).
inline constexpr int kMaxReplyDepth = 32;

// The outcome of scanning one reply at the front of a byte range.
enum class ReplyScan { kOk, kNeedMore, kError };

// Scans one RESP2 reply starting at data[pos]; on kOk *end is one past it.
// kNeedMore: data holds a prefix. kError: not RESP2 (or nested deeper than
// kMaxReplyDepth, or a length over 512 MB).
ReplyScan ScanReply(const char* data, size_t size, size_t pos, int depth, size_t* end);

// The replies of one call, cut from a client connection.
class RedisReplyMessage : public InputMessageBase {
 public:
  uint64_t correlation_id = 0;
  IOBuf replies;
};

// Client side of Protocol::parse: the header reply, then the call's
// replies, as one message. Needs the connection (socket != nullptr).
ParseResult ParseReplyMessage(IOBuf* source, Socket* socket);
// Protocol::process_response: ends the call (CompleteCall).
void ProcessRedisResponse(InputMessageBase* msg);
// Protocol::serialize_request: the RedisRequest's bytes as they are.
void SerializeRedisRequest(IOBuf* out, Controller* cntl, const IOBuf& request);
// Protocol::pack_request: the header command, then the body's commands.
// A body that is not whole RESP arrays fails cntl (EREQUEST).
void PackRedisRequest(IOBuf* out, uint64_t correlation_id, const char* method, Controller* cntl,
                      const IOBuf& body);

}  // namespace weft::rpc::redis

#endif  // WEFT_NET_SRC_PROTOCOLS_REDIS_REDIS_CLIENT_H_
