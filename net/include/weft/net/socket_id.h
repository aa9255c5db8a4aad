// weft/net/socket_id.h: the 64-bit versioned name of a Socket.
#ifndef WEFT_NET_SOCKET_ID_H_
#define WEFT_NET_SOCKET_ID_H_

#include <stdint.h>

namespace weft {

// High 32 bits: the version the socket had when created (even); low 32 bits:
// its slot in the socket pool. A slot's version grows by two on every
// recycle, so an id names one socket for ever and never a later one.
typedef uint64_t SocketId;

inline constexpr SocketId INVALID_SOCKET_ID = static_cast<SocketId>(-1);

}  // namespace weft

#endif  // WEFT_NET_SOCKET_ID_H_
