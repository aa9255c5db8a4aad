// Internal: the idle connections of pooled Channels, per (server,
// protocol), process-wide.
//
// A pooled call takes an idle connection (or a new one), and gives it back
// after its reply; a connection whose call failed or timed out is closed
// instead, so a late reply can never be read as another call's. At most
// --weft_max_connection_pool_size idle connections are kept per server;
// one returned past that is closed.
#ifndef WEFT_RPC_CONNECTION_POOL_H_
#define WEFT_RPC_CONNECTION_POOL_H_

#include <stddef.h>

#include <string>

#include "weft/net/socket.h"

namespace weft::rpc::internal {

// An idle, healthy connection of `key`, or a new socket made from
// `options` (it connects on its first write). 0 or -1 with errno (Create's
// error). Any thread; does not suspend.
int TakePooledSocket(const std::string& key, const SocketOptions& options, SocketUniquePtr* out);
// Gives a connection back after a successful call (failed or closing ones
// are dropped; past the pool's size the connection is closed).
void ReturnPooledSocket(const std::string& key, SocketUniquePtr s);
// Idle connections kept for `key` (tests).
size_t PooledSocketCount(const std::string& key);

}  // namespace weft::rpc::internal

#endif  // WEFT_RPC_CONNECTION_POOL_H_
