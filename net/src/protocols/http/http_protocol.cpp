#include "protocols/http/http_protocol.h"

#include <errno.h>
#include <gflags/gflags.h>

#include <string>
#include <utility>

#include "base/time_util.h"
#include "net_log.h"
#include "weft/metrics.h"
#include "weft/rpc/errno.h"
#include "weft/rpc/server.h"

DEFINE_int64(weft_http_max_head_bytes, 64 * 1024,
             "Largest HTTP request line + headers (and chunked trailers); over it: 431");
DEFINE_int32(weft_http_max_headers, 100, "Most header fields in an HTTP request; over it: 431");

namespace weft::rpc::http {

namespace {

// Flags may be set by a test while connections parse: read them as relaxed
// atomics (a limit, not a synchronization).
template <typename T>
T LoadFlag(const T& flag) {
  return __atomic_load_n(&flag, __ATOMIC_RELAXED);
}

Counter& RequestCount() {
  static Counter* c = new Counter("http_request_count");
  return *c;
}
Counter& RefusedCount() {
  static Counter* c = new Counter("http_refused_request_count");
  return *c;
}

struct MessageDestroyer {
  void operator()(HttpMessage* m) const { m->Destroy(); }
};
using MessagePtr = std::unique_ptr<HttpMessage, MessageDestroyer>;

// Sends msg->response in msg's order, closing the connection after it when
// the request did not keep it alive (or was refused), then destroys msg
// (after the write was queued: a postponed EOF's graceful close flushes
// it).
void Reply(MessagePtr msg) {
  const bool keep_alive = msg->keep_alive && msg->error_status == 0;
  IOBuf out;
  SerializeResponse(msg->response, keep_alive, msg->request.version_minor,
                    msg->request.method == "HEAD", &out);
  // A refused write means the connection failed or is closing: the reply
  // has nowhere to go.
  msg->conn->orderer.Reply(msg->socket(), msg->seq, &out, !keep_alive);
}

void ReplyStatus(MessagePtr msg, int status, const char* detail) {
  HttpResponse& resp = msg->response;
  resp.status = status;
  resp.body.append(HttpReasonPhrase(status));
  if (detail != nullptr) {
    resp.body.append(": ");
    resp.body.append(detail);
  }
  resp.body.append("\n");
  Reply(std::move(msg));
}

bool MethodAllowed(const HttpRoute& route, const std::string& method) {
  for (const std::string& m : route.methods) {
    if (m == method || (method == "HEAD" && m == "GET")) return true;
  }
  return false;
}

std::string AllowField(const HttpRoute& route) {
  std::string allow;
  bool get = false, head = false;
  for (const std::string& m : route.methods) {
    if (!allow.empty()) allow += ", ";
    allow += m;
    get = get || m == "GET";
    head = head || m == "HEAD";
  }
  if (get && !head) allow += ", HEAD";
  return allow;
}

// Moves a completed request out of the parser into a new message (its
// strings and fields are moved, not copied; the parser is Reset() next).
HttpMessage* TakeRequest(HttpRequestParser* parser) {
  auto* msg = new HttpMessage;
  HttpRequestHead& head = parser->mutable_head();
  HttpRequest& req = msg->request;
  req.method = std::move(head.method);
  std::string_view target(head.target);
  if (target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0) {
    // absolute-form: the path starts after the authority.
    const size_t start = target.find("//") + 2;
    const size_t slash = target.find('/', start);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  const size_t q = target.find('?');
  if (q == std::string_view::npos && target.size() == head.target.size()) {
    req.path = std::move(head.target);  // origin-form without a query: all of it
  } else {
    req.path.assign(target.substr(0, q));
    if (q != std::string_view::npos) req.query.assign(target.substr(q + 1));
  }
  req.version_minor = head.version_minor;
  req.headers = std::move(head.headers);
  if (!parser->body().empty()) req.body.swap(parser->body());
  msg->keep_alive = head.keep_alive;
  return msg;
}

// A connection's own owner of the server's current service (see
// HttpConnection::service); nullptr when the server has none.
std::shared_ptr<const HttpService> ConnectionService(const Server* server) {
  std::shared_ptr<const HttpService> shared = FindService(server);
  if (shared == nullptr) return nullptr;
  auto owner = std::make_shared<const std::shared_ptr<const HttpService>>(std::move(shared));
  const HttpService* const service = owner->get();
  // Aliasing: points at the service, counts on owner's block.
  return std::shared_ptr<const HttpService>(std::move(owner), service);
}

}  // namespace

HttpParseLimits CurrentLimits() {
  HttpParseLimits l;
  const int64_t head = LoadFlag(FLAGS_weft_http_max_head_bytes);
  const int32_t nh = LoadFlag(FLAGS_weft_http_max_headers);
  const int64_t body = max_body_size();
  l.max_head_bytes = head > 0 ? static_cast<size_t>(head) : 0;
  l.max_headers = nh > 0 ? static_cast<size_t>(nh) : 0;
  l.max_body_bytes = body > 0 ? static_cast<uint64_t>(body) : 0;
  return l;
}

ParseResult ParseHttp(IOBuf* source, Socket* socket, bool read_eof, const void* arg) {
  (void)read_eof;  // a request never ends with the connection
  // Server side only: a client's connections (arg nullptr) carry no HTTP.
  if (arg == nullptr) return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
  if (socket == nullptr) {
    // No connection to keep state in: parse a copy from the start, cut
    // only a whole request (or a refusal, which consumes everything).
    HttpRequestParser parser(CurrentLimits());
    IOBuf copy(*source);
    switch (parser.Feed(&copy)) {
      case HttpRequestParser::kNeedMore:
        return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
      case HttpRequestParser::kNotHttp:
        return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
      case HttpRequestParser::kError: {
        auto* msg = new HttpMessage;
        msg->error_status = parser.error_status();
        msg->why = parser.why();
        msg->keep_alive = false;
        source->clear();
        return ParseResult::Ok(msg);
      }
      case HttpRequestParser::kDone:
        source->swap(copy);
        return ParseResult::Ok(TakeRequest(&parser));
    }
    return ParseResult::Error(PARSE_ERROR_ABSOLUTELY_WRONG, "http: parser state");
  }
  HttpConnection* conn = AsHttpConnection(socket->context(SocketContextSlot::kProtocol));
  if (conn == nullptr) {
    if (socket->context(SocketContextSlot::kProtocol) != nullptr) {
      return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);  // another protocol's connection
    }
    // Only bytes that can begin a request get a connection state.
    HttpRequestParser probe(HttpParseLimits{});
    IOBuf copy(*source);
    if (probe.Feed(&copy) == HttpRequestParser::kNotHttp) {
      return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
    }
    auto* fresh = new HttpConnection(CurrentLimits(), base::coarse_monotonic_ns() / 1000);
    conn = AsHttpConnection(socket->InitContext(fresh));
    if (conn == nullptr) return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
  }
  if (conn->discarding) {
    // The connection closes after an earlier reply; what follows is dropped.
    if (source->empty()) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
    source->clear();
    return ParseResult::Ok(nullptr);
  }
  HttpMessage* msg = nullptr;
  switch (conn->parser.Feed(source)) {
    case HttpRequestParser::kNeedMore:
      return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
    case HttpRequestParser::kNotHttp:
      return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
    case HttpRequestParser::kError:
      msg = new HttpMessage;
      msg->error_status = conn->parser.error_status();
      msg->why = conn->parser.why();
      msg->keep_alive = false;
      conn->discarding = true;
      // The rest of the read is not a request: it is dropped with the
      // connection, which closes once the refusal is written.
      source->clear();
      WEFT_NET_WARN("close %s: http: %d %s", socket->description().c_str(), msg->error_status,
                    msg->why);
      break;
    case HttpRequestParser::kDone:
      msg = TakeRequest(&conn->parser);
      conn->parser.Reset();
      if (!msg->keep_alive) conn->discarding = true;
      break;
  }
  // The service is looked up here, in the connection's reading fiber, so
  // the cache in conn needs no lock.
  const uint64_t gen = ServiceGeneration();
  if (gen != conn->service_generation) {
    conn->service = ConnectionService(static_cast<const Server*>(arg));
    conn->service_generation = gen;
  }
  msg->service = conn->service;
  msg->conn = conn;
  // Numbered in arrival order: ProcessHttpRequest's replies leave in it.
  msg->seq = conn->orderer.NextSequence();
  return ParseResult::Ok(msg);
}

void ProcessHttpRequest(InputMessageBase* base) {
  MessagePtr msg(static_cast<HttpMessage*>(base));
  if (msg->conn == nullptr) return;  // cut without a connection: nothing to answer on
  RequestCount().add(1);
  if (msg->error_status != 0) {
    RefusedCount().add(1);
    const int status = msg->error_status;
    const char* why = msg->why;
    ReplyStatus(std::move(msg), status, why);
    return;
  }
  auto* const server = static_cast<Server*>(const_cast<void*>(msg->arg()));
  if (!server->IsRunning()) {
    msg->keep_alive = false;
    ReplyStatus(std::move(msg), 503, "the server is stopping");
    return;
  }
  HttpRequest& req = msg->request;
  req.remote_side = msg->socket()->remote_side();
  // Moved, not copied: one count change fewer per request, and done may
  // free the message while the handler still runs inside the route.
  const std::shared_ptr<const HttpService> keep = std::move(msg->service);
  const HttpService* const service = keep.get();
  if (service != nullptr) {
    auto it = service->routes.find(req.path);
    if (it != service->routes.end()) {
      const HttpRoute& route = it->second;
      if (!MethodAllowed(route, req.method)) {
        HttpResponse& resp = msg->response;
        resp.status = 405;
        resp.headers.emplace_back("Allow", AllowField(route));
        resp.body.append("Method Not Allowed\n");
        Reply(std::move(msg));
        return;
      }
      // The handler's done owns the message, and with it the request and
      // the response. The route belongs to the service, which `keep` holds
      // until the handler returns: done may run inside it and free the
      // message.
      HttpMessage* const raw = msg.get();
      route.handler(raw->request, &raw->response,
                    Closure([msg = std::move(msg)]() mutable { Reply(std::move(msg)); }));
      return;
    }
  }
  if (BuiltinPagesEnabled(service) && (req.method == "GET" || req.method == "HEAD")) {
    if (ServeBuiltinPage(server, req, &msg->response)) {
      Reply(std::move(msg));
      return;
    }
  }
  ReplyStatus(std::move(msg), 404, nullptr);
}

Protocol MakeHttpProtocol() {
  Protocol p;
  p.parse = ParseHttp;
  p.process_request = ProcessHttpRequest;
  p.supported_connection_types = kPooled | kShort;
  p.in_order = true;
  p.name = "http";
  return p;
}

}  // namespace weft::rpc::http
