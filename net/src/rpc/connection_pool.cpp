// The pooled connections' idle lists.
#include "connection_pool.h"

#include <errno.h>
#include <gflags/gflags.h>

#include <mutex>
#include <unordered_map>
#include <vector>

#include "weft/errno.h"

DEFINE_int32(weft_max_connection_pool_size, 100,
             "Idle connections a pooled Channel keeps per server; more are closed when returned");

namespace weft::rpc::internal {

namespace {
// Idle ids per key, newest last (taken newest first: a warm connection,
// and the oldest idle ones are the ones that age out). A plain mutex held
// for a few instructions, never across a suspension.
std::mutex g_pool_mu;
std::unordered_map<std::string, std::vector<SocketId>>& pools() {
  static auto* m = new std::unordered_map<std::string, std::vector<SocketId>>;  // leaked
  return *m;
}
}  // namespace

int TakePooledSocket(const std::string& key, const SocketOptions& options, SocketUniquePtr* out) {
  for (;;) {
    SocketId id = INVALID_SOCKET_ID;
    {
      std::lock_guard<std::mutex> guard(g_pool_mu);
      std::vector<SocketId>& idle = pools()[key];
      if (idle.empty()) break;
      id = idle.back();
      idle.pop_back();
    }
    // An idle connection the server closed (an idle timeout) failed on its
    // EOF: skip it.
    if (Socket::Address(id, out) == 0 && !(*out)->closing()) return 0;
    out->reset();
  }
  SocketId id;
  if (Socket::Create(options, &id) != 0) return -1;
  if (Socket::Address(id, out) != 0) {
    errno = EFAILEDSOCKET;
    return -1;
  }
  return 0;
}

void ReturnPooledSocket(const std::string& key, SocketUniquePtr s) {
  if (s == nullptr || s->Failed() || s->closing()) return;
  {
    std::lock_guard<std::mutex> guard(g_pool_mu);
    std::vector<SocketId>& idle = pools()[key];
    if (idle.size() < static_cast<size_t>(FLAGS_weft_max_connection_pool_size)) {
      idle.push_back(s->id());
      return;
    }
  }
  s->CloseGracefully(ESHUTDOWN, "%s: the connection pool is full", s->description().c_str());
}

size_t PooledSocketCount(const std::string& key) {
  std::lock_guard<std::mutex> guard(g_pool_mu);
  auto it = pools().find(key);
  return it == pools().end() ? 0 : it->second.size();
}

}  // namespace weft::rpc::internal
