// weft/net/input_messenger.h: cutting messages out of a connection's bytes
// and running them.
//
// A protocol is a plain struct of callbacks (InputMessageHandler): `parse`
// cuts one message off the front of the connection's read buffer, `process`
// runs it, `verify` (optional) authenticates the connection from its first
// message. An InputMessenger holds the protocols a server or client speaks;
// InputMessenger::OnNewMessages is the reading callback of its sockets
// (SocketOptions::on_edge_triggered_events, with the messenger as the
// socket's user; an Acceptor is an InputMessenger).
//
// OnNewMessages, run by at most one fiber per connection:
// - reads with an adaptive size: 16 times the connection's average message
//   size, clamped to [MIN_ONCE_READ, MAX_ONCE_READ];
// - cuts every complete message with the connection's protocol (the first
//   that does not answer PARSE_ERROR_TRY_OTHERS is kept for the
//   connection); a message that cannot be parsed closes the connection;
// - runs `verify` once per connection, on the first message, before any
//   `process`; a connection that fails it is closed;
// - runs every message but the last of a read in new fibers (started with
//   BTHREAD_NOSIGNAL, then one bthread_flush), the last in the reading fiber
//   itself, so a connection that sends one request at a time pays no fiber
//   start;
// - at end of file calls `parse` once more with read_eof = true (protocols
//   whose last message ends with the connection produce it then) and closes.
//
// Bounds on a hostile peer (each closes or pauses only its own connection):
// - a partial message (bytes buffered plus bytes a parser consumed without
//   completing a message) over --weft_max_body_size + MAX_HEADER_ALLOWANCE
//   closes the connection with EMSGSIZE;
// - the bytes held in all connections' read buffers are counted; when a
//   read takes the total over --weft_max_read_buffer_bytes, that connection
//   closes with ENOMEM if it holds at least the average share of the
//   connections holding bytes (so the largest holder always qualifies),
//   else it stops reading until the total is back under the cap;
// - the idle timer (Socket::last_active_us) moves on complete messages, not
//   on bytes, and a partial message not completed in --weft_read_timeout_ms
//   closes the connection with ETIMEDOUT (checked at each read and by the
//   Acceptor's closer fiber);
// - at most --weft_max_messages_in_flight_per_connection messages cut from
//   a connection run at once; past it the connection is not read (TCP
//   pushes back) until some finish;
// - while the connection's unwritten output is at or over
//   --weft_socket_max_unwritten_bytes (writes fail with EOVERCROWDED), the
//   connection is not read until the output falls under half of it;
// - a parse that returns PARSE_OK without consuming a byte is a protocol
//   bug that would spin the reader: it is logged and the connection closes
//   with EPROTO.
#ifndef WEFT_NET_INPUT_MESSENGER_H_
#define WEFT_NET_INPUT_MESSENGER_H_

#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "weft/net/iobuf.h"
#include "weft/net/socket.h"

namespace weft {

enum ParseError {
  PARSE_OK = 0,
  // The buffer holds a prefix of a message: read more.
  PARSE_ERROR_NOT_ENOUGH_DATA,
  // The bytes are not this protocol's: try the next protocol.
  PARSE_ERROR_TRY_OTHERS,
  // A message larger than the protocol accepts (--weft_max_body_size).
  PARSE_ERROR_TOO_BIG_DATA,
  // The bytes are this protocol's but malformed.
  PARSE_ERROR_ABSOLUTELY_WRONG,
};

const char* ParseErrorToString(ParseError e);

// A parsed message. Subclass it with the protocol's fields; `process`
// receives it and must end with msg->Destroy().
class InputMessageBase {
 public:
  InputMessageBase() = default;
  InputMessageBase(const InputMessageBase&) = delete;
  InputMessageBase& operator=(const InputMessageBase&) = delete;

  // Frees the message (calls DestroyImpl, by default `delete this`). A
  // connection the peer half-closed stays open until every message cut
  // from it is destroyed, not merely processed: a handler may keep the
  // message and answer later (from any fiber or pthread), and its reply is
  // still written before the graceful close. Keep socket_ptr() in the
  // message until then.
  void Destroy();

  // The connection it came from (a reference held by the message).
  Socket* socket() const { return socket_.get(); }
  SocketUniquePtr& socket_ptr() { return socket_; }
  // The handler's `arg`.
  const void* arg() const { return arg_; }
  // CLOCK_MONOTONIC microseconds when the read that completed it returned.
  int64_t received_us() const { return received_us_; }

 protected:
  virtual ~InputMessageBase() = default;
  virtual void DestroyImpl() { delete this; }

 private:
  friend class InputMessenger;
  SocketUniquePtr socket_;
  // Set when the message holds the connection's EOF pending (PostponeEOF);
  // Destroy() lets it go.
  bool holds_eof_ = false;
  void (*process_)(InputMessageBase*) = nullptr;
  const void* arg_ = nullptr;
  int64_t received_us_ = 0;
};

class ParseResult {
 public:
  // A message was cut off the buffer (msg may be null: nothing to process,
  // e.g. a keep-alive frame).
  static ParseResult Ok(InputMessageBase* msg) { return ParseResult(PARSE_OK, msg, nullptr); }
  // `why` (static text) is logged when the error closes the connection.
  static ParseResult Error(ParseError err, const char* why = nullptr) {
    return ParseResult(err, nullptr, why);
  }

