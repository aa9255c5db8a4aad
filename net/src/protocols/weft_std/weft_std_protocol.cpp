#include "protocols/weft_std/weft_std_protocol.h"

#include <string.h>

#include <memory>
#include <string>

#include "weft/rpc/errno.h"
#include "weft/rpc/server.h"

namespace weft::rpc::weft_std {

namespace {

// The message is owned by whoever holds this; Destroy() (not delete) ends
// it, which lets the connection's postponed EOF go.
struct MessageDestroyer {
  void operator()(WeftStdMessage* m) const { m->Destroy(); }
};
using MessagePtr = std::unique_ptr<WeftStdMessage, MessageDestroyer>;

// The mark a connection gets in its protocol context slot once a weft_std
// frame was cut from it: "a connection that picked weft_std keeps it"
// (rpc.md), so a later frame that does not start with WFT1 closes it
// instead of being offered to the server's other protocols. Owned and
// deleted by the socket.
class WeftStdConnection : public SocketContext {};

bool PickedWeftStd(const Socket* socket) {
  return socket != nullptr && dynamic_cast<const WeftStdConnection*>(socket->context()) != nullptr;
}

// A bad frame: the connection closes with EREQUEST and `why` (the messenger
// then logs `why` and its own SetFailed finds the socket already failed).
ParseResult BadFrame(Socket* socket, ParseError err, const char* why) {
  if (socket != nullptr) {
    socket->SetFailed(EREQUEST, "close %s: weft_std: %s", socket->description().c_str(), why);
  }
  return ParseResult::Error(err, why);
}

// One request from read to reply. Heap-allocated; the handler's done owns
// it (through the Closure), so it lives exactly until the reply is queued.
struct ServerCall {
  MessagePtr msg;
  Controller cntl;
  IOBuf response;
};

void SendResponse(std::unique_ptr<ServerCall> call) {
  WeftStdMessage* const msg = call->msg.get();
  IOBuf frame;
  const Controller& cntl = call->cntl;
  PackResponse(&frame, msg->header.correlation_id, cntl.ErrorCode(), cntl.ErrorText(),
               call->response);
  // A connection that failed (a bad frame after this request) or is
  // closing refuses the write: the reply is dropped, as rpc.md says.
  msg->socket()->Write(&frame);
  // ~ServerCall destroys the message after the write is queued, so a
  // postponed EOF's graceful close comes after (and flushes) the reply.
}

}  // namespace

ParseResult ParseFrame(IOBuf* source, Socket* socket, bool read_eof, const void* arg) {
  const size_t n = source->size();
  char hbuf[kHeaderSize];
  const size_t have = n < kHeaderSize ? n : kHeaderSize;
  source->copy_to(hbuf, have, 0);
  const size_t magic_have = have < sizeof(kMagic) ? have : sizeof(kMagic);
  if (memcmp(hbuf, kMagic, magic_have) != 0) {
    if (PickedWeftStd(socket)) {
      return BadFrame(socket, PARSE_ERROR_ABSOLUTELY_WRONG,
                      "a frame without WFT1 on a weft_std connection");
    }
    return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
  }
  if (have < kHeaderSize) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  const FrameHeader h = DecodeHeader(hbuf);
  // Checked on the header alone, before waiting for (or holding) the body.
  if (static_cast<int64_t>(h.body_size) > max_body_size()) {
    return BadFrame(socket, PARSE_ERROR_TOO_BIG_DATA, "body_size over --weft_max_body_size");
  }
  if (h.meta_size > h.body_size) {
    return BadFrame(socket, PARSE_ERROR_ABSOLUTELY_WRONG, "meta_size over body_size");
  }
  if (!h.is_response()) {
    if (h.meta_size == 0) {
      return BadFrame(socket, PARSE_ERROR_ABSOLUTELY_WRONG, "a request without a method name");
    }
    if (h.meta_size > kMaxMethodSize) {
      return BadFrame(socket, PARSE_ERROR_ABSOLUTELY_WRONG,
                      "a request's method name over 255 bytes");
    }
  } else if (arg != nullptr) {
    // On a server's connections arg is the Server (protocol.h).
    return BadFrame(socket, PARSE_ERROR_ABSOLUTELY_WRONG, "a response arrived at a server");
  }
  if (n < kHeaderSize + h.body_size) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  // Only the connection's reading fiber parses, so the first frame marks
  // it once; context() is an acquire load, cheap on later frames.
  if (socket != nullptr && socket->context() == nullptr) {
    socket->InitContext(new WeftStdConnection);
  }
  auto* msg = new WeftStdMessage;
  msg->header = h;
  source->pop_front(kHeaderSize);
  source->cutn(&msg->meta, h.meta_size);
  source->cutn(&msg->payload, h.body_size - h.meta_size);
  return ParseResult::Ok(msg);
}

void SerializeRequest(IOBuf* out, Controller* cntl, const IOBuf& request) { out->append(request); }

void PackRequest(IOBuf* out, uint64_t correlation_id, const char* method, Controller* cntl,
                 const IOBuf& body) {
  const size_t method_size = method != nullptr ? strlen(method) : 0;
  if (method_size == 0 || method_size > kMaxMethodSize) {
    if (cntl != nullptr) cntl->SetFailed(EREQUEST, "weft_std: a method name is 1..255 bytes");
    return;
  }
  FrameHeader h;
  h.body_size = static_cast<uint32_t>(method_size + body.size());
  h.correlation_id = correlation_id;
  h.meta_size = static_cast<uint16_t>(method_size);
  // Header and method in one append (one copy into the IOBuf's block).
  char head[kHeaderSize + kMaxMethodSize];
  EncodeHeader(h, head);
  memcpy(head + kHeaderSize, method, method_size);
  out->append(head, kHeaderSize + method_size);
  out->append(body);
}

void PackResponse(IOBuf* out, uint64_t correlation_id, int error_code, std::string_view error_text,
                  const IOBuf& payload) {
  FrameHeader h;
  h.correlation_id = correlation_id;
  h.flags = kFlagResponse;
  h.error_code = error_code;
  std::string_view meta;
  if (error_code != 0) {
    meta = error_text.empty() ? std::string_view(rpc::ErrorText(error_code)) : error_text;
    if (meta.size() > 0xffff) meta = meta.substr(0, 0xffff);
    h.meta_size = static_cast<uint16_t>(meta.size());
    h.body_size = static_cast<uint32_t>(meta.size());
  } else {
    h.body_size = static_cast<uint32_t>(payload.size());
  }
  char hbuf[kHeaderSize];
  EncodeHeader(h, hbuf);
  out->append(hbuf, sizeof(hbuf));
  if (error_code != 0) {
    out->append(meta);
  } else {
    out->append(payload);
  }
}

void ProcessRequest(InputMessageBase* base) {
  auto call = std::make_unique<ServerCall>();
  call->msg.reset(static_cast<WeftStdMessage*>(base));
  WeftStdMessage* const msg = call->msg.get();
  // On a server's connections the handler arg is the Server (protocol.h);
  // parse refused responses there already.
  Server* const server = static_cast<Server*>(const_cast<void*>(msg->arg()));
  call->cntl.set_remote_side(msg->socket()->remote_side());
  const std::string method = msg->meta.to_string();
  Controller* const cntl = &call->cntl;
  IOBuf* const response = &call->response;
  const IOBuf& request = msg->payload;
  const int64_t received_us = msg->received_us();
  // The ServerCall moves into the Closure; the pointers above stay valid
  // (it is on the heap) until done runs and frees it.
  server->ProcessCall(
      method, cntl, request, response, received_us,
      Closure([call = std::move(call)]() mutable { SendResponse(std::move(call)); }));
}

Protocol MakeWeftStdProtocol() {
  Protocol p;
  p.parse = ParseFrame;
  p.process_request = ProcessRequest;
  p.process_response = ProcessResponse;
  p.serialize_request = SerializeRequest;
  p.pack_request = PackRequest;
  p.supported_connection_types = kSingle | kPooled | kShort;
  p.in_order = false;
  p.name = "weft_std";
  return p;
}

}  // namespace weft::rpc::weft_std
