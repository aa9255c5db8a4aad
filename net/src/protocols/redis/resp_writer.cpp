// RESP2 writers and the method-request encoding of weft/rpc/redis.h.
#include <stdint.h>
#include <string.h>

#include <string>
#include <utility>

#include "weft/rpc/controller.h"
#include "weft/rpc/redis.h"

namespace weft::rpc::redis {

namespace {

// A reply is built on the stack and appended once when it is this small or
// smaller: one IOBuf::append per reply instead of three to five (a third
// of a pipelined PING's cost in the writers went to the extra appends).
constexpr size_t kSmallReply = 256;

// Writes "<type><n>\r\n" ending at `end` without snprintf; returns where it
// starts. `end` must have 23 bytes before it (the longest: INT64_MIN).
char* FormatPrefixed(char* end, char type, int64_t n) {
  char* p = end;
  *--p = '\n';
  *--p = '\r';
  // Through the unsigned magnitude, so INT64_MIN formats too.
  uint64_t u = n < 0 ? 0 - static_cast<uint64_t>(n) : static_cast<uint64_t>(n);
  do {
    *--p = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (n < 0) *--p = '-';
  *--p = type;
  return p;
}

void AppendPrefixed(IOBuf* out, char type, int64_t n) {
  char buf[32];
  char* const end = buf + sizeof(buf);
  const char* p = FormatPrefixed(end, type, n);
  out->append(p, static_cast<size_t>(end - p));
}

// "<type><text>\r\n", CR and LF in text replaced by spaces when `clean`.
void AppendLine(IOBuf* out, char type, std::string_view text, bool clean) {
  auto fix = [clean](char c) { return clean && (c == '\r' || c == '\n') ? ' ' : c; };
  if (text.size() + 3 <= kSmallReply) {
    char buf[kSmallReply];
    buf[0] = type;
    if (clean) {
      for (size_t i = 0; i < text.size(); ++i) buf[1 + i] = fix(text[i]);
    } else if (!text.empty()) {  // an empty view's data() may be null
      memcpy(buf + 1, text.data(), text.size());
    }
    buf[1 + text.size()] = '\r';
    buf[2 + text.size()] = '\n';
    out->append(buf, text.size() + 3);
    return;
  }
  out->push_back(type);
  if (clean) {
    std::string fixed(text);
    for (char& c : fixed) c = fix(c);
    out->append(fixed);
  } else {
    out->append(text);
  }
  out->append("\r\n", 2);
}

}  // namespace

RedisArgs::RedisArgs(RedisArgs&& other) noexcept { *this = std::move(other); }

RedisArgs& RedisArgs::operator=(RedisArgs&& other) noexcept {
  if (this == &other) return *this;
  used_ = other.used_;
  on_heap_ = other.on_heap_;
  count_ = other.count_;
  if (on_heap_) {
    heap_bytes_ = std::move(other.heap_bytes_);
  } else {
    heap_bytes_.clear();
    memcpy(inline_bytes_, other.inline_bytes_, used_);
  }
  const size_t inline_count = count_ < kInlineArgs ? count_ : kInlineArgs;
  for (size_t i = 0; i < inline_count; ++i) inline_spans_[i] = other.inline_spans_[i];
  more_spans_ = std::move(other.more_spans_);
  other.Clear();
  return *this;
}

void RedisArgs::Clear() {
  used_ = 0;
  on_heap_ = false;
  count_ = 0;
  heap_bytes_.clear();
  more_spans_.clear();
}

char* RedisArgs::AppendUninitialized(size_t n) {
  if (!on_heap_ && n > kInlineBytes - used_) {
    // Outgrown: the bytes so far move to the heap (the spans are offsets,
    // so they stay right).
    heap_bytes_.assign(inline_bytes_, used_);
    on_heap_ = true;
  }
  char* base = inline_bytes_;
  if (on_heap_) {
    // resize grows the capacity geometrically: n appends cost O(total).
    heap_bytes_.resize(used_ + n);
    base = heap_bytes_.data();
  }
  const Span span{used_, n};
  if (count_ < kInlineArgs) {
    inline_spans_[count_] = span;
  } else {
    more_spans_.push_back(span);
  }
  ++count_;
  used_ += n;
  return base + span.offset;
}

void RedisArgs::AppendSlow(std::string_view arg) {
  char* const to = AppendUninitialized(arg.size());
  if (!arg.empty()) memcpy(to, arg.data(), arg.size());
}

bool RedisArgs::Parse(const IOBuf& request) {
  Clear();
  // The encoding in one piece: on the stack when small, else a string.
  const size_t total = request.size();
  char small[kInlineBytes];
  std::string large;
  const char* bytes = small;
  if (total <= sizeof(small)) {
    request.copy_to(small, total, 0);
  } else {
    large = request.to_string();
    bytes = large.data();
  }
  size_t pos = 0;
  while (pos < total) {
    if (total - pos < 4) {
      Clear();
      return false;
    }
    const unsigned char* p = reinterpret_cast<const unsigned char*>(bytes + pos);
    const size_t len = static_cast<size_t>(p[0]) | static_cast<size_t>(p[1]) << 8 |
                       static_cast<size_t>(p[2]) << 16 | static_cast<size_t>(p[3]) << 24;
    pos += 4;
    if (total - pos < len) {
      Clear();
      return false;
    }
    Append(std::string_view(bytes + pos, len));
    pos += len;
  }
  return true;
}

const RedisArgs* CommandArgs(const Controller& cntl, const IOBuf& request, RedisArgs* scratch) {
  const RedisArgs* const decoded = cntl.request_object<RedisArgs>();
  if (decoded != nullptr) return decoded->size() != 0 ? decoded : nullptr;
  if (!scratch->Parse(request) || scratch->size() == 0) return nullptr;
  return scratch;
}

void AppendRequestArg(IOBuf* request, std::string_view arg) {
  const uint32_t n = static_cast<uint32_t>(arg.size());
  const unsigned char hdr[4] = {static_cast<unsigned char>(n), static_cast<unsigned char>(n >> 8),
                                static_cast<unsigned char>(n >> 16),
                                static_cast<unsigned char>(n >> 24)};
  if (arg.size() + sizeof(hdr) <= kSmallReply) {
    char buf[kSmallReply];
    memcpy(buf, hdr, sizeof(hdr));
    if (!arg.empty()) memcpy(buf + sizeof(hdr), arg.data(), arg.size());
    request->append(buf, sizeof(hdr) + arg.size());
    return;
  }
  request->append(hdr, sizeof(hdr));
  request->append(arg);
}

void AppendStatus(IOBuf* out, std::string_view text) { AppendLine(out, '+', text, false); }

void AppendError(IOBuf* out, std::string_view text) { AppendLine(out, '-', text, true); }

void AppendInteger(IOBuf* out, int64_t n) { AppendPrefixed(out, ':', n); }

void AppendBulk(IOBuf* out, std::string_view bytes) {
  // The header is at most 23 bytes ("$" + 20 digits + CRLF).
  if (bytes.size() + 32 + 2 <= kSmallReply) {
    char buf[kSmallReply];
    char* const header_end = buf + 32;
    char* const start = FormatPrefixed(header_end, '$', static_cast<int64_t>(bytes.size()));
    if (!bytes.empty()) memcpy(header_end, bytes.data(), bytes.size());
    header_end[bytes.size()] = '\r';
    header_end[bytes.size() + 1] = '\n';
    out->append(start, static_cast<size_t>(header_end - start) + bytes.size() + 2);
    return;
  }
  AppendPrefixed(out, '$', static_cast<int64_t>(bytes.size()));
  out->append(bytes);
  out->append("\r\n", 2);
}

void AppendNullBulk(IOBuf* out) { out->append("$-1\r\n", 5); }

void AppendArrayHeader(IOBuf* out, int64_t n) { AppendPrefixed(out, '*', n); }

std::string WrongArgsError(std::string_view command) {
  std::string lower(command);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return "ERR wrong number of arguments for '" + lower + "' command";
}

std::string UnknownCommandError(const RedisArgs& args) {
  // Redis 7: the name and the first arguments, each cut at 128 bytes.
  auto quoted = [](std::string_view s) {
    std::string r = "'";
    r.append(s.substr(0, 128));
    r += "'";
    return r;
  };
  std::string text = "ERR unknown command ";
  text += args.size() > 0 ? quoted(args[0]) : "''";
  text += ", with args beginning with: ";
  // As Redis: arguments are added while the list is under 128 bytes, each
  // cut to what is left of the 128.
  std::string list;
  for (size_t i = 1; i < args.size() && list.size() < 128; ++i) {
    const size_t budget = 128 - list.size();
    list += '\'';
    list.append(args[i].substr(0, budget));
    list += "' ";
  }
  text += list;
  return text;
}

void RedisRequest::AddCommand(const std::vector<std::string_view>& args) {
  AppendArrayHeader(&buf_, static_cast<int64_t>(args.size()));
  for (std::string_view a : args) AppendBulk(&buf_, a);
  ++commands_;
}

}  // namespace weft::rpc::redis
