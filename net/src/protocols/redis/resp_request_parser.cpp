#include "protocols/redis/resp_request_parser.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <string_view>
#include <utility>

#include "weft/rpc/redis.h"

namespace weft::rpc::redis {

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == '\0';
}

// Splits an inline command line as redis-cli users expect (Redis'
// sdssplitargs): words separated by spaces, "double quotes" with \n \r \t
// \b \a \\ \" \xHH escapes, 'single quotes' with \'. A closing quote must
// end the word. False on unbalanced quotes.
bool SplitInline(std::string_view line, std::vector<std::string>* words) {
  size_t i = 0;
  const size_t n = line.size();
  for (;;) {
    while (i < n && IsSpace(line[i])) ++i;
    if (i == n) return true;
    std::string word;
    bool in_double = false;
    bool in_single = false;
    for (;;) {
      if (in_double) {
        if (i == n) return false;
        const char c = line[i];
        if (c == '\\' && i + 3 < n && line[i + 1] == 'x' && HexValue(line[i + 2]) >= 0 &&
            HexValue(line[i + 3]) >= 0) {
          word.push_back(static_cast<char>(HexValue(line[i + 2]) * 16 + HexValue(line[i + 3])));
          i += 4;
          continue;
        }
        if (c == '\\' && i + 1 < n) {
          const char e = line[i + 1];
          switch (e) {
            case 'n':
              word.push_back('\n');
              break;
            case 'r':
              word.push_back('\r');
              break;
            case 't':
              word.push_back('\t');
              break;
            case 'b':
              word.push_back('\b');
              break;
            case 'a':
              word.push_back('\a');
              break;
            default:
              word.push_back(e);
              break;
          }
          i += 2;
          continue;
        }
        if (c == '"') {
          ++i;
          if (i < n && !IsSpace(line[i])) return false;
          break;
        }
        word.push_back(c);
        ++i;
      } else if (in_single) {
        if (i == n) return false;
        const char c = line[i];
        if (c == '\\' && i + 1 < n && line[i + 1] == '\'') {
          word.push_back('\'');
          i += 2;
          continue;
        }
        if (c == '\'') {
          ++i;
          if (i < n && !IsSpace(line[i])) return false;
          break;
        }
        word.push_back(c);
        ++i;
      } else {
        if (i == n || IsSpace(line[i])) break;
        const char c = line[i];
        if (c == '"') {
          in_double = true;
        } else if (c == '\'') {
          in_single = true;
        } else {
          word.push_back(c);
        }
        ++i;
      }
    }
    words->push_back(std::move(word));
  }
}

std::string Lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return r;
}

constexpr size_t kMaxNameCopy = 1024;

// The fast path's bounds: a header line (count or length) of at most
// kFastDigitsMax digits before its CR (no overflow check needed), at most
// kFastMaxArgs arguments, an inline line of at most kFastLineBytes, and the
// command's argument bytes at most kFastBytesMax in all. Anything else
// takes the general path.
constexpr size_t kFastDigitsMax = 18;
constexpr int64_t kFastMaxArgs = 64;
constexpr size_t kFastLineBytes = 1024;
constexpr size_t kFastBytesMax = 1024;
// The most a command the fast path takes can cost against the query limit;
// under a limit this small (tests) the general path decides every command.
constexpr size_t kFastCostMax = kFastBytesMax + kFastMaxArgs * kArgCost;

void LowerInto(std::string_view s, std::string* out) {
  // clear + append, not assign: assign's general case (the source may lie
  // inside the string) cost three times as much per command.
  out->clear();
  out->append(s.data(), s.size());
  for (char& c : *out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
}

// The value of the header line (a count or a length) that starts at `pos`
// (b[pos] is its type byte), when the line is 1 to kFastDigitsMax plain
// digits and its CR, with the byte after the CR in b too; *cr is the CR's
// position. False for anything else (a sign, spaces, more digits, a line
// not yet whole): the general path decides. One pass over the digits:
// finding the CR first and parsing after cost twice as much, and the fast
// path refuses a negative or a long number anyway.
// Inlined: called three times per GET, its call cost as much as its loop.
__attribute__((always_inline)) inline bool FastHeaderValue(std::string_view b, size_t pos,
                                                           int64_t* v, size_t* cr) {
  const size_t first = pos + 1;
  if (first >= b.size()) return false;
  // One digit past the bound is read, to tell "too long" from "ends here".
  const size_t limit = b.size() - first > kFastDigitsMax ? first + kFastDigitsMax + 1 : b.size();
  // Unsigned: the 19th digit that ends the loop may overflow int64.
  uint64_t acc = 0;
  size_t i = first;
  for (; i < limit; ++i) {
    const unsigned d = static_cast<unsigned char>(b[i]) - unsigned{'0'};
    if (d > 9) break;
    acc = acc * 10 + d;
  }
  if (i == first || i - first > kFastDigitsMax || i + 1 >= b.size() || b[i] != '\r') return false;
  *v = static_cast<int64_t>(acc);
  *cr = i;
  return true;
}

}  // namespace

