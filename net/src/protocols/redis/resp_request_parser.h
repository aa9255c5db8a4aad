// RespRequestParser: cuts Redis commands (RESP2 arrays of bulk strings, or
// inline lines) off a connection's bytes, incrementally.
//
// Limits, as redis-server sets them:
// - a bulk string is at most kMaxBulkLength (512 MB); a negative or larger
//   length is "Protocol error: invalid bulk length";
// - an array count is at most INT_MAX ("invalid multibulk length"); the
//   count is never used to reserve memory, so "*2000000000" costs nothing
//   until the arguments arrive;
// - an inline line, a count line or a length line without its end past
//   kMaxInlineSize (64 KiB) is an error (a peer that never sends the CR
//   cannot make the parser hold more);
// - requests are flat: an element that is not a bulk string (a nested
//   array) is "Protocol error: expected '$', got '*'".
// And one that redis-server's query buffer limit does not cover: an array
// command's arguments together (their bytes plus kArgCost each) are at
// most max_command_bytes(), decided from each bulk's length line before
// its bytes are read ("Protocol error: command over the query limit").
// Without it one command ("*1000" and 512 MB bulks, or "*2000000000" and
// empty ones) could hold any amount of memory. An inline command is
// bounded by its line already.
// The parser consumes whole lines and whole bulks as they arrive and keeps
// where it is between calls, so a command trickled one byte at a time is
// scanned once, not once per read. A small command that lies whole in the
// buffer's first block (the usual case of a pipeline) is parsed in place
// instead, with the same result.
//
// One parser per connection, used by its reading fiber only (no locking).
#ifndef WEFT_NET_SRC_PROTOCOLS_REDIS_RESP_REQUEST_PARSER_H_
#define WEFT_NET_SRC_PROTOCOLS_REDIS_RESP_REQUEST_PARSER_H_

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <string_view>

#include "weft/net/iobuf.h"
#include "weft/rpc/redis.h"

namespace weft::rpc::redis {

inline constexpr int64_t kMaxBulkLength = int64_t{512} * 1024 * 1024;
inline constexpr size_t kMaxInlineSize = 64 * 1024;
// What one argument costs besides its bytes (RedisArgs' span of it), so
// empty arguments count too.
inline constexpr size_t kArgCost = 16;

// One command: its arguments, decoded once here and handed to the method
// as they are (CommandArgs, weft/rpc/redis.h), and its name (arg 0)
// lower-cased, for the method lookup.
struct RespCommand {
  // User-provided, so the batch's emplace_back() (value-initialization)
  // does not zero the whole command (RedisArgs' inline bytes) first.
  RespCommand() {}
  RedisArgs args;
  std::string name;
};

class RespRequestParser {
 public:
  enum Result {
    kOk,        // *out holds a command (consumed from source)
    kNeedMore,  // what is buffered is a prefix (perhaps partly consumed)
    kError,     // a protocol error: error() says which; the parser is done
  };

  // Cuts the next command from the front of `source` into *out (reset
  // first). Empty commands ("*0", "*-1", blank inline lines) are consumed
  // and skipped, as Redis does.
  Result Parse(IOBuf* source, RespCommand* out);

  // The bound on one command's arguments (see above); unlimited unless
  // set. Takes effect from the next argument on.
  void set_max_command_bytes(size_t n) { max_command_bytes_ = n; }
  size_t max_command_bytes() const { return max_command_bytes_; }

  // Between commands: nothing of the next one consumed yet.
  bool at_command_start() const { return state_ == kStart; }

  // The error's text as Redis words it (no '-' and no CRLF), after kError.
  const std::string& error() const { return error_; }

 private:
  enum State { kStart, kArgHeader, kArgBody };

  Result Fail(std::string text);
  // The position of the first `c` in source at or after scanned_ (moving
  // scanned_ past the bytes looked at), or npos.
  size_t Find(const IOBuf& source, char c);
  Result ParseInline(IOBuf* source, RespCommand* out);
  // At a command's start: when `block` (the first block of the buffer)
  // begins with a whole command within the fast path's bounds (small
  // bulks, short lines, no quotes), fills *out as the general path would
  // and returns the bytes it took; else 0 (the general path decides,
  // errors included). Parses in place: the arguments are copied once.
  size_t ParseWhole(std::string_view block, RespCommand* out);
  void Reset();

  State state_ = kStart;
  // Bytes of the current line already searched for its end.
  size_t scanned_ = 0;
  int64_t argc_expected_ = 0;
  int64_t bulk_length_ = 0;
  // The current command's cost so far (arguments read, kArgCost each),
  // against max_command_bytes_.
  size_t command_bytes_ = 0;
  size_t max_command_bytes_ = SIZE_MAX;
  RespCommand partial_;
  std::string error_;
};

// "123" / "-5" -> *v; false for anything else (empty, a sign alone, a '+',
// spaces, overflow), as Redis' string2ll.
bool ParseInt64(const char* s, size_t n, int64_t* v);

}  // namespace weft::rpc::redis

#endif  // WEFT_NET_SRC_PROTOCOLS_REDIS_RESP_REQUEST_PARSER_H_
