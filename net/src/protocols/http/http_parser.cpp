#include "protocols/http/http_parser.h"

#include <string.h>

#include <algorithm>

namespace weft::rpc::http {

namespace {

// A chunk-size line (hex size plus extensions) longer than this is refused:
// real clients send a few bytes, and the bound keeps re-scanning cheap.
constexpr size_t kMaxChunkLine = 4096;

// Header fields room is made for at the first one.
constexpr size_t kUsualHeaders = 8;

// The methods whose first bytes make a connection HTTP (with the space
// after them, so "GETX" is not claimed).
constexpr std::string_view kMethods[] = {"GET ",     "HEAD ",    "POST ",  "PUT ",  "DELETE ",
                                         "OPTIONS ", "CONNECT ", "TRACE ", "PATCH "};

// tchar of RFC 9110 5.6.2, one lookup per byte (every header name and
// method goes through it).
struct TokenTable {
  bool is_token[256] = {};
  constexpr TokenTable() {
    for (int c = '0'; c <= '9'; ++c) is_token[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) is_token[c] = is_token[c - 'a' + 'A'] = true;
    for (const char* p = "!#$%&'*+-.^_`|~"; *p != 0; ++p)
      is_token[static_cast<unsigned char>(*p)] = true;
  }
};
constexpr TokenTable kTokenTable;

bool IsTokenChar(unsigned char c) { return kTokenTable.is_token[c]; }

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls f(piece) for each comma-separated element of a list header value,
// OWS trimmed (empty elements included, RFC 9110 5.6.1 lets them be).
template <typename F>
void ForEachListElement(std::string_view v, F&& f) {
  for (;;) {
    const size_t comma = v.find(',');
    f(TrimOws(v.substr(0, comma)));
    if (comma == std::string_view::npos) return;
    v.remove_prefix(comma + 1);
  }
}

// The position of the first '\n' in source's first `limit` bytes, or npos.
size_t FindNewline(const IOBuf& source, size_t limit) {
  size_t base = 0;
  for (size_t i = 0; i < source.backing_block_num() && base < limit; ++i) {
    std::string_view b = source.backing_block(i);
    if (b.size() > limit - base) b = b.substr(0, limit - base);
    const size_t p = b.find('\n');
    if (p != std::string_view::npos) return base + p;
    base += b.size();
  }
  return IOBuf::npos;
}

}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    unsigned char x = static_cast<unsigned char>(a[i]);
    unsigned char y = static_cast<unsigned char>(b[i]);
    if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x | 0x20);
    if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y | 0x20);
    if (x != y) return false;
  }
  return true;
}

void HttpRequestParser::Reset() {
  phase_ = kHead;
  scanned_ = 0;
  matched_ = 0;
  chunk_left_ = 0;
  trailer_bytes_ = 0;
  head_bytes_ = 0;
  bare_why_ = nullptr;
  // Field by field rather than from a fresh HttpRequestHead: the strings
  // and fields were usually moved out already, and this keeps what they
  // left (no temporary built and torn down per request).
  head_.method.clear();
  head_.target.clear();
  head_.version_minor = 1;
  head_.headers.clear();
  head_.keep_alive = true;
  head_.chunked = false;
  head_.content_length = -1;
  body_.clear();
  error_status_ = 0;
  why_ = nullptr;
}

HttpRequestParser::Status HttpRequestParser::Fail(int status, const char* why) {
  phase_ = kFailed;
  error_status_ = status;
  why_ = why;
  return kError;
}

bool HttpRequestParser::LooksLikeHttp(const IOBuf& source, bool* decided) {
  char buf[8];
  const size_t have = source.copy_to(buf, sizeof(buf), 0);
  bool possible = false;
  for (std::string_view m : kMethods) {
    const size_t n = have < m.size() ? have : m.size();
    if (memcmp(buf, m.data(), n) != 0) continue;
    if (have >= m.size()) {
      *decided = true;
      return true;
    }
    possible = true;
  }
  *decided = !possible;
  return possible;
}

