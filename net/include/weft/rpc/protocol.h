// weft/rpc/protocol.h: what a protocol gives the rpc layer, and the
// registry of protocols by name.
//
// A protocol is a struct of callbacks registered once by name. The Server
// turns each protocol it speaks into an InputMessageHandler of its
// Acceptor (parse, process_request, verify), and a client messenger does
// the same with process_response; the server, channel and messenger only
// ever see this struct, never a concrete protocol. Built-in protocols
// (weft_std) are registered before the registry is first used.
//
// The `arg` a protocol's parse receives, and InputMessageBase::arg() of the
// messages it cuts, is the `weft::rpc::Server*` on a server's connections
// and nullptr on a client's: parse can tell which side it runs on (a
// response arriving at a server is malformed), and process_request finds
// its Server there, never through a global.
//
// Per-connection state (a partial parse, an authentication verdict) lives
// in the connection, never in the SocketUser, which all connections of a
// server share.
#ifndef WEFT_RPC_PROTOCOL_H_
#define WEFT_RPC_PROTOCOL_H_

#include <stdint.h>

#include <string_view>
#include <vector>

#include "weft/net/input_messenger.h"
#include "weft/net/iobuf.h"
#include "weft/net/socket.h"

namespace weft::rpc {

class Controller;

// How a client reaches a server (bits of Protocol::supported_connection_
// types). single: one connection per server shared by every call (needs
// correlation ids); pooled: one connection per call in flight, reused;
// short: a connection per call.
enum ConnectionType : unsigned {
  kSingle = 1u << 0,
  kPooled = 1u << 1,
  kShort = 1u << 2,
};

// "single", "pooled", "short" -> *type; false (and *type untouched) for
// anything else.
bool ParseConnectionType(std::string_view text, ConnectionType* type);
// "single" / "pooled" / "short", or "unknown".
const char* ConnectionTypeName(ConnectionType type);

struct Protocol {
  // Cuts one message off the front of `source` (the connection's read
  // buffer), as InputMessageHandler::parse: PARSE_OK with the message,
  // NOT_ENOUGH_DATA on a prefix, TRY_OTHERS when the bytes are not this
  // protocol's, TOO_BIG_DATA / ABSOLUTELY_WRONG (with a `why`) to close the
  // connection. Runs in the connection's reading fiber (one at a time per
  // connection). `socket` may be nullptr when called outside a connection
  // (tests).
  ParseResult (*parse)(IOBuf* source, Socket* socket, bool read_eof, const void* arg) = nullptr;
  // Server side: runs a request (msg->arg() is the Server) and answers
  // through msg->socket(); owns msg (ends with msg->Destroy(), perhaps
  // later and from another fiber). Runs in a fiber.
  void (*process_request)(InputMessageBase* msg) = nullptr;
  // Client side: matches a response to its call by correlation id; owns
  // msg. Runs in a fiber.
  void (*process_response)(InputMessageBase* msg) = nullptr;
  // Client side, once per call: the request body to send (errors go to
  // cntl->SetFailed).
  void (*serialize_request)(IOBuf* out, Controller* cntl, const IOBuf& request) = nullptr;
  // Client side, once per attempt (a retry packs again): the bytes to
  // write for `body` (from serialize_request) under correlation_id.
  // Errors go to cntl->SetFailed.
  void (*pack_request)(IOBuf* out, uint64_t correlation_id, const char* method, Controller* cntl,
                       const IOBuf& body) = nullptr;
  // Optional: authenticates a connection from its first message; false
  // closes the connection.
  bool (*verify)(const InputMessageBase* msg) = nullptr;
  // Bits of ConnectionType. A protocol without correlation ids (HTTP/1.1)
  // supports only kPooled | kShort.
  unsigned supported_connection_types = 0;
  // true: replies on one connection must leave in request order; the
  // server then runs one connection's requests one after another.
  bool in_order = false;
  // "weft_std", "redis", "http": static text.
  const char* name = nullptr;
};

// Registers a protocol under p.name (copied; name must stay valid).
// Returns 0, EEXIST when the name is taken, EINVAL when name, parse or both
// process callbacks are missing. Any thread, any time (usually at start-up
// from a global initializer); never suspends.
int RegisterProtocol(const Protocol& p);
// The protocol registered under `name`, or nullptr. The pointer stays valid
// for the life of the process. Any thread.
const Protocol* FindProtocol(std::string_view name);
// Every registered protocol, in registration order (built-ins first).
std::vector<const Protocol*> ListProtocols();

}  // namespace weft::rpc

#endif  // WEFT_RPC_PROTOCOL_H_
