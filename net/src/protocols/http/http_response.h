// Writing an HTTP/1.1 response: the status line, the fields and the body,
// as bytes appended to an IOBuf.
//
// This runs once per request, so it avoids the general formatter: the
// status line and "Content-Length: " of every known status are one string
// literal each, the numbers are converted by hand, and the head (with a
// small body) is gathered on the stack and reaches the IOBuf in a single
// append, so the reply is one contiguous run of one block (one iovec for
// the write).
#ifndef WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_RESPONSE_H_
#define WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_RESPONSE_H_

#include "weft/net/iobuf.h"
#include "weft/rpc/http.h"

namespace weft::rpc::http {

// The reason phrase of a status code ("OK", "Not Found"); "Unknown" for
// codes it does not know. Any thread.
const char* HttpReasonPhrase(int status);

// Appends resp's status line, Content-Length, Content-Type (unless empty),
// resp.headers in order, the Connection field (close when !keep_alive;
// keep-alive for an HTTP/1.0 client that keeps the connection), the blank
// line and (unless head_only) the body to *out. resp is not changed (its
// body is shared, or copied when small). Any thread; never suspends.
void SerializeResponse(const HttpResponse& resp, bool keep_alive, int version_minor, bool head_only,
                       IOBuf* out);

}  // namespace weft::rpc::http

#endif  // WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_RESPONSE_H_
