// weft/rpc/call_completion.h: how a protocol's process_response hands a
// reply to the call waiting for it.
//
// Client calls are named by correlation ids (the value of the call's
// bthread_id, written into the request by pack_request). A protocol that
// cut a response calls CompleteCall with the id it carries; the call ends
// with the reply unless it ended already (a timeout, a cancel or a
// connection failure won the race), in which case the reply is dropped and
// counted in weft_rpc_late_replies.
#ifndef WEFT_RPC_CALL_COMPLETION_H_
#define WEFT_RPC_CALL_COMPLETION_H_

#include <stdint.h>

#include <string_view>

#include "weft/net/iobuf.h"
#include "weft/net/socket.h"

namespace weft::rpc {

// Ends call `correlation_id` with the reply from `from` (the connection it
// arrived on): error_code 0 and *payload moved into the caller's response,
// or the server's error_code and error_text (payload ignored). Returns 0,
// or -1 when no call of this id is pending on `from` (ended already, or
// never sent there): the reply was dropped and counted. Any fiber; may
// suspend briefly (the call's id lock).
int CompleteCall(uint64_t correlation_id, Socket* from, int error_code,
                 std::string_view error_text, IOBuf* payload);

// Replies dropped because their call had ended (weft_rpc_late_replies).
int64_t LateReplyCount();

}  // namespace weft::rpc

#endif  // WEFT_RPC_CALL_COMPLETION_H_
