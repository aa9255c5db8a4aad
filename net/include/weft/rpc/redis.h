// weft/rpc/redis.h: what a program needs to serve or call Redis (RESP2)
// through weft::rpc, without knowing the protocol's internals.
//
// Serving: a Server speaking the "redis" protocol hands each command to
// Server::ProcessBatchedCall under its lower-cased name (arg 0): register one
// method per command ("get", "set", ...). The method finds the command's
// arguments, arg 0 included, with CommandArgs(*cntl, request, &scratch):
// the protocol hands them over already decoded (its request IOBuf is then
// empty), while a caller that runs the method some other way (a test,
// another protocol) passes them in the request, encoded with
// AppendRequestArg. The method appends exactly one RESP reply to *response
// with the Append* writers below (or fails cntl, which the protocol turns
// into "-ERR <text>", dropping what it appended). *response may already
// hold the replies of the commands before it: append to it, never read,
// cut or clear it. Unknown commands are answered as Redis answers them.
//
// Calling: a Channel on the "redis" protocol sends a request built with
// RedisRequest; the call's response holds the replies in order, and
// RedisResponse splits them (see the end of this file).
#ifndef WEFT_RPC_REDIS_H_
#define WEFT_RPC_REDIS_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <string>
#include <string_view>
#include <vector>

#include "weft/net/iobuf.h"

namespace weft::rpc {
class Controller;
}  // namespace weft::rpc

namespace weft::rpc::redis {

// The arguments of one command. Holds its own copy of the bytes: a view
// stays valid until the RedisArgs changes (Clear, Append, Parse, a move
// into or out of it) or is destroyed. A command of up to kInlineBytes
// bytes and kInlineArgs arguments (GET, SET, INCR...) is held inline, so
// building it allocates nothing. Movable (a move copies the inline bytes),
// not copyable.
class RedisArgs {
 public:
  static constexpr size_t kInlineBytes = 256;
  static constexpr size_t kInlineArgs = 8;

  // User-provided, so a value-initialized RedisArgs (a vector's
  // emplace_back()) does not first zero its inline bytes.
  RedisArgs() {}
  RedisArgs(RedisArgs&& other) noexcept;
  RedisArgs& operator=(RedisArgs&& other) noexcept;
  RedisArgs(const RedisArgs&) = delete;
  RedisArgs& operator=(const RedisArgs&) = delete;

  // Decodes `request` (AppendRequestArg's encoding) in place of what was
  // held. False on anything else (then size() is 0).
  bool Parse(const IOBuf& request);

  // Building (the protocol's parser, tests): no arguments, then one more.
  // `arg` must not view this RedisArgs' own bytes (a growth may move them).
  void Clear();
  void Append(std::string_view arg) {
    // Inline here: the parser appends every argument of every command.
    if (count_ < kInlineArgs && !on_heap_ && arg.size() <= kInlineBytes - used_) {
      inline_spans_[count_++] = Span{used_, arg.size()};
      if (!arg.empty()) memcpy(inline_bytes_ + used_, arg.data(), arg.size());
      used_ += arg.size();
      return;
    }
    AppendSlow(arg);
  }
  // Appends an argument of n bytes and returns where its bytes go (the
  // caller writes all n before reading it; valid until the next change).
  char* AppendUninitialized(size_t n);

  size_t size() const { return count_; }
  std::string_view operator[](size_t i) const {
    const Span& s = i < kInlineArgs ? inline_spans_[i] : more_spans_[i - kInlineArgs];
    return std::string_view((on_heap_ ? heap_bytes_.data() : inline_bytes_) + s.offset, s.length);
  }

 private:
  // Where an argument lies in the bytes: offsets, not pointers, so a move
  // (and the switch to heap_bytes_ as the bytes grow) keeps them right.
  struct Span {
    size_t offset;
    size_t length;
  };

  void AppendSlow(std::string_view arg);

  // The bytes: inline_bytes_ until they outgrow it, then heap_bytes_
  // (on_heap_), whose size is used_.
  char inline_bytes_[kInlineBytes];
  std::string heap_bytes_;
  size_t used_ = 0;
  bool on_heap_ = false;
  Span inline_spans_[kInlineArgs];
  std::vector<Span> more_spans_;
  size_t count_ = 0;
};

// The arguments of the command a method runs: those the redis protocol
// decoded (no copy, valid until the method's done runs), or else
// `request` decoded into *scratch (a caller that runs the method itself);
// nullptr when neither holds a command (empty or malformed).
const RedisArgs* CommandArgs(const Controller& cntl, const IOBuf& request, RedisArgs* scratch);

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