size_t RespRequestParser::ParseWhole(std::string_view b, RespCommand* out) {
  RedisArgs& args = out->args;
  args.Clear();
  // Whatever was appended before the general path takes over goes.
  const auto general_path = [&args] {
    args.Clear();
    return size_t{0};
  };
  size_t bytes = 0;
  size_t pos = 0;
  if (b.empty()) return 0;
  if (b[0] == '*') {
    size_t cr = 0;
    int64_t count = 0;
    if (!FastHeaderValue(b, 0, &count, &cr) || count <= 0 || count > kFastMaxArgs) return 0;
    pos = cr + 2;
    for (int64_t k = 0; k < count; ++k) {
      if (pos >= b.size() || b[pos] != '$') return general_path();
      size_t lcr = 0;
      int64_t len = 0;
      if (!FastHeaderValue(b, pos, &len, &lcr)) return general_path();
      const size_t body = lcr + 2;
      const size_t n = static_cast<size_t>(len);
      // The bulk and the two bytes after it (its CRLF, unchecked as in the
      // general path).
      if (b.size() - body < n + 2 || bytes + n > kFastBytesMax) return general_path();
      args.Append(b.substr(body, n));
      bytes += n;
      pos = body + n + 2;
    }
  } else {
    const size_t span = b.size() < kFastLineBytes ? b.size() : kFastLineBytes;
    const void* nl = memchr(b.data(), '\n', span);
    if (nl == nullptr) return 0;
    const size_t end = static_cast<size_t>(static_cast<const char*>(nl) - b.data());
    const std::string_view line = b.substr(0, end);
    // Quotes need SplitInline's unescaping: the general path.
    if (line.find_first_of("\"'") != std::string_view::npos) return 0;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && IsSpace(line[i])) ++i;
      if (i == line.size()) break;
      const size_t start = i;
      while (i < line.size() && !IsSpace(line[i])) ++i;
      args.Append(line.substr(start, i - start));
    }
    if (args.size() == 0) return 0;  // a blank line: skipped by the general path
    pos = end + 1;
  }
  LowerInto(args[0], &out->name);
  scanned_ = 0;
  return pos;
}

bool ParseInt64(const char* s, size_t n, int64_t* v) {
  if (n == 0 || n > 20) return false;
  size_t i = 0;
  bool negative = false;
  if (s[0] == '-') {
    negative = true;
    i = 1;
    if (n == 1) return false;
  }
  // Up to 18 digits cannot overflow: no per-digit bound check (its division
  // was most of this function's cost on the 1-3 digit lengths of RESP).
  if (n - i <= 18) {
    int64_t acc = 0;
    for (; i < n; ++i) {
      const unsigned d = static_cast<unsigned char>(s[i]) - unsigned{'0'};
      if (d > 9) return false;
      acc = acc * 10 + static_cast<int64_t>(d);
    }
    *v = negative ? -acc : acc;
    return true;
  }
  // Accumulated as a negative number so INT64_MIN parses too.
  int64_t acc = 0;
  for (; i < n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    const int d = s[i] - '0';
    if (acc < (INT64_MIN + d) / 10) return false;
    acc = acc * 10 - d;
  }
  if (!negative) {
    if (acc == INT64_MIN) return false;
    acc = -acc;
  }
  *v = acc;
  return true;
}

void RespRequestParser::Reset() {
  state_ = kStart;
  scanned_ = 0;
  argc_expected_ = 0;
  bulk_length_ = 0;
  command_bytes_ = 0;
}

RespRequestParser::Result RespRequestParser::Fail(std::string text) {
  error_ = std::move(text);
  return kError;
}

size_t RespRequestParser::Find(const IOBuf& source, char c) {
  size_t base = 0;
  for (size_t b = 0; b < source.backing_block_num(); ++b) {
    const std::string_view block = source.backing_block(b);
    if (scanned_ < base + block.size()) {
      const size_t from = scanned_ > base ? scanned_ - base : 0;
      const void* hit = memchr(block.data() + from, c, block.size() - from);
      if (hit != nullptr) {
        return base + static_cast<size_t>(static_cast<const char*>(hit) - block.data());
      }
      scanned_ = base + block.size();
    }
    base += block.size();
  }
  return IOBuf::npos;
}

RespRequestParser::Result RespRequestParser::ParseInline(IOBuf* source, RespCommand* out) {
  const size_t nl = Find(*source, '\n');
  if (nl == IOBuf::npos) {
    if (source->size() > kMaxInlineSize) return Fail("Protocol error: too big inline request");
    return kNeedMore;
  }
  if (nl > kMaxInlineSize) return Fail("Protocol error: too big inline request");
  std::string line;
  source->cutn(&line, nl + 1);
  scanned_ = 0;
  line.pop_back();
  if (!line.empty() && line.back() == '\r') line.pop_back();
  std::vector<std::string> words;
  if (!SplitInline(line, &words)) return Fail("Protocol error: unbalanced quotes in request");
  if (words.empty()) return kNeedMore;  // a blank line: skipped (caller loops)
  out->name = Lower(words[0]);
  out->args.Clear();
  for (const std::string& w : words) out->args.Append(w);
  return kOk;
}

