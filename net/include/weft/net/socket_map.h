// weft/net/socket_map.h: one shared client connection per (server, tag).
//
// What "single" connections need: every caller of the process that talks
// to the same server with the same protocol shares one connection, and a
// connection that failed is replaced by the next caller who asks for it. A
// SocketMap entry is keyed by (remote endpoint, tag: the protocol's name,
// plus anything else that must not share a connection), refcounted by its
// users (Acquire / Release), and remembers the SocketOptions its sockets are
// created with.
//
// Health is the socket's: Get hands out the entry's socket while it has not
// failed, and creates a new one (which connects on its first write) once it
// has. A caller whose call timed out does not mark the connection bad.
//
// Fast path for callers: keep the SocketId that Get returned and Address it
// per call; only when Address fails (the connection failed) ask Get again.
// Get takes the map's mutex (a plain mutex held for a few instructions and
// never across a suspension; creating a socket does not connect).
#ifndef WEFT_NET_SOCKET_MAP_H_
#define WEFT_NET_SOCKET_MAP_H_

#include <stddef.h>

#include <mutex>
#include <string>
#include <unordered_map>

#include "weft/net/endpoint.h"
#include "weft/net/socket.h"

namespace weft {

struct SocketMapKey {
  EndPoint peer;
  std::string tag;
};

class SocketMap {
 public:
  SocketMap() = default;
  // Fails the sockets of entries still acquired.
  ~SocketMap();
  SocketMap(const SocketMap&) = delete;
  SocketMap& operator=(const SocketMap&) = delete;

  // The process-wide map (never destroyed: it may be used during exit).
  static SocketMap& global();

  // Adds a user of key's entry, creating the entry with `options` (its
  // remote_side is replaced by key.peer and its fd ignored: the sockets
  // connect on first write). A later Acquire of an existing entry keeps the
  // first options. Returns 0, or -1 with errno EINVAL (key.peer unset).
  // Any thread; does not suspend.
  int Acquire(const SocketMapKey& key, const SocketOptions& options);
  // Drops a user. The last one removes the entry and closes its connection
  // gracefully (ESHUTDOWN): writes already accepted still go out, and
  // pending written ids hear the close. Unknown keys are ignored.
  void Release(const SocketMapKey& key);

  // The entry's connection: its current socket unless that failed, else a
  // new socket that replaces it. Returns 0 with *out (and *id, if not null)
  // set, or -1 with errno: ENOENT (not acquired) or Socket::Create's error.
  // Any thread; does not suspend.
  int Get(const SocketMapKey& key, SocketUniquePtr* out, SocketId* id = nullptr);

  // Entries (acquired keys).
  size_t size() const;
  // Sockets created by Get to replace failed ones, over the map's life
  // (tests, diagnostics).
  size_t replacements() const;

 private:
  struct Entry {
    SocketOptions options;
    SocketId id = INVALID_SOCKET_ID;
    int users = 0;
  };
  static std::string KeyString(const SocketMapKey& key);

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // guarded by mu_
  size_t replacements_ = 0;                          // guarded by mu_
};

}  // namespace weft

#endif  // WEFT_NET_SOCKET_MAP_H_