HttpRequestParser::Status HttpRequestParser::Feed(IOBuf* source) {
  if (phase_ == kFailed) return kError;
  if (phase_ == kComplete) return kDone;
  if (phase_ == kHead) {
    if (seen_request_) {
      if (scanned_ == 0) {
        // Empty lines between requests (a client's CRLF after a body).
        char c;
        while (!source->empty() && ((c = source->byte_at(0)) == '\r' || c == '\n')) {
          source->pop_front(1);
        }
      }
    } else if (scanned_ < 8 && !source->empty()) {
      // Until the method and its space are in, the bytes may be another
      // protocol's; nothing was consumed yet.
      bool decided = false;
      if (!LooksLikeHttp(*source, &decided)) return kNotHttp;
    }
    // Resume the search for the blank line where the last feed stopped; the
    // bytes stay in source until the head is complete.
    size_t end = 0;
    size_t base = 0;
    const size_t limit = limits_.max_head_bytes;
    // The scan works on locals, stored back once: the byte loads are char
    // loads, which may alias the members, so the compiler would otherwise
    // store the members on every byte.
    size_t scanned = scanned_;
    int matched = matched_;
    const char* bare_why = bare_why_;
    bool over_limit = false;
    for (size_t i = 0; i < source->backing_block_num() && end == 0 && !over_limit; ++i) {
      const std::string_view b = source->backing_block(i);
      if (base + b.size() <= scanned) {
        base += b.size();
        continue;
      }
      for (size_t j = scanned - base; j < b.size(); ++j) {
        if (matched == 0) {
          // After an ordinary byte, ordinary bytes change nothing but the
          // count: skip the run of them up to the next CR or LF (or the
          // limit's byte) instead of stepping the state per byte.
          const size_t stop = std::min(b.size(), j + (limit + 1 - scanned));
          const size_t from = j;
          while (j < stop && b[j] != '\r' && b[j] != '\n') ++j;
          scanned += j - from;
          if (scanned > limit) {
            over_limit = true;
            break;
          }
          if (j == b.size()) break;
        }
        const char c = b[j];
        // CR and LF must pair up; the first that does not is remembered
        // here, where each byte is seen anyway, and refused once the head
        // is complete (a head over the limit is 431 first).
        const bool after_cr = matched == 1 || matched == 3;
        if (c == '\r') {
          if (after_cr && bare_why == nullptr) bare_why = "bare CR in head";
          matched = matched == 2 ? 3 : 1;
        } else if (c == '\n') {
          if (!after_cr && bare_why == nullptr) bare_why = "bare LF in head";
          matched = matched == 1 ? 2 : (matched == 3 ? 4 : 0);
        } else {
          if (after_cr && bare_why == nullptr) bare_why = "bare CR in head";
          matched = 0;
        }
        ++scanned;
        if (matched == 4) {
          end = scanned;
          break;
        }
        if (scanned > limit) {
          over_limit = true;
          break;
        }
      }
      base += b.size();
    }
    scanned_ = scanned;
    matched_ = matched;
    bare_why_ = bare_why;
    if (over_limit) return Fail(431, "request head over --weft_http_max_head_bytes");
    if (end == 0) return kNeedMore;
    // The head is parsed where it lies when one block holds it (the usual
    // case: a request arrives in one read), else from a copy in head_copy_,
    // whose capacity the connection keeps. Either way the bytes are dropped
    // only after ParseHead, which copies what it keeps.
    std::string_view head = source->backing_block(0);
    if (head.size() >= end) {
      head = head.substr(0, end);
    } else {
      source->copy_to(&head_copy_, end, 0);
      head = head_copy_;
    }
    head_bytes_ = end;
    const Status st = ParseHead(head);
    source->pop_front(end);
    if (st != kDone) return st;
  }
  for (;;) {
    switch (phase_) {
      case kBody: {
        const size_t n = source->cutn(&body_, static_cast<size_t>(chunk_left_));
        chunk_left_ -= n;
        if (chunk_left_ != 0) return kNeedMore;
        phase_ = kComplete;
        break;
      }
      case kChunkSize: {
        std::string line;
        const Status st = CutLine(source, kMaxChunkLine, &line);
        if (st != kDone) return st;
        // chunk-size [ chunk-ext ]; extensions are ignored.
        std::string_view v(line);
        const size_t semi = v.find(';');
        v = TrimOws(v.substr(0, semi));
        if (v.empty() || v.size() > 16) return Fail(400, "bad chunk size");
        uint64_t size = 0;
        for (char c : v) {
          int d;
          if (c >= '0' && c <= '9') {
            d = c - '0';
          } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            d = (c | 0x20) - 'a' + 10;
          } else {
            return Fail(400, "bad chunk size");
          }
          size = size * 16 + static_cast<uint64_t>(d);  // 16 digits: no overflow
        }
        if (size > limits_.max_body_bytes - body_.size()) {
          return Fail(413, "chunked body over --weft_max_body_size");
        }
        if (size == 0) {
          phase_ = kTrailers;
        } else {
          chunk_left_ = size;
          phase_ = kChunkData;
        }
        break;
      }
      case kChunkData: {
        const size_t n = source->cutn(&body_, static_cast<size_t>(chunk_left_));
        chunk_left_ -= n;
        if (chunk_left_ != 0) return kNeedMore;
        phase_ = kChunkDataEnd;
        break;
      }
      case kChunkDataEnd: {
        if (source->size() < 2) {
          if (!source->empty() && source->byte_at(0) != '\r') {
            return Fail(400, "chunk data not followed by CRLF");
          }
          return kNeedMore;
        }
        char crlf[2];
        source->copy_to(crlf, 2, 0);
        if (crlf[0] != '\r' || crlf[1] != '\n') return Fail(400, "chunk data not followed by CRLF");
        source->pop_front(2);
        phase_ = kChunkSize;
        break;
      }
      case kTrailers: {
        const size_t used = head_bytes_ + trailer_bytes_;
        const size_t room = used < limits_.max_head_bytes ? limits_.max_head_bytes - used : 0;
        std::string line;
        const Status st = CutLine(source, room, &line);
        if (st == kError && error_status_ == 400 && why_ != nullptr &&
            strcmp(why_, "line too long") == 0) {
          error_status_ = 431;
          why_ = "trailers over --weft_http_max_head_bytes";
        }
        if (st != kDone) return st;
        trailer_bytes_ += line.size() + 2;
        // Trailer fields are read and dropped (none of them frames the
        // message); only their size is bounded.
        if (line.empty()) phase_ = kComplete;
        break;
      }
      case kComplete:
        seen_request_ = true;
        return kDone;
      default:
        return Fail(400, "parser state");
    }
  }
}

