// weft/rpc/redis.h: what a program needs to serve or call Redis (RESP2)
// through weft::rpc, without knowing the protocol's internals.
//
// Serving: a Server speaking the "redis" protocol hands each command to
// Server::ProcessBatchedCall under its lower-cased name (arg 0): register one
// method per command ("get", "set", ...). The method's request holds the
// command's arguments, arg 0 included, encoded for RedisArgs; the method
// appends exactly one RESP reply to *response with the Append* writers
// below (or fails cntl, which the protocol turns into "-ERR <text>",
// dropping what it appended). *response may already hold the replies of
// the commands before it: append to it, never read, cut or clear it.
// Unknown commands are answered as Redis answers them.
//
// Calling: a Channel on the "redis" protocol sends a request built with
// RedisRequest; the call's response holds the replies in order, and
// RedisResponse splits them (see the end of this file).
#ifndef WEFT_RPC_REDIS_H_
#define WEFT_RPC_REDIS_H_

#include <stddef.h>
#include <stdint.h>

#include <string>
#include <string_view>
#include <vector>

#include "weft/net/iobuf.h"

namespace weft::rpc::redis {

// The arguments of one command, decoded from a method's request. Holds its
// own copy of the bytes: the views stay valid as long as the RedisArgs
// (and it is neither copied nor moved). A command of up to kInlineBytes
// bytes and kInlineArgs arguments (GET, SET, INCR...) is held inline, so
// decoding it allocates nothing.
class RedisArgs {
 public:
  static constexpr size_t kInlineBytes = 256;
  static constexpr size_t kInlineArgs = 8;

  RedisArgs() = default;
  RedisArgs(const RedisArgs&) = delete;
  RedisArgs& operator=(const RedisArgs&) = delete;

  // Decodes `request` (the encoding the redis protocol gives methods).
  // False on anything else (then size() is 0).
  bool Parse(const IOBuf& request);
  size_t size() const { return count_; }
  std::string_view operator[](size_t i) const {
    return i < kInlineArgs ? inline_args_[i] : more_args_[i - kInlineArgs];
  }

 private:
  void Add(std::string_view arg);

  // The bytes: inline_bytes_ when they fit, else heap_bytes_.
  char inline_bytes_[kInlineBytes];
  std::string heap_bytes_;
  std::string_view inline_args_[kInlineArgs];
  std::vector<std::string_view> more_args_;
  size_t count_ = 0;
};

// Appends one argument to a method request in RedisArgs' encoding (a
// 4-byte little-endian length, then the bytes). For tests and for callers
// that run methods without the protocol.
void AppendRequestArg(IOBuf* request, std::string_view arg);

// ---- RESP2 writers: each appends one reply (or an array header) ----
// "+text\r\n". text must hold no CR or LF.
void AppendStatus(IOBuf* out, std::string_view text);
// "-text\r\n" (text like "ERR ..." or "WRONGTYPE ..."); CR and LF in text
// are replaced by spaces, as Redis does.
void AppendError(IOBuf* out, std::string_view text);
// ":n\r\n".
void AppendInteger(IOBuf* out, int64_t n);
// "$len\r\nbytes\r\n".
void AppendBulk(IOBuf* out, std::string_view bytes);
// "$-1\r\n": a missing value.
void AppendNullBulk(IOBuf* out);
// "*n\r\n": the next n replies are the array's elements.
void AppendArrayHeader(IOBuf* out, int64_t n);

// Redis' wording of the common errors (without the leading '-').
std::string WrongArgsError(std::string_view command);
std::string UnknownCommandError(const RedisArgs& args);

// ---- client side ----
// A request of one or more commands, sent in one write (pipelined).
class RedisRequest {
 public:
  // Appends a command as an array of bulk strings.
  void AddCommand(const std::vector<std::string_view>& args);
  size_t command_count() const { return commands_; }
  const IOBuf& buf() const { return buf_; }

 private:
  IOBuf buf_;
  size_t commands_ = 0;
};

// One reply, decoded. Arrays nest (elements); a nil bulk or array is kNil.
struct RedisReply {
  enum Type { kStatus, kError, kInteger, kBulk, kNil, kArray };
  Type type = kNil;
  std::string str;  // kStatus, kError, kBulk
  int64_t integer = 0;
  std::vector<RedisReply> elements;
};

// Splits a call's response (the replies of its commands, in order) into
// replies. False when the bytes are not whole RESP2 replies.
bool ParseReplies(const IOBuf& response, std::vector<RedisReply>* replies);

}  // namespace weft::rpc::redis

#endif  // WEFT_RPC_REDIS_H_
