// Internal: the InputMessenger that reads client connections of one
// protocol (its parse and process_response), shared by every Channel of the
// process that speaks it.
#ifndef WEFT_RPC_CLIENT_MESSENGER_H_
#define WEFT_RPC_CLIENT_MESSENGER_H_

#include "weft/net/input_messenger.h"
#include "weft/rpc/protocol.h"

namespace weft::rpc::internal {

// The messenger for `p` (created on first use, never destroyed: client
// sockets may outlive every Channel). Any thread.
InputMessenger* client_messenger(const Protocol* p);

}  // namespace weft::rpc::internal

#endif  // WEFT_RPC_CLIENT_MESSENGER_H_