HttpRequestParser::Status HttpRequestParser::CutLine(IOBuf* source, size_t limit,
                                                     std::string* line) {
  const size_t nl = FindNewline(*source, limit + 2);
  if (nl == IOBuf::npos) {
    if (source->size() >= limit + 2) return Fail(400, "line too long");
    return kNeedMore;
  }
  if (nl == 0 || source->byte_at(nl - 1) != '\r') return Fail(400, "bare LF");
  source->cutn(line, nl - 1);
  source->pop_front(2);
  return kDone;
}

HttpRequestParser::Status HttpRequestParser::ParseHead(std::string_view head) {
  // head ends with "\r\n\r\n"; CR and LF anywhere else must pair up
  // (checked by Feed's scan).
  if (bare_why_ != nullptr) return Fail(400, bare_why_);
  head.remove_suffix(2);  // the blank line's CRLF; every line now ends in CRLF
  size_t eol = head.find("\r\n");
  Status st = ParseRequestLine(head.substr(0, eol));
  if (st != kDone) return st;
  head.remove_prefix(eol + 2);
  while (!head.empty()) {
    eol = head.find("\r\n");
    std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    if (line.front() == ' ' || line.front() == '\t') {
      return Fail(400, "obsolete line folding in headers");
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return Fail(400, "header line without ':'");
    const std::string_view name = line.substr(0, colon);
    // Whitespace before the colon is refused (RFC 9112 5.1): it is how
    // requests are smuggled past proxies that read the name differently.
    if (!IsToken(name)) return Fail(400, "bad header name");
    const std::string_view value = TrimOws(line.substr(colon + 1));
    for (unsigned char c : value) {
      if ((c < 0x20 && c != '\t') || c == 0x7f) return Fail(400, "control byte in header value");
    }
    if (head_.headers.size() >= limits_.max_headers) {
      return Fail(431, "more headers than --weft_http_max_headers");
    }
    // One allocation holds a usual request's fields (the vector leaves with
    // each request, so it starts empty every time).
    if (head_.headers.capacity() == 0) head_.headers.reserve(kUsualHeaders);
    head_.headers.emplace_back(std::string(name), std::string(value));
  }
  return ApplyHeaders();
}

HttpRequestParser::Status HttpRequestParser::ParseRequestLine(std::string_view line) {
  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return Fail(400, "bad request line");
  const size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return Fail(400, "bad request line");
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!IsToken(method)) return Fail(400, "bad method");
  if (target.empty()) return Fail(400, "empty request target");
  for (unsigned char c : target) {
    if (c <= 0x20 || c == 0x7f) return Fail(400, "bad byte in request target");
  }
  if (target[0] != '/' && target != "*" && target.rfind("http://", 0) != 0 &&
      target.rfind("https://", 0) != 0) {
    return Fail(400, "bad request target");
  }
  if (version == "HTTP/1.1") {
    head_.version_minor = 1;
  } else if (version == "HTTP/1.0") {
    head_.version_minor = 0;
  } else if (version.size() == 8 && version.rfind("HTTP/", 0) == 0 && version[5] >= '0' &&
             version[5] <= '9' && version[6] == '.' && version[7] >= '0' && version[7] <= '9') {
    return Fail(505, "unsupported HTTP version");
  } else {
    return Fail(400, "bad HTTP version");
  }
  head_.method.assign(method);
  head_.target.assign(target);
  return kDone;
}

