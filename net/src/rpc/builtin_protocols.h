// Internal: the protocols weft ships, registered before the registry is
// first used. This file and builtin_protocols.cpp are the only places of
// the rpc core that know concrete protocols exist; the server and channel
// see them through the registry alone.
#ifndef WEFT_NET_SRC_RPC_BUILTIN_PROTOCOLS_H_
#define WEFT_NET_SRC_RPC_BUILTIN_PROTOCOLS_H_

#include "weft/rpc/protocol.h"

namespace weft::rpc::internal {

// Registers every built-in protocol, once per process (the first caller
// does it; the others wait for it). Any thread.
void RegisterBuiltinProtocolsOnce();
// The registry's insert without RegisterBuiltinProtocolsOnce (which the
// built-ins themselves call through).
int RegisterProtocolNoInit(const Protocol& p);

}  // namespace weft::rpc::internal

#endif  // WEFT_NET_SRC_RPC_BUILTIN_PROTOCOLS_H_
