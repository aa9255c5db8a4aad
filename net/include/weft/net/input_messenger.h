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

  // Frees the message (calls DestroyImpl, by default `delete this`).
  void Destroy() { DestroyImpl(); }

  // The connection it came from (a reference held by the message).
  Socket* socket() const { return _socket.get(); }
  SocketUniquePtr& socket_ptr() { return _socket; }
  // The handler's `arg`.
  const void* arg() const { return _arg; }
  // CLOCK_MONOTONIC microseconds when the read that completed it returned.
  int64_t received_us() const { return _received_us; }

 protected:
  virtual ~InputMessageBase() = default;
  virtual void DestroyImpl() { delete this; }

 private:
  friend class InputMessenger;
  SocketUniquePtr _socket;
  void (*_process)(InputMessageBase*) = nullptr;
  const void* _arg = nullptr;
  int64_t _received_us = 0;
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

  bool is_ok() const { return _error == PARSE_OK; }
  ParseError error() const { return _error; }
  InputMessageBase* message() const { return _msg; }
  const char* error_str() const { return _why != nullptr ? _why : ParseErrorToString(_error); }

 private:
  ParseResult(ParseError e, InputMessageBase* m, const char* why) : _error(e), _msg(m), _why(why) {}
  ParseError _error;
  InputMessageBase* _msg;
  const char* _why;
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

class InputMessenger : public SocketUser {
 public:
  // Read sizes OnNewMessages chooses between.
  static constexpr size_t MIN_ONCE_READ = 4096;
  static constexpr size_t MAX_ONCE_READ = 512 * 1024;

  InputMessenger() = default;
  ~InputMessenger() override = default;

  // Registers a protocol; call before any connection uses the messenger.
  // Returns 0, or -1 with errno EINVAL (no parse or process).
  int AddHandler(const InputMessageHandler& handler);
  size_t handler_count() const { return _handlers.size(); }

  // The reading callback of sockets whose user is an InputMessenger.
  static void OnNewMessages(Socket* m);

 private:
  // Cuts one message from m's read buffer with m's protocol (choosing it on
  // the first message). *index receives the handler used.
  ParseResult CutInputMessage(Socket* m, size_t* index, bool read_eof);
  // Runs a message's process (fiber entry), then lets the connection's
  // postponed EOF through.
  static void* ProcessInputMessage(void* msg);
  // Starts a fiber for msg with BTHREAD_NOSIGNAL (the caller flushes).
  static void QueueMessage(InputMessageBase* msg, int* num_fibers);

  std::vector<InputMessageHandler> _handlers;
};

}  // namespace weft

#endif  // WEFT_NET_INPUT_MESSENGER_H_
