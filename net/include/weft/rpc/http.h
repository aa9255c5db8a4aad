// weft/rpc/http.h: HTTP/1.1 on a weft::rpc::Server.
//
//   weft::rpc::Server server;
//   weft::rpc::AddHttpHandler(&server, "/", [](const weft::rpc::HttpRequest&,
//                                              weft::rpc::HttpResponse* resp,
//                                              weft::rpc::Closure done) {
//     resp->body.append("Hello, world!");
//     done();
//   });
//   weft::rpc::EnableHttpBuiltinPages(&server);   // /health /vars /metrics ...
//   server.Start("127.0.0.1:0", nullptr);
//
// "http" is a built-in protocol (in_order: pipelined requests are answered
// in request order), so every Server whose ServerOptions::protocols is
// empty or names "http" speaks it on its port next to weft_std: each
// connection's first bytes pick the protocol. Handlers are kept per Server
// in a registry of this library (the Server itself knows no protocol);
// RemoveHttpService drops a Server's entry.
//
// Requests the parser refuses are answered and the connection closed: 400
// (malformed, including a bad or conflicting Content-Length), 413 (a body
// over --weft_max_body_size, decided from the headers before the body is
// read), 431 (a head over --weft_http_max_head_bytes or more headers than
// --weft_http_max_headers), 501 (a Transfer-Encoding other than chunked),
// 505 (not HTTP/1.0 or 1.1). A path with no handler is 404, a method the
// handler does not take 405 (with Allow), a Server stopping 503. A partial
// request not completed within --weft_read_timeout_ms closes its connection.
#ifndef WEFT_RPC_HTTP_H_
#define WEFT_RPC_HTTP_H_

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "weft/net/endpoint.h"
#include "weft/net/iobuf.h"
#include "weft/rpc/closure.h"

namespace weft::rpc {

class Server;

struct HttpRequest {
  std::string method;     // "GET", as sent
  std::string path;       // the target before '?', e.g. "/vars"
  std::string query;      // after '?', without it; empty if none
  int version_minor = 1;  // HTTP/1.<version_minor>
  // Fields in arrival order, names as sent.
  std::vector<std::pair<std::string, std::string>> headers;
  IOBuf body;  // decoded (a chunked body's chunks joined)
  EndPoint remote_side;

  // The value of the first field named `name` (case-insensitive), or
  // nullptr.
  const std::string* header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain";
  // Extra fields; Content-Length and Connection are written by the server.
  std::vector<std::pair<std::string, std::string>> headers;
  IOBuf body;  // not sent for HEAD (its length is)
};

// Fill *resp and call done, once, now or later from any fiber or pthread.
// req and resp stay valid until done runs. Runs in a fiber; requests of one
// connection may run in parallel (their replies still leave in order).
using HttpHandler = std::function<void(const HttpRequest& req, HttpResponse* resp, Closure done)>;

// Serves `path` (exact match, starting with '/') on `server` with handler,
// for `methods` (HEAD is implied by GET). Any time, also while serving
// (connections see it from their next request). 0, or -1 with errno:
// EINVAL (bad path, no handler, no method), EEXIST (path taken). Any
// thread; never suspends.
int AddHttpHandler(Server* server, std::string path, HttpHandler handler,
                   std::vector<std::string> methods = {"GET"});

// Turns the built-in pages on (or off) for `server`: /health, /vars (every
// metric as "name : value"), /metrics (Prometheus text), /fibers (the live
// fiber dump), /connections (one line per connection: remote side,
// protocol, bytes in/out, age). A Server never configured follows
// --weft_http_builtin_pages (default false; weft's tools turn the pages on).
// Handlers added for the same paths win. Any thread; never suspends.
void EnableHttpBuiltinPages(Server* server, bool enable = true);

// Forgets server's handlers and page setting (call after Join, before the
// Server is destroyed, if another Server may be created at its address).
// Any thread.
void RemoveHttpService(const Server* server);

}  // namespace weft::rpc

#endif  // WEFT_RPC_HTTP_H_