  bool is_ok() const { return error_ == PARSE_OK; }
  ParseError error() const { return error_; }
  InputMessageBase* message() const { return msg_; }
  const char* error_str() const { return why_ != nullptr ? why_ : ParseErrorToString(error_); }

 private:
  ParseResult(ParseError e, InputMessageBase* m, const char* why) : error_(e), msg_(m), why_(why) {}
  ParseError error_;
  InputMessageBase* msg_;
  const char* why_;
};

struct InputMessageHandler {
  // Cuts one message from the front of `source` (the connection's read
  // buffer): PARSE_OK with what it removed, or an error with `source`
  // untouched. read_eof: the peer closed; no more bytes will come.
  ParseResult (*parse)(IOBuf* source, Socket* socket, bool read_eof, const void* arg) = nullptr;
  // Runs one message; owns it (must call msg->Destroy()).
  void (*process)(InputMessageBase* msg) = nullptr;
  // Optional: authenticates the connection from its first message; false
  // closes the connection.
  bool (*verify)(const InputMessageBase* msg) = nullptr;
  const void* arg = nullptr;
  const char* name = "";
};

// --weft_max_body_size: the largest message protocols should accept
// (PARSE_ERROR_TOO_BIG_DATA beyond it).
int64_t max_body_size();

// Bytes held in read buffers of all connections, process-wide (counted by
// InputMessenger after each read; see --weft_max_read_buffer_bytes).
int64_t read_buffer_bytes();

// --weft_read_timeout_ms (<= 0: none).
int read_timeout_ms();

class InputMessenger : public SocketUser {
 public:
  // Read sizes OnNewMessages chooses between.
  static constexpr size_t MIN_ONCE_READ = 4096;
  static constexpr size_t MAX_ONCE_READ = 512 * 1024;
  // Room for a protocol's header on top of --weft_max_body_size: a partial
  // message may be this much bigger before it is refused.
  static constexpr int64_t MAX_HEADER_ALLOWANCE = 64 * 1024;
  // A paused reader re-checks conditions nobody wakes it for (the output
  // drained, the process total fell, the socket failed) this often.
  static constexpr int PAUSE_POLL_MS = 10;

  InputMessenger() : SocketUser(Kind::kInputMessenger) {}
  ~InputMessenger() override = default;

  // Registers a protocol; call before any connection uses the messenger.
  // Returns 0, or -1 with errno EINVAL (no parse or process).
  int AddHandler(const InputMessageHandler& handler);
  size_t handler_count() const { return handlers_.size(); }

  // The reading callback of sockets whose user is an InputMessenger.
  static void OnNewMessages(Socket* m);

 protected:
  // Fails m (ETIMEDOUT) when its partial message began more than
  // --weft_read_timeout_ms before now_us (coarse CLOCK_MONOTONIC). Any
  // thread. True when it failed m.
  static bool CloseIfReadTimedOut(Socket* m, int64_t now_us);

 private:
  // Cuts one message from m's read buffer with m's protocol (choosing it on
  // the first message). *index receives the handler used.
  ParseResult CutInputMessage(Socket* m, size_t* index, bool read_eof);
  friend class InputMessageBase;
  // Runs a message's process (fiber entry). The connection's postponed EOF
  // goes when the message is destroyed (ReleaseEOF).
  static void* ProcessInputMessage(void* msg);
  // The end of a message that held the connection's EOF
  // (InputMessageBase::Destroy).
  static void ReleaseEOF(Socket* s);
  // Starts a fiber for msg with BTHREAD_NOSIGNAL (the caller flushes).
  static void QueueMessage(InputMessageBase* msg, int* num_fibers);
  // Suspends m's reading fiber while must_wait(m, arg) holds, re-checking
  // when a message of m finishes and every PAUSE_POLL_MS. False (at once)
  // when m failed.
  static bool PauseReading(Socket* m, bool (*must_wait)(const Socket*, int64_t), int64_t arg);
  static bool TooManyInFlight(const Socket* m, int64_t cap);
  static bool OutputOvercrowded(const Socket* m, int64_t limit);
  static bool OverReadBudget(const Socket* m, int64_t cap);
  // Brings m's share of the process-wide read-buffer count to its read
  // buffer's size. Reading fiber only. Returns the new total.
  static int64_t UpdateReadBufferBudget(Socket* m);
  // After a read was cut: enforces the body size, read timeout and process
  // read-buffer cap (see the top of this file). False when m was failed;
  // *over_budget: m must not read until the total is under the cap.
  static bool CheckReadBounds(Socket* m, bool completed, int64_t now_us, bool* over_budget);

  std::vector<InputMessageHandler> handlers_;
};

}  // namespace weft

#endif  // WEFT_NET_INPUT_MESSENGER_H_
