// The HTTP handlers of each Server (weft/rpc/http.h), and the built-in
// status pages.
//
// The registry maps a Server* to an immutable HttpService; every change
// publishes a new copy under the registry mutex and bumps a generation
// counter, so a connection re-fetches its service (one mutex hold) only
// after a change and otherwise pays one atomic load per request.
#ifndef WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_SERVICE_H_
#define WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_SERVICE_H_

#include <stdint.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "weft/rpc/http.h"

namespace weft::rpc {
class Server;
}

namespace weft::rpc::http {

struct HttpRoute {
  HttpHandler handler;
  std::vector<std::string> methods;  // GET implies HEAD
};

struct HttpService {
  std::map<std::string, HttpRoute, std::less<>> routes;
  // -1: follow --weft_http_builtin_pages; 0 / 1: EnableHttpBuiltinPages.
  int builtin_pages = -1;
};

// The registry's generation: changes whenever any Server's service does.
// Acquire: pairs with the release increment after a new service is
// published, so a reader seeing the new generation finds the new service.
uint64_t ServiceGeneration();
// server's service, or nullptr when it has none. Any thread.
std::shared_ptr<const HttpService> FindService(const Server* server);

// Whether the pages are on for a Server with this service (nullptr: none).
bool BuiltinPagesEnabled(const HttpService* service);
// Fills *resp when req.path names a built-in page and returns true; false
// (resp untouched) otherwise. Only GET / HEAD reach it.
bool ServeBuiltinPage(const Server* server, const HttpRequest& req, HttpResponse* resp);
// The text of /connections for server.
std::string DescribeConnections(const Server* server);

}  // namespace weft::rpc::http

#endif  // WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_SERVICE_H_
