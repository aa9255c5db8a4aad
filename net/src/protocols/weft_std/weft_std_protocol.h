// weft_std: weft's framed RPC protocol with correlation ids (rpc.md), as a
// weft::rpc::Protocol. Depends on the protocol API alone (weft/rpc/*.h).
#ifndef WEFT_NET_SRC_PROTOCOLS_WEFT_STD_WEFT_STD_PROTOCOL_H_
#define WEFT_NET_SRC_PROTOCOLS_WEFT_STD_WEFT_STD_PROTOCOL_H_

#include <stdint.h>

#include <string_view>

#include "protocols/weft_std/weft_std_format.h"
#include "weft/net/input_messenger.h"
#include "weft/net/iobuf.h"
#include "weft/rpc/controller.h"
#include "weft/rpc/protocol.h"

namespace weft::rpc::weft_std {

// One frame cut from a connection: its header, the meta (request: method
// name; response: error text) and the payload.
class WeftStdMessage : public InputMessageBase {
 public:
  FrameHeader header;
  IOBuf meta;
  IOBuf payload;
};

// Protocol::parse. Cuts one frame from the front of `source`:
// - TRY_OTHERS when the first bytes (up to 4) cannot be "WFT1", unless a
//   weft_std frame was already cut from this connection (marked in its
//   protocol context slot): then ABSOLUTELY_WRONG, as rpc.md says a
//   connection that picked weft_std keeps it;
// - NOT_ENOUGH_DATA on a prefix of a frame (nothing is allocated for a
//   body that has not arrived: only the header is looked at);
// - TOO_BIG_DATA when body_size is over --weft_max_body_size (exactly it is
//   allowed); ABSOLUTELY_WRONG when meta_size > body_size, a request's
//   meta_size is 0 or over 255, or a response arrives at a server (arg
//   non-null). For these the connection (if any) is failed first with
//   EREQUEST and the reason, so the close is EREQUEST, not the messenger's
//   generic error.
// Reading fiber of the connection (or any thread with socket == nullptr).
ParseResult ParseFrame(IOBuf* source, Socket* socket, bool read_eof, const void* arg);

// Protocol::pack_request: header (correlation_id, the method as meta) +
// body. A method name of 0 or over 255 bytes fails cntl with EREQUEST and
// leaves out untouched.
void PackRequest(IOBuf* out, uint64_t correlation_id, const char* method, Controller* cntl,
                 const IOBuf& body);
// Protocol::serialize_request: weft_std sends the request bytes as they are.
void SerializeRequest(IOBuf* out, Controller* cntl, const IOBuf& request);

// A response frame: error_code 0 carries `payload` and no meta; otherwise
// the error text (ErrorText(error_code) when `error_text` is empty; cut at
// 65535 bytes) and an empty payload.
void PackResponse(IOBuf* out, uint64_t correlation_id, int error_code, std::string_view error_text,
                  const IOBuf& payload);

// Protocol::process_request: runs the request through the Server in
// msg->arg() and writes the response to the connection when the handler's
// `done` runs (any fiber or pthread). A reply for a connection that failed
// or is closing meanwhile is dropped.
void ProcessRequest(InputMessageBase* msg);

// Protocol::process_response (weft_std_client.cpp): ends the call the
// frame's correlation id names (CompleteCall); a request arriving at a
// client closes the connection (EREQUEST).
void ProcessResponse(InputMessageBase* msg);

// The weft_std Protocol struct; the rpc library's built-in registration
// registers it once under "weft_std".
Protocol MakeWeftStdProtocol();

}  // namespace weft::rpc::weft_std

#endif  // WEFT_NET_SRC_PROTOCOLS_WEFT_STD_WEFT_STD_PROTOCOL_H_