HttpRequestParser::Status HttpRequestParser::ApplyHeaders() {
  bool has_length = false;
  bool length_huge = false;
  uint64_t length = 0;
  bool has_te = false;
  bool te_chunked_only = true;
  bool conn_close = false;
  bool conn_keep_alive = false;
  for (const auto& [name, value] : head_.headers) {
    if (EqualsIgnoreCase(name, "content-length")) {
      // Every element of every Content-Length field must be the same
      // number (RFC 9112 6.3): "5, 5" is one length, "5, 6" or two fields
      // that differ are a malformed request, never a guess.
      bool bad = false;
      ForEachListElement(value, [&](std::string_view v) {
        if (v.empty()) {
          bad = true;
          return;
        }
        uint64_t x = 0;
        bool huge = false;
        for (char c : v) {
          if (c < '0' || c > '9') {
            bad = true;
            return;
          }
          if (x > (UINT64_MAX - 9) / 10) {
            huge = true;
          } else {
            x = x * 10 + static_cast<uint64_t>(c - '0');
          }
        }
        if (has_length && (huge != length_huge || x != length)) {
          bad = true;
          return;
        }
        has_length = true;
        length_huge = huge;
        length = x;
      });
      if (bad) return Fail(400, "bad or conflicting Content-Length");
    } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
      has_te = true;
      ForEachListElement(value, [&](std::string_view v) {
        if (!EqualsIgnoreCase(v, "chunked")) te_chunked_only = false;
      });
    } else if (EqualsIgnoreCase(name, "connection")) {
      ForEachListElement(value, [&](std::string_view v) {
        if (EqualsIgnoreCase(v, "close")) conn_close = true;
        if (EqualsIgnoreCase(v, "keep-alive")) conn_keep_alive = true;
      });
    }
  }
  head_.keep_alive = !conn_close && (head_.version_minor >= 1 || conn_keep_alive);
  if (has_te) {
    // Both framings at once is how requests are smuggled; RFC 9112 6.1
    // lets a server refuse it.
    if (has_length) return Fail(400, "both Transfer-Encoding and Content-Length");
    if (!te_chunked_only) return Fail(501, "Transfer-Encoding other than chunked");
    head_.chunked = true;
    phase_ = kChunkSize;
    return kDone;
  }
  if (has_length) {
    if (length_huge || length > limits_.max_body_bytes) {
      return Fail(413, "Content-Length over --weft_max_body_size");
    }
    head_.content_length = static_cast<int64_t>(length);
    chunk_left_ = length;
    phase_ = length > 0 ? kBody : kComplete;
    return kDone;
  }
  phase_ = kComplete;
  return kDone;
}

}  // namespace weft::rpc::http
