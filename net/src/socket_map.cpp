// SocketMap: shared client connections, replaced when they fail.
#include "weft/net/socket_map.h"

#include <errno.h>

#include "weft/errno.h"

namespace weft {

SocketMap::~SocketMap() {
  std::lock_guard<std::mutex> guard(mu_);
  for (auto& kv : entries_) {
    if (kv.second.id != INVALID_SOCKET_ID) Socket::SetFailed(kv.second.id);
  }
  entries_.clear();
}

SocketMap& SocketMap::global() {
  static SocketMap* const map = new SocketMap;  // leaked: used during exit
  return *map;
}

std::string SocketMap::KeyString(const SocketMapKey& key) {
  // The endpoint's text cannot contain '\n', so the key is unambiguous.
  std::string s = key.peer.to_string();
  s.push_back('\n');
  s.append(key.tag);
  return s;
}

int SocketMap::Acquire(const SocketMapKey& key, const SocketOptions& options) {
  if (!key.peer.is_set()) {
    errno = EINVAL;
    return -1;
  }
  const std::string k = KeyString(key);
  std::lock_guard<std::mutex> guard(mu_);
  auto it = entries_.find(k);
  if (it == entries_.end()) {
    Entry e;
    e.options = options;
    e.options.fd = -1;
    e.options.remote_side = key.peer;
    it = entries_.emplace(k, std::move(e)).first;
  }
  ++it->second.users;
  return 0;
}

void SocketMap::Release(const SocketMapKey& key) {
  SocketId id = INVALID_SOCKET_ID;
  {
    std::lock_guard<std::mutex> guard(mu_);
    auto it = entries_.find(KeyString(key));
    if (it == entries_.end()) return;
    if (--it->second.users > 0) return;
    id = it->second.id;
    entries_.erase(it);
  }
  // Outside the lock: the close may run failure handlers.
  SocketUniquePtr s;
  if (id != INVALID_SOCKET_ID && Socket::Address(id, &s) == 0) {
    s->CloseGracefully(ESHUTDOWN, "%s: no user of the shared connection is left",
                       s->description().c_str());
  }
}

int SocketMap::Get(const SocketMapKey& key, SocketUniquePtr* out, SocketId* id) {
  std::lock_guard<std::mutex> guard(mu_);
  auto it = entries_.find(KeyString(key));
  if (it == entries_.end()) {
    errno = ENOENT;
    return -1;
  }
  Entry& e = it->second;
  // Address fails once the socket failed (or recycled): health is the
  // socket's own. Under the lock, so concurrent callers that all saw the
  // old socket fail replace it once.
  if (e.id == INVALID_SOCKET_ID || Socket::Address(e.id, out) != 0) {
    SocketId new_id = INVALID_SOCKET_ID;
    // fd is -1: Create neither blocks nor connects.
    if (Socket::Create(e.options, &new_id) != 0) return -1;
    if (e.id != INVALID_SOCKET_ID) ++replacements_;
    e.id = new_id;
    if (Socket::Address(new_id, out) != 0) {
      errno = EFAILEDSOCKET;
      return -1;
    }
  }
  if (id != nullptr) *id = e.id;
  return 0;
}

size_t SocketMap::size() const {
  std::lock_guard<std::mutex> guard(mu_);
  return entries_.size();
}

size_t SocketMap::replacements() const {
  std::lock_guard<std::mutex> guard(mu_);
  return replacements_;
}

}  // namespace weft
