#include "protocols/http/http_response.h"

#include <stdint.h>
#include <string.h>

#include <string_view>

namespace weft::rpc::http {

namespace {

using namespace std::string_view_literals;

// Every status with a phrase: HttpReasonPhrase and the cached status lines
// are generated from this one list, so they cannot disagree.
#define WEFT_HTTP_STATUSES(X)               \
  X(100, "Continue")                        \
  X(200, "OK")                              \
  X(201, "Created")                         \
  X(204, "No Content")                      \
  X(301, "Moved Permanently")               \
  X(302, "Found")                           \
  X(304, "Not Modified")                    \
  X(400, "Bad Request")                     \
  X(403, "Forbidden")                       \
  X(404, "Not Found")                       \
  X(405, "Method Not Allowed")              \
  X(408, "Request Timeout")                 \
  X(411, "Length Required")                 \
  X(413, "Content Too Large")               \
  X(414, "URI Too Long")                    \
  X(429, "Too Many Requests")               \
  X(431, "Request Header Fields Too Large") \
  X(500, "Internal Server Error")           \
  X(501, "Not Implemented")                 \
  X(503, "Service Unavailable")             \
  X(505, "HTTP Version Not Supported")

// "HTTP/1.1 <code> <phrase>\r\nContent-Length: " for a known status, empty
// for others. The literals are concatenated by the compiler: no work per
// response beyond the switch.
std::string_view KnownStatusPrefix(int status) {
  switch (status) {
#define WEFT_HTTP_PREFIX(code, phrase) \
  case code:                           \
    return "HTTP/1.1 " #code " " phrase "\r\nContent-Length: "sv;
    WEFT_HTTP_STATUSES(WEFT_HTTP_PREFIX)
#undef WEFT_HTTP_PREFIX
    default:
      return {};
  }
}

// Writes v in decimal so that it ends at `end`; returns where it starts.
// Room: 20 bytes (UINT64_MAX).
char* FormatDecimal(uint64_t v, char* end) {
  char* p = end;
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return p;
}

// The head (and a small body) gathered on the stack, appended to the IOBuf
// when full and at the end. A response's pieces are short and many; one
// append per response instead of one per piece is most of the saving, and
// it keeps the reply in one run of the thread's block.
class HeadWriter {
 public:
  explicit HeadWriter(IOBuf* out) : out_(out) {}
  HeadWriter(const HeadWriter&) = delete;
  HeadWriter& operator=(const HeadWriter&) = delete;

  void Put(std::string_view s) {
    if (s.size() > sizeof(buf_) - n_) {
      Flush();
      if (s.size() > sizeof(buf_)) {
        out_->append(s);  // a field larger than the buffer goes straight in
        return;
      }
    }
    memcpy(buf_ + n_, s.data(), s.size());
    n_ += s.size();
  }
  // Copies the whole of body behind what is gathered if it fits the room
  // left; false (nothing copied) otherwise.
  bool PutIfFits(const IOBuf& body) {
    if (body.size() > sizeof(buf_) - n_) return false;
    n_ += body.copy_to(buf_ + n_, body.size(), 0);
    return true;
  }
  // Out of line: inlined, GCC 12 (with ASan) takes the pointer to the
  // not-yet-written part of buf_ for a read of uninitialized bytes; only
  // the n_ written ones are passed.
  __attribute__((noinline)) void Flush() {
    if (n_ != 0) out_->append(buf_, n_);
    n_ = 0;
  }

 private:
  IOBuf* const out_;
  size_t n_ = 0;
  // Holds a usual head and a body of a few hundred bytes; small enough for
  // any fiber stack.
  char buf_[512];
};

}  // namespace

const char* HttpReasonPhrase(int status) {
  switch (status) {
#define WEFT_HTTP_PHRASE(code, phrase) \
  case code:                           \
    return phrase;
    WEFT_HTTP_STATUSES(WEFT_HTTP_PHRASE)
#undef WEFT_HTTP_PHRASE
    default:
      return "Unknown";
  }
}

void SerializeResponse(const HttpResponse& resp, bool keep_alive, int version_minor, bool head_only,
                       IOBuf* out) {
  HeadWriter w(out);
  const std::string_view prefix = KnownStatusPrefix(resp.status);
  if (!prefix.empty()) {
    w.Put(prefix);
  } else {
    // A code without a phrase, as the handler set it (any int, in decimal).
    char digits[24];
    char* const end = digits + sizeof(digits);
    const int64_t s = resp.status;
    char* p = FormatDecimal(s < 0 ? 0 - static_cast<uint64_t>(s) : static_cast<uint64_t>(s), end);
    if (s < 0) *--p = '-';
    w.Put("HTTP/1.1 "sv);
    w.Put(std::string_view(p, static_cast<size_t>(end - p)));
    w.Put(" Unknown\r\nContent-Length: "sv);
  }
  {
    char digits[24];
    char* const end = digits + sizeof(digits);
    char* const p = FormatDecimal(resp.body.size(), end);
    w.Put(std::string_view(p, static_cast<size_t>(end - p)));
    w.Put("\r\n"sv);
  }
  if (!resp.content_type.empty()) {
    w.Put("Content-Type: "sv);
    w.Put(resp.content_type);
    w.Put("\r\n"sv);
  }
  for (const auto& [name, value] : resp.headers) {
    w.Put(name);
    w.Put(": "sv);
    w.Put(value);
    w.Put("\r\n"sv);
  }
  if (!keep_alive) {
    w.Put("Connection: close\r\n\r\n"sv);
  } else if (version_minor == 0) {
    // An HTTP/1.0 client that asked to keep the connection is told it is.
    w.Put("Connection: keep-alive\r\n\r\n"sv);
  } else {
    w.Put("\r\n"sv);
  }
  // A small body is copied behind the head (cheaper than sharing its block
  // and a second iovec); a large one is shared, not copied.
  const bool copied = head_only || w.PutIfFits(resp.body);
  w.Flush();
  if (!copied) out->append(resp.body);
}

}  // namespace weft::rpc::http
