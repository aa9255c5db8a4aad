#include "protocols/http/http_service.h"

#include <errno.h>
#include <gflags/gflags.h>
#include <stdio.h>

#include <atomic>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "base/time_util.h"
#include "protocols/http/http_parser.h"
#include "protocols/http/http_protocol.h"
#include "weft/fiber_dump.h"
#include "weft/metrics.h"
#include "weft/net/socket.h"
#include "weft/rpc/protocol.h"
#include "weft/rpc/server.h"

DEFINE_bool(weft_http_builtin_pages, false,
            "Serve /health /vars /metrics /fibers /connections on Servers that speak http "
            "and did not call EnableHttpBuiltinPages");

namespace weft::rpc {

namespace http {
namespace {

struct Registry {
  std::mutex mu;
  std::unordered_map<const Server*, std::shared_ptr<const HttpService>> services;  // guarded by mu
  std::atomic<uint64_t> generation{1};
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: used by exiting fibers
  return *r;
}

// Replaces server's service with edit(copy of the old one). edit returns an
// errno, or 0 to publish.
template <typename F>
int EditService(const Server* server, F&& edit) {
  Registry& r = registry();
  std::lock_guard<std::mutex> guard(r.mu);
  auto it = r.services.find(server);
  auto next = it != r.services.end() ? std::make_shared<HttpService>(*it->second)
                                     : std::make_shared<HttpService>();
  const int err = edit(next.get());
  if (err != 0) return err;
  r.services[server] = std::move(next);
  // Release: pairs with the acquire in ServiceGeneration (a parse that sees
  // the new number and then locks mu finds the new service anyway; the
  // order only matters for the lock-free check).
  r.generation.fetch_add(1, std::memory_order_release);
  return 0;
}

// The protocols other than http a Server speaks (what its non-http
// connections use), "a|b" when several.
std::string OtherProtocols(const Server* server) {
  std::vector<std::string> names;
  if (server->options().protocols.empty()) {
    for (const Protocol* p : ListProtocols()) {
      if (p->process_request != nullptr) names.emplace_back(p->name);
    }
  } else {
    names = server->options().protocols;
  }
  std::string out;
  for (const std::string& n : names) {
    if (n == "http") continue;
    if (!out.empty()) out += '|';
    out += n;
  }
  return out.empty() ? "?" : out;
}

}  // namespace

uint64_t ServiceGeneration() { return registry().generation.load(std::memory_order_acquire); }

std::shared_ptr<const HttpService> FindService(const Server* server) {
  Registry& r = registry();
  std::lock_guard<std::mutex> guard(r.mu);
  auto it = r.services.find(server);
  return it != r.services.end() ? it->second : nullptr;
}

bool BuiltinPagesEnabled(const HttpService* service) {
  if (service != nullptr && service->builtin_pages >= 0) return service->builtin_pages != 0;
  return FLAGS_weft_http_builtin_pages;
}

std::string DescribeConnections(const Server* server) {
  std::vector<SocketId> ids;
  server->ListConnections(&ids);
  const std::string others = OtherProtocols(server);
  const int64_t now_us = base::coarse_monotonic_ns() / 1000;
  std::string out;
  char line[256];
  for (const SocketId id : ids) {
    SocketUniquePtr s;
    if (Socket::Address(id, &s) != 0) continue;  // closing: not listed
    // The context is alive while s is held; its type says which protocol
    // owns the connection (only http keeps one here).
    const HttpConnection* hc = AsHttpConnection(s->context(SocketContextSlot::kProtocol));
    char age[32];
    if (hc != nullptr) {
      snprintf(age, sizeof(age), "%.3fs", static_cast<double>(now_us - hc->created_us) / 1e6);
    } else {
      snprintf(age, sizeof(age), "?");
    }
    const int64_t idle_us = now_us - s->last_active_us();
    snprintf(line, sizeof(line), "%s protocol=%s in=%lld out=%lld age=%s idle=%.3fs\n",
             s->remote_side().to_string().c_str(), hc != nullptr ? "http" : others.c_str(),
             static_cast<long long>(s->in_bytes()), static_cast<long long>(s->out_bytes()), age,
             static_cast<double>(idle_us > 0 ? idle_us : 0) / 1e6);
    out += line;
  }
  snprintf(line, sizeof(line), "%zu connections\n", ids.size());
  out += line;
  return out;
}

bool ServeBuiltinPage(const Server* server, const HttpRequest& req, HttpResponse* resp) {
  const std::string& p = req.path;
  if (p == "/health") {
    resp->body.append("OK\n");
  } else if (p == "/vars") {
    std::ostringstream os;
    dump_metrics(os);
    resp->body.append(os.str());
  } else if (p == "/metrics") {
    std::ostringstream os;
    dump_metrics_prometheus(os);
    resp->content_type = "text/plain; version=0.0.4";
    resp->body.append(os.str());
  } else if (p == "/fibers") {
    std::ostringstream os;
    dump_fibers(os);
    resp->body.append(os.str());
  } else if (p == "/connections") {
    resp->body.append(DescribeConnections(server));
  } else {
    return false;
  }
  return true;
}

}  // namespace http

const std::string* HttpRequest::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (http::EqualsIgnoreCase(h.first, name)) return &h.second;
  }
  return nullptr;
}

int AddHttpHandler(Server* server, std::string path, HttpHandler handler,
                   std::vector<std::string> methods) {
  if (server == nullptr || path.empty() || path[0] != '/' || !handler || methods.empty()) {
    errno = EINVAL;
    return -1;
  }
  const int err = http::EditService(server, [&](http::HttpService* s) {
    if (s->routes.count(path) != 0) return EEXIST;
    s->routes.emplace(std::move(path), http::HttpRoute{std::move(handler), std::move(methods)});
    return 0;
  });
  if (err != 0) {
    errno = err;
    return -1;
  }
  return 0;
}

void EnableHttpBuiltinPages(Server* server, bool enable) {
  if (server == nullptr) return;
  http::EditService(server, [&](http::HttpService* s) {
    s->builtin_pages = enable ? 1 : 0;
    return 0;
  });
}

void RemoveHttpService(const Server* server) {
  http::Registry& r = http::registry();
  std::lock_guard<std::mutex> guard(r.mu);
  if (r.services.erase(server) != 0) r.generation.fetch_add(1, std::memory_order_release);
}

}  // namespace weft::rpc
