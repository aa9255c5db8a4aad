// weft_std, client side: a response frame ends the call its correlation id
// names.
#include <string>

#include "protocols/weft_std/weft_std_protocol.h"
#include "weft/rpc/call_completion.h"
#include "weft/rpc/errno.h"

namespace weft::rpc::weft_std {

void ProcessResponse(InputMessageBase* base) {
  auto* msg = static_cast<WeftStdMessage*>(base);
  if (!msg->header.is_response()) {
    // A server does not send requests to its client.
    msg->socket()->SetFailed(EREQUEST, "close %s: weft_std: a request arrived at a client",
                             msg->socket()->description().c_str());
    msg->Destroy();
    return;
  }
  const std::string text = msg->header.error_code != 0 ? msg->meta.to_string() : std::string();
  // A late reply (its call ended) is dropped and counted by CompleteCall.
  CompleteCall(msg->header.correlation_id, msg->socket(), msg->header.error_code, text,
               &msg->payload);
  msg->Destroy();
}

}  // namespace weft::rpc::weft_std
