// RESP2 writers and the method-request encoding of weft/rpc/redis.h.
#include <stdint.h>
#include <string.h>

#include "weft/rpc/redis.h"

namespace weft::rpc::redis {

namespace {

// "<type><n>\r\n" without snprintf (a reply header per command).
void AppendPrefixed(IOBuf* out, char type, int64_t n) {
  char buf[32];
  char* end = buf + sizeof(buf);
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
  out->append(p, static_cast<size_t>(end - p));
}

}  // namespace

void RedisArgs::Add(std::string_view arg) {
  if (count_ < kInlineArgs) {
    inline_args_[count_] = arg;
  } else {
    more_args_.push_back(arg);
  }
  ++count_;
}

bool RedisArgs::Parse(const IOBuf& request) {
  count_ = 0;
  more_args_.clear();
  const size_t total = request.size();
  const char* bytes;
  if (total <= kInlineBytes) {
    request.copy_to(inline_bytes_, total, 0);
    bytes = inline_bytes_;
  } else {
    heap_bytes_ = request.to_string();
    bytes = heap_bytes_.data();
  }
  size_t pos = 0;
  while (pos < total) {
    if (total - pos < 4) {
      count_ = 0;
      more_args_.clear();
      return false;
    }
    const unsigned char* p = reinterpret_cast<const unsigned char*>(bytes + pos);
    const size_t len = static_cast<size_t>(p[0]) | static_cast<size_t>(p[1]) << 8 |
                       static_cast<size_t>(p[2]) << 16 | static_cast<size_t>(p[3]) << 24;
    pos += 4;
    if (total - pos < len) {
      count_ = 0;
      more_args_.clear();
      return false;
    }
    Add(std::string_view(bytes + pos, len));
    pos += len;
  }
  return true;
}

void AppendRequestArg(IOBuf* request, std::string_view arg) {
  const uint32_t n = static_cast<uint32_t>(arg.size());
  const unsigned char hdr[4] = {static_cast<unsigned char>(n), static_cast<unsigned char>(n >> 8),
                                static_cast<unsigned char>(n >> 16),
                                static_cast<unsigned char>(n >> 24)};
  request->append(hdr, sizeof(hdr));
  request->append(arg);
}

void AppendStatus(IOBuf* out, std::string_view text) {
  out->push_back('+');
  out->append(text);
  out->append("\r\n", 2);
}

void AppendError(IOBuf* out, std::string_view text) {
  std::string clean(text);
  for (char& c : clean) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  out->push_back('-');
  out->append(clean);
  out->append("\r\n", 2);
}

void AppendInteger(IOBuf* out, int64_t n) { AppendPrefixed(out, ':', n); }

void AppendBulk(IOBuf* out, std::string_view bytes) {
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
