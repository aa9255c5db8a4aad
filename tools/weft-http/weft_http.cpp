// weft-http: an HTTP/1.1 server on weft::rpc (issue 11):
//   weft-http [--port N] [--threads N] [--max_connections N] [--builtin_pages=false]
//             [--weft_*...]
// GET / answers the 13-byte body "Hello, world!", POST /echo echoes its
// body, and the built-in pages (/health /vars /metrics /fibers
// /connections) are on unless --builtin_pages=false. Binds 127.0.0.1;
// --port 0 picks a free port. Prints "listening on 127.0.0.1:PORT" once
// serving; SIGINT or SIGTERM stops it (exit 0). Bad flags exit 1 (gflags).
#include <errno.h>
#include <gflags/gflags.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <string>

#include "../common/serve_until_stopped.h"
#include "weft/rpc/http.h"
#include "weft/rpc/server.h"

DEFINE_int32(port, 8080, "port to listen on (127.0.0.1); 0 picks a free one");
DEFINE_int32(threads, 0, "worker threads (0: the runtime's default)");
DEFINE_bool(builtin_pages, true, "serve /health /vars /metrics /fibers /connections");
DEFINE_int32(max_connections, 0,
             "open connections at most; past it new ones are closed (0: no cap)");

int main(int argc, char** argv) {
  gflags::SetUsageMessage("weft-http [--port N] [--threads N] [--builtin_pages=false]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (argc > 1) {
    fprintf(stderr, "weft-http: unexpected argument '%s'\n", argv[1]);
    return 2;
  }
  // Before the runtime starts its workers (see BlockStopSignals).
  const sigset_t stop_signals = weft_tools::BlockStopSignals();

  weft::rpc::Server server;
  using weft::rpc::Closure;
  using weft::rpc::HttpRequest;
  using weft::rpc::HttpResponse;
  weft::rpc::AddHttpHandler(&server, "/", [](const HttpRequest&, HttpResponse* resp, Closure done) {
    resp->body.append("Hello, world!");
    done();
  });
  weft::rpc::AddHttpHandler(&server, "/echo",
                            [](const HttpRequest& req, HttpResponse* resp, Closure done) {
                              resp->content_type = "application/octet-stream";
                              resp->body.append(req.body);
                              done();
                            },
                            {"POST", "PUT"});
  weft::rpc::EnableHttpBuiltinPages(&server, FLAGS_builtin_pages);
  weft::rpc::ServerOptions opt;
  opt.num_threads = FLAGS_threads;
  opt.max_connections = FLAGS_max_connections;
  opt.protocols = {"http"};
  const std::string addr = "127.0.0.1:" + std::to_string(FLAGS_port);
  if (server.Start(addr.c_str(), &opt) != 0) {
    fprintf(stderr, "weft-http: cannot listen on %s: %s\n", addr.c_str(), strerror(errno));
    return 1;
  }
  weft_tools::ServeUntilStopped(&server, stop_signals);
  weft::rpc::RemoveHttpService(&server);
  return 0;
}