RespRequestParser::Result RespRequestParser::Parse(IOBuf* source, RespCommand* out) {
  if (!error_.empty()) return kError;
  for (;;) {
    switch (state_) {
      case kStart: {
        if (source->empty()) return kNeedMore;
        if (max_command_bytes_ >= kFastCostMax) {
          // A whole small command in the first block, the usual case of
          // a pipeline: parsed in place, one copy and one pop_front.
          const size_t used = ParseWhole(source->backing_block(0), out);
          if (used != 0) {
            source->pop_front(used);
            return kOk;
          }
        }
        if (source->byte_at(0) != '*') {
          const size_t before = source->size();
          const Result r = ParseInline(source, &partial_);
          if (r == kNeedMore && source->size() != before) continue;  // blank line
          if (r == kOk) {
            *out = std::move(partial_);
            partial_ = RespCommand();
          }
          return r;
        }
        const size_t cr = Find(*source, '\r');
        // The count line ends with CRLF: its CR and the byte after it.
        if (cr == IOBuf::npos || cr + 1 >= source->size()) {
          if (source->size() > kMaxInlineSize) {
            return Fail("Protocol error: too big mbulk count string");
          }
          return kNeedMore;
        }
        if (cr > kMaxInlineSize) return Fail("Protocol error: too big mbulk count string");
        char digits[32];
        const size_t len = cr - 1;
        int64_t count = 0;
        if (len > sizeof(digits)) return Fail("Protocol error: invalid multibulk length");
        source->copy_to(digits, len, 1);
        if (!ParseInt64(digits, len, &count) || count > INT_MAX) {
          return Fail("Protocol error: invalid multibulk length");
        }
        source->pop_front(cr + 2);
        scanned_ = 0;
        if (count <= 0) continue;  // an empty command: skipped
        argc_expected_ = count;
        command_bytes_ = 0;
        partial_ = RespCommand();
        state_ = kArgHeader;
        break;
      }
      case kArgHeader: {
        if (source->empty()) return kNeedMore;
        const char first = source->byte_at(0);
        if (first != '$') {
          char text[64];
          snprintf(text, sizeof(text), "Protocol error: expected '$', got '%c'", first);
          return Fail(text);
        }
        const size_t cr = Find(*source, '\r');
        if (cr == IOBuf::npos || cr + 1 >= source->size()) {
          if (source->size() > kMaxInlineSize) {
            return Fail("Protocol error: too big bulk count string");
          }
          return kNeedMore;
        }
        if (cr > kMaxInlineSize) return Fail("Protocol error: too big bulk count string");
        char digits[32];
        const size_t len = cr - 1;
        int64_t length = 0;
        if (len > sizeof(digits)) return Fail("Protocol error: invalid bulk length");
        source->copy_to(digits, len, 1);
        if (!ParseInt64(digits, len, &length) || length < 0 || length > kMaxBulkLength) {
          return Fail("Protocol error: invalid bulk length");
        }
        // Refused before the bytes arrive, so they never accumulate. Both
        // terms are at most the limit here (checked per argument), so the
        // sum cannot overflow.
        const size_t cost = static_cast<size_t>(length) + kArgCost;
        if (cost > max_command_bytes_ || command_bytes_ > max_command_bytes_ - cost) {
          return Fail("Protocol error: command over the query limit");
        }
        command_bytes_ += cost;
        source->pop_front(cr + 2);
        scanned_ = 0;
        bulk_length_ = length;
        state_ = kArgBody;
        break;
      }
      case kArgBody: {
        // The bulk and its CRLF (not checked, as Redis does not).
        const size_t need = static_cast<size_t>(bulk_length_) + 2;
        if (source->size() < need) return kNeedMore;
        const size_t n = static_cast<size_t>(bulk_length_);
        if (partial_.args.size() == 0) {
          // Names past kMaxNameCopy match no method (those are at most 255
          // bytes), so a huge arg 0 is not copied whole.
          std::string name;
          source->copy_to(&name, n < kMaxNameCopy ? n : kMaxNameCopy, 0);
          partial_.name = Lower(name);
        }
        // Copied once, into the command's own bytes, where the method
        // reads it.
        source->copy_to(partial_.args.AppendUninitialized(n), n, 0);
        source->pop_front(n + 2);
        if (static_cast<int64_t>(partial_.args.size()) == argc_expected_) {
          *out = std::move(partial_);
          partial_ = RespCommand();
          Reset();
          return kOk;
        }
        state_ = kArgHeader;
        break;
      }
    }
  }
}

}  // namespace weft::rpc::redis
