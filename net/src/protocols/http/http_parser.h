// An HTTP/1.1 request parser (RFC 9112), resumable over a connection's read
// buffer.
//
// Written here rather than taken from Debian's libhttp-parser-dev: that
// library is archived upstream (nodejs/http-parser, no fixes since 2.9.4),
// and its callback style would still need this file's bookkeeping to decide
// 413 from the headers, count headers for 431 and keep the body in IOBuf
// blocks without copying. The grammar needed by a server is small.
//
// One HttpRequestParser per connection, used by the connection's reading
// fiber only (no locking). Feed() looks at the front of `source`; while a
// request is incomplete it may move bytes it has examined (head scan
// position, body bytes) into its own state, so each byte is examined once
// however slowly the request arrives. When it returns kDone the request is
// in head()/body() and the parser is ready for the next one (Reset()).
#ifndef WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_PARSER_H_
#define WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_PARSER_H_

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "weft/net/iobuf.h"

namespace weft::rpc::http {

struct HttpParseLimits {
  // Request line plus headers (plus the trailers of a chunked body), bytes;
  // past it: 431.
  size_t max_head_bytes = 64 * 1024;
  // Header fields; past it: 431.
  size_t max_headers = 100;
  // Decoded body bytes; a Content-Length or chunk size over it: 413 before
  // the body is read.
  uint64_t max_body_bytes = 64 << 20;
};

// What a request's head says, once parsed. HttpRequestParser::Reset
// resets each field to the default written here: a new field goes there
// too.
struct HttpRequestHead {
  std::string method;
  std::string target;     // as sent (origin-form, or "*")
  int version_minor = 1;  // HTTP/1.<minor>; only 0 and 1 are accepted
  std::vector<std::pair<std::string, std::string>> headers;
  bool keep_alive = true;
  bool chunked = false;
  int64_t content_length = -1;  // -1: none
};

class HttpRequestParser {
 public:
  enum Status {
    kNeedMore,  // a prefix of a request: feed again with more bytes
    kDone,      // head() and body() hold a request, cut from source
    kError,     // malformed or over a limit: error_status() and why()
    kNotHttp,   // the first bytes are not an HTTP request (another protocol's)
  };

  explicit HttpRequestParser(const HttpParseLimits& limits) : limits_(limits) {}

  // Consumes what it can of source (see the top of the file). After kError
  // the parser is stuck in kError until Reset(); after kDone call Reset()
  // before the next request. kNotHttp only before any byte was consumed.
  Status Feed(IOBuf* source);
  // Back to the start of a request (keeps the limits).
  void Reset();

  const HttpRequestHead& head() const { return head_; }
  // The same, for moving the completed request's strings and fields out
  // (Reset() follows).
  HttpRequestHead& mutable_head() { return head_; }
  IOBuf& body() { return body_; }
  // For kError: 400, 413, 431, 501 or 505.
  int error_status() const { return error_status_; }
  // For kError: static text.
  const char* why() const { return why_; }
  // A request is partly parsed (bytes were examined or consumed for it).
  bool started() const { return phase_ != kHead || scanned_ > 0; }
  // A request was completed before (kNotHttp is no longer answered).
  bool seen_request() const { return seen_request_; }

 private:
  enum Phase { kHead, kBody, kChunkSize, kChunkData, kChunkDataEnd, kTrailers, kComplete, kFailed };

  Status Fail(int status, const char* why);
  // Whether the first bytes can start a request with a known method.
  // *decided is false while too few bytes to tell.
  static bool LooksLikeHttp(const IOBuf& source, bool* decided);
  Status ParseHead(std::string_view head);
  Status ParseRequestLine(std::string_view line);
  // Interprets the framing headers (Content-Length, Transfer-Encoding,
  // Connection) once all are parsed.
  Status ApplyHeaders();
  // One CRLF-terminated line from the front of source into *line (without
  // the CRLF), at most `limit` bytes; kNeedMore / kError / kDone.
  Status CutLine(IOBuf* source, size_t limit, std::string* line);

  const HttpParseLimits limits_;
  Phase phase_ = kHead;
  // kHead: bytes at the front of the source already searched for the end
  // of the head, and how much of "\r\n\r\n" the last of them matched (the
  // search resumes there: each byte is looked at once).
  size_t scanned_ = 0;
  int matched_ = 0;
  // kHead: the first unpaired CR or LF among the scanned bytes, as the
  // refusal's text, or nullptr.
  const char* bare_why_ = nullptr;
  // A request was completed on this parser: CRLFs before the next request
  // line are skipped (RFC 9112 2.2), and a first byte that cannot start a
  // request is an error, not another protocol.
  bool seen_request_ = false;
  uint64_t chunk_left_ = 0;
  // Trailer bytes so far (bounded by max_head_bytes together with the head).
  size_t trailer_bytes_ = 0;
  size_t head_bytes_ = 0;
  HttpRequestHead head_;
  // A head split across blocks is copied here to be parsed; kept between
  // requests so its capacity is reused.
  std::string head_copy_;
  IOBuf body_;
  int error_status_ = 0;
  const char* why_ = nullptr;
};

// Case-insensitive ASCII comparison (header names, tokens).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace weft::rpc::http

#endif  // WEFT_NET_SRC_PROTOCOLS_HTTP_HTTP_PARSER_H_
