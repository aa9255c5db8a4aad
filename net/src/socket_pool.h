// Internal: the pool sockets live in, and the versioned-reference encoding.
#ifndef WEFT_NET_SOCKET_POOL_H_
#define WEFT_NET_SOCKET_POOL_H_

#include <stdint.h>

#include "base/slot_pool.h"
#include "weft/net/socket.h"

namespace weft::net_internal {

// 64 sockets per chunk: a Socket is a few hundred bytes and chunks are never
// freed, so small chunks keep an idle process small.
typedef base::SlotPool<Socket, 6> SocketPool;

inline SocketPool& socket_pool() { return SocketPool::instance(); }

inline uint32_t version_of_vref(uint64_t vref) { return static_cast<uint32_t>(vref >> 32); }
inline uint32_t nref_of_vref(uint64_t vref) { return static_cast<uint32_t>(vref); }
inline uint64_t make_vref(uint32_t version, uint32_t nref) {
  return (static_cast<uint64_t>(version) << 32) | nref;
}
inline uint32_t version_of_id(SocketId id) { return static_cast<uint32_t>(id >> 32); }
inline uint32_t slot_of_id(SocketId id) { return static_cast<uint32_t>(id); }
inline SocketId make_socket_id(uint32_t version, uint32_t slot) {
  return (static_cast<uint64_t>(version) << 32) | slot;
}

}  // namespace weft::net_internal

#endif  // WEFT_NET_SOCKET_POOL_H_
