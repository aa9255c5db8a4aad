// http: HTTP/1.1 server side as a weft::rpc::Protocol (in_order, pooled or
// short connections). Depends on the protocol API alone (weft/rpc/*.h).
#ifndef WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_PROTOCOL_H_
#define WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_PROTOCOL_H_

#include <stdint.h>

#include <memory>
#include <typeinfo>

#include "protocols/http/http_parser.h"
#include "protocols/http/http_response.h"
#include "protocols/http/http_service.h"
#include "weft/net/input_messenger.h"
#include "weft/net/iobuf.h"
#include "weft/net/socket.h"
#include "weft/rpc/http.h"
#include "weft/rpc/protocol.h"
#include "weft/rpc/reply_orderer.h"

namespace weft::rpc::http {

// One HTTP connection's state, in the socket's kProtocol slot (the socket
// deletes it at recycle). final: AsHttpConnection tells it from another
// protocol's context by its exact type.
struct HttpConnection final : public SocketContext {
  explicit HttpConnection(const HttpParseLimits& limits, int64_t now_us)
      : parser(limits), created_us(now_us) {}

  // Reading fiber only (parse runs one at a time per connection).
  HttpRequestParser parser;
  // A request refused or asking to close was cut: bytes after it are
  // dropped (its reply closes the connection). Reading fiber only.
  bool discarding = false;
  // The service last looked up and the registry generation it came from.
  // Reading fiber only. Its control block is this connection's own (it
  // holds the registry's pointer), so the count changes of each request's
  // copy stay on this connection's line instead of bouncing one line
  // shared by every connection of the server between workers.
  std::shared_ptr<const HttpService> service;
  uint64_t service_generation = 0;
  // Replies in request order; any fiber (see reply_orderer.h).
  ReplyOrderer orderer;
  // When the connection's first bytes were parsed (coarse CLOCK_MONOTONIC
  // µs); immutable, read by /connections.
  const int64_t created_us;
};

// conn's HttpConnection when its kProtocol slot holds one; nullptr when the
// slot is empty or another protocol's. A vtable load and a pointer compare
// (the exact type of a final class) instead of a dynamic_cast per parse;
// where type_info objects are not merged (several shared objects) the
// names are compared, still exact. Any thread holding a reference.
inline HttpConnection* AsHttpConnection(SocketContext* ctx) {
  if (ctx == nullptr || typeid(*ctx) != typeid(HttpConnection)) return nullptr;
  return static_cast<HttpConnection*>(ctx);
}

// One request (or one refusal) cut from a connection, with its response:
// one allocation per request for both.
class HttpMessage : public InputMessageBase {
 public:
  uint64_t seq = 0;
  // 0: a request to run; else the status to answer before closing.
  int error_status = 0;
  const char* why = nullptr;
  bool keep_alive = true;
  HttpRequest request;
  // What the handler fills (it is given &response) and Reply sends.
  HttpResponse response;
  // nullptr when parse ran without a connection (tests).
  HttpConnection* conn = nullptr;
  // The service the request is routed by (see HttpConnection::service);
  // ProcessHttpRequest moves it out before running the handler.
  std::shared_ptr<const HttpService> service;
};

// The limits from the flags (--weft_http_max_head_bytes,
// --weft_http_max_headers, --weft_max_body_size). Any thread.
HttpParseLimits CurrentLimits();

// Protocol::parse. On a connection: resumable (HttpConnection); with
// socket == nullptr: parses `source` from its start each call and cuts only
// a complete request (tests, fuzzing). TRY_OTHERS when the first bytes
// cannot begin a request (or arg is nullptr: no client side); a malformed
// request is PARSE_OK with an HttpMessage whose error_status is set (it is
// answered, then the connection closes), never a parse error, so the
// client hears why.
ParseResult ParseHttp(IOBuf* source, Socket* socket, bool read_eof, const void* arg);

// Protocol::process_request: routes the request (handlers, built-in pages,
// 404/405/503) and replies in order through the connection's ReplyOrderer.
void ProcessHttpRequest(InputMessageBase* msg);

// The Protocol struct registered under "http".
Protocol MakeHttpProtocol();

}  // namespace weft::rpc::http

#endif  // WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_PROTOCOL_H_
