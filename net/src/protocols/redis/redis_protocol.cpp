#include "protocols/redis/redis_protocol.h"

#include <errno.h>
#include <gflags/gflags.h>
#include <string.h>

#include <atomic>
#include <map>
#include <mutex>
#include <utility>

#include "net_log.h"
#include "protocols/redis/redis_client.h"
#include "weft/rpc/errno.h"
#include "weft/rpc/redis.h"
#include "weft/rpc/reply_orderer.h"
#include "weft/rpc/server.h"

DEFINE_int64(weft_redis_client_output_limit, int64_t{256} * 1024 * 1024,
             "A redis connection whose unwritten replies pass this many bytes is closed "
             "(a client that pipelines and does not read); <= 0: no limit");

namespace weft::rpc::redis {

namespace {

// A server connection's redis state. Owned by the socket (kProtocol slot),
// deleted when it recycles; whoever touches it holds a socket reference.
class RedisConnection : public SocketContext {
 public:
  // Reading fiber only.
  RespRequestParser parser;
  // Set by the reading fiber after a protocol error: later bytes are
  // dropped (the connection closes after the error's reply).
  bool broken = false;
  // Reading fiber only: a command was cut, so the connection speaks RESP
  // (before that, bytes of another protocol are left to it).
  bool chosen = false;
  ReplyOrderer orderer;
  // Set once a reply closes the connection (QUIT, a protocol error): later
  // commands are not run, as Redis stops reading such a client. Touched
  // only by the fiber running the chain of commands; the hand-over between
  // such fibers goes through mu_ (Done/Submit) or ServerCall::phase.
  bool closed = false;
  // Replies of commands batch_first .. batch_first + batch_count - 1, not
  // yet handed to the orderer (SendReply). Chain role only, as `closed`.
  IOBuf batch;
  uint64_t batch_first = 0;
  uint64_t batch_count = 0;
  // Commands cut so far (seq + 1 of the newest). Written by the reading
  // fiber (release, after the message is made), read by the chain.
  std::atomic<uint64_t> cut{0};

  // Queues msg and returns the message the caller must run now (msg, or
  // nullptr when a command before it is missing or one is running). Any
  // fiber.
  RedisMessage* Submit(RedisMessage* msg) {
    std::lock_guard<std::mutex> guard(mu_);
    ready_.emplace(msg->seq, msg);
    if (running_) return nullptr;
    return TakeNextLocked();
  }
  // The running command ended: the next one to run, or nullptr (then
  // nobody runs until Submit brings the next in order). Only the fiber that
  // runs commands (the one Submit or Done handed a message to).
  RedisMessage* Done() {
    std::lock_guard<std::mutex> guard(mu_);
    ++next_to_run_;
    running_ = false;
    return TakeNextLocked();
  }

 private:
  RedisMessage* TakeNextLocked() {
    auto it = ready_.begin();
    if (it == ready_.end() || it->first != next_to_run_) return nullptr;
    RedisMessage* m = it->second;
    ready_.erase(it);
    running_ = true;
    return m;
  }

  // Commands run one at a time in seq order: running_ says one is running,
  // ready_ holds those parsed (their fibers started) and not yet run.
  // Guarded by mu_ (held only to move pointers, never across a command).
  std::mutex mu_;
  std::map<uint64_t, RedisMessage*> ready_;
  uint64_t next_to_run_ = 0;
  bool running_ = false;
};

// A batch of replies is written at once past this size.
constexpr size_t kMaxBatchBytes = 64 * 1024;

struct MessageDestroyer {
  void operator()(RedisMessage* m) const { m->Destroy(); }
};
using MessagePtr = std::unique_ptr<RedisMessage, MessageDestroyer>;

// One command from its run to its reply.
struct ServerCall {
  MessagePtr msg;
  RedisConnection* conn = nullptr;
  // Keeps the socket, and so conn, alive until the chain of commands moves
  // on (msg's own reference goes with msg, before Done()).
  SocketUniquePtr hold;
  Controller cntl;
  IOBuf response;
  // The handler's done and the fiber that called ProcessCall race to see
  // who comes second: 0 -> 1 by the first; the second continues the chain.
  // acq_rel: the second sees everything the first wrote (the reply queued,
  // hold moved in).
  std::atomic<int> phase{0};
};

// Hands the batched replies to the orderer: the earlier ones' turns with
// nothing to write, the last one's with all the bytes, so one Write (one
// syscall, usually) carries a pipeline's replies. Chain role only.
void FlushReplies(Socket* s, RedisConnection* conn, bool close_after) {
  if (conn->batch_count == 0) return;
  IOBuf out;
  out.swap(conn->batch);
  const uint64_t last = conn->batch_first + conn->batch_count - 1;
  conn->batch_count = 0;
  const int64_t limit = client_output_limit();
  if (limit > 0 && s->unwritten_bytes() + static_cast<int64_t>(out.size()) > limit) {
    WEFT_NET_WARN("close %s: redis output over --weft_redis_client_output_limit=%lld",
                  s->description().c_str(), static_cast<long long>(limit));
    s->SetFailed(EOVERCROWDED, "close %s: redis output over --weft_redis_client_output_limit",
                 s->description().c_str());
    out.clear();
  }
  // Even dropped replies go through the orderer so later ones can go.
  for (uint64_t q = conn->batch_first; q < last; ++q) {
    IOBuf none;
    conn->orderer.Reply(s, q, &none, false);
  }
  if (conn->orderer.Reply(s, last, &out, close_after) != 0 && errno == EOVERCROWDED) {
    // The socket refused the replies (--weft_socket_max_unwritten_bytes):
    // the client would read later replies as these ones', so close.
    WEFT_NET_WARN("close %s: redis reply refused (output overcrowded)", s->description().c_str());
    s->SetFailed(EOVERCROWDED, "close %s: redis reply refused (output overcrowded)",
                 s->description().c_str());
  }
}

// Adds call's reply to the connection's batch (flushing it unless a later
// command is already cut) and ends its message. Chain role only.
void SendReply(ServerCall* call, bool close_after) {
  Socket* const s = call->msg->socket();
  IOBuf out;
  if (call->cntl.Failed()) {
    if (call->cntl.ErrorCode() == ENOMETHOD) {
      RedisArgs args;
      args.Parse(call->msg->command.args);
      AppendError(&out, UnknownCommandError(args));
    } else {
      AppendError(&out, "ERR " + call->cntl.ErrorText());
    }
  } else if (call->response.empty()) {
    // A method that appended nothing would shift every later reply onto
    // the wrong command: answer something.
    AppendError(&out, "ERR the command produced no reply");
  } else {
    out.swap(call->response);
  }
  RedisConnection* const conn = call->conn;
  const uint64_t seq = call->msg->seq;
  if (conn->batch_count == 0) conn->batch_first = seq;
  ++conn->batch_count;
  conn->batch.append(std::move(out));
  // Replies of a pipeline leave together: while a later command is already
  // cut (its fiber will run the chain on), this reply waits in the batch.
  // Acquire pairs with the release in ParseRequest: a cut count read here
  // is a message that exists. A later message also keeps the connection's
  // EOF pending, so destroying this one before its bytes are queued cannot
  // let a graceful close overtake them.
  const bool later_cut = conn->cut.load(std::memory_order_acquire) > seq + 1;
  if (!close_after && later_cut && conn->batch.size() < kMaxBatchBytes) {
    call->msg.reset();
    return;
  }
  FlushReplies(s, conn, close_after);
  // The message goes after its reply is queued: a postponed EOF's graceful
  // close then flushes the reply.
  call->msg.reset();
}

void RunChain(RedisConnection* conn, SocketUniquePtr hold, RedisMessage* first);

// The handler's done: reply, then continue the chain if the starter left.
void OnCallDone(ServerCall* call) {
  SendReply(call, false);
  if (call->phase.exchange(1, std::memory_order_acq_rel) == 0) return;  // the starter goes on
  RedisConnection* const conn = call->conn;
  SocketUniquePtr hold = std::move(call->hold);
  delete call;
  RedisMessage* const next = conn->Done();
  if (next != nullptr) RunChain(conn, std::move(hold), next);
}

// Runs commands of conn, first and then each next one Done() hands back,
// until one completes later (its done carries on) or none is ready.
void RunChain(RedisConnection* conn, SocketUniquePtr hold, RedisMessage* first) {
  RedisMessage* msg = first;
  while (msg != nullptr) {
    auto* call = new ServerCall;
    call->msg.reset(msg);
    call->conn = conn;
    if (conn->closed) {
      // After QUIT or a protocol error: not run; its (empty) reply only
      // lets the orderer move on.
      SendReply(call, false);
      delete call;
    } else if (!msg->protocol_error.empty() || msg->command.name == "quit") {
      conn->closed = true;
      // Answered by the protocol: the error (then close), or QUIT's OK
      // (then close, dropping later commands' replies as Redis does).
      AppendError(&call->response, msg->protocol_error);
      if (msg->protocol_error.empty()) {
        call->response.clear();
        AppendStatus(&call->response, "OK");
      }
      SendReply(call, true);
      delete call;
    } else {
      call->hold = std::move(hold);
      Server* const server = static_cast<Server*>(const_cast<void*>(msg->arg()));
      call->cntl.set_remote_side(msg->socket()->remote_side());
      server->ProcessCall(msg->command.name, &call->cntl, msg->command.args, &call->response,
                          msg->received_us(), Closure([call] { OnCallDone(call); }));
      if (call->phase.exchange(1, std::memory_order_acq_rel) == 0) return;  // done goes on
      hold = std::move(call->hold);
      delete call;
    }
    msg = conn->Done();
  }
}

// A first line "METHOD target HTTP/1.x": an HTTP request, which Redis'
// inline syntax would otherwise take as a command. Left to other protocols
// when it is a connection's first message.
bool LooksLikeHttp(const IOBuf& source) {
  char head[1024];
  const size_t n = source.copy_to(head, sizeof(head), 0);
  const void* nl = memchr(head, '\n', n);
  if (nl == nullptr) return false;
  std::string_view line(head, static_cast<size_t>(static_cast<const char*>(nl) - head));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() < 10) return false;
  const std::string_view version = line.substr(line.size() - 9);
  return version == " HTTP/1.1" || version == " HTTP/1.0";
}

// Redis commands an inline first line may start with (lower case).
constexpr const char* kInlineCommands[] = {
    "ping",    "echo",     "set",      "get",       "del",      "exists",  "incr",    "incrby",
    "decr",    "decrby",   "mget",     "mset",      "expire",   "pexpire", "ttl",     "pttl",
    "dbsize",  "flushall", "flushdb",  "info",      "config",   "command", "quit",    "hello",
    "select",  "auth",     "client",   "keys",      "scan",     "type",    "lpush",   "rpush",
    "lpop",    "rpop",     "lrange",   "sadd",      "smembers", "hset",    "hget",    "hgetall",
    "zadd",    "zrange",   "publish",  "subscribe", "multi",    "exec",    "discard", "watch",
    "time",    "monitor",  "shutdown", "setex",     "setnx",    "append",  "strlen",  "getset",
    "persist", "rename",   "memory",   "slowlog",   "debug",    "save",    "bgsave",  "lastsave",
    "role",    "cluster",  "readonly", "reset"};

// On a connection's first message, whether an inline (non-array) line is
// Redis': PARSE_OK when its first word is a Redis command, NOT_ENOUGH_DATA
// while the bytes so far may still become one, TRY_OTHERS otherwise (an
// HTTP request line, another protocol's text frame). Inline syntax takes
// any text, so without this a server speaking several protocols would
// answer every text protocol's first bytes as Redis.
ParseError ClaimInline(const IOBuf& source) {
  if (LooksLikeHttp(source)) return PARSE_ERROR_TRY_OTHERS;
  char head[16];
  const size_t n = source.copy_to(head, sizeof(head), 0);
  size_t i = 0;
  while (i < n && (head[i] == ' ' || head[i] == '\t' || head[i] == '\r' || head[i] == '\n')) ++i;
  std::string word;
  for (; i < n; ++i) {
    char c = head[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') break;
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    word.push_back(c);
  }
  const bool complete = i < n;  // a separator ended the word
  bool prefix_of_some = false;
  for (const char* cmd : kInlineCommands) {
    const std::string_view c(cmd);
    if (complete && c == word) return PARSE_OK;
    if (!complete && c.substr(0, word.size()) == word) prefix_of_some = true;
  }
  if (!complete && (prefix_of_some || word.empty()) && n < sizeof(head)) {
    return PARSE_ERROR_NOT_ENOUGH_DATA;
  }
  return PARSE_ERROR_TRY_OTHERS;
}

RedisConnection* ConnectionOf(Socket* socket) {
  SocketContext* ctx = socket->context(SocketContextSlot::kProtocol);
  if (ctx == nullptr) ctx = socket->InitContext(new RedisConnection);
  return static_cast<RedisConnection*>(ctx);
}

ParseResult ParseRequest(IOBuf* source, Socket* socket) {
  if (socket == nullptr) {
    // No connection to keep the state in: parse a copy (sharing blocks)
    // and consume only what a whole command (or an error) took.
    IOBuf copy(*source);
    RespRequestParser parser;
    RespCommand cmd;
    const RespRequestParser::Result r = parser.Parse(&copy, &cmd);
    if (r == RespRequestParser::kNeedMore) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
    auto* msg = new RedisMessage;
    if (r == RespRequestParser::kOk) {
      source->pop_front(source->size() - copy.size());
      msg->command = std::move(cmd);
    } else {
      source->clear();
      msg->protocol_error = "ERR " + parser.error();
    }
    return ParseResult::Ok(msg);
  }
  RedisConnection* const conn = ConnectionOf(socket);
  if (conn->broken) {
    source->clear();
    return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  }
  // Only at a command's start: mid-command (a bulk split across reads)
  // the bytes are a value, and the parser already consumed RESP.
  if (!conn->chosen && conn->parser.at_command_start() && !source->empty() &&
      source->byte_at(0) != '*') {
    const ParseError e = ClaimInline(*source);
    if (e != PARSE_OK) return ParseResult::Error(e);
  }
  RespCommand cmd;
  const RespRequestParser::Result r = conn->parser.Parse(source, &cmd);
  if (r == RespRequestParser::kNeedMore) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  if (r == RespRequestParser::kOk && (cmd.name == "post" || cmd.name == "host:")) {
    // As redis-server: an HTTP request smuggled at a Redis port (cross
    // protocol scripting) closes the connection without a reply.
    WEFT_NET_WARN("close %s: redis: '%s' command, possibly an HTTP request",
                  socket->description().c_str(), cmd.name.c_str());
    conn->broken = true;
    return ParseResult::Error(PARSE_ERROR_ABSOLUTELY_WRONG, "redis: possible security attack");
  }
  conn->chosen = true;
  auto* msg = new RedisMessage;
  msg->seq = conn->orderer.NextSequence();
  // Release pairs with the acquire in SendReply (a later command exists).
  conn->cut.store(msg->seq + 1, std::memory_order_release);
  if (r == RespRequestParser::kOk) {
    msg->command = std::move(cmd);
  } else {
    // Answered in its place, then the connection closes (RunChain).
    WEFT_NET_WARN("close %s: redis: %s", socket->description().c_str(),
                  conn->parser.error().c_str());
    conn->broken = true;
    source->clear();
    msg->protocol_error = "ERR " + conn->parser.error();
  }
  return ParseResult::Ok(msg);
}

}  // namespace

int64_t client_output_limit() {
  return __atomic_load_n(&FLAGS_weft_redis_client_output_limit, __ATOMIC_RELAXED);
}

ParseResult ParseRedis(IOBuf* source, Socket* socket, bool read_eof, const void* arg) {
  (void)read_eof;
  // arg is the Server on a server's connections, nullptr on a client's
  // (protocol.h).
  if (arg == nullptr) return ParseReplyMessage(source, socket);
  return ParseRequest(source, socket);
}

void ProcessRedisRequest(InputMessageBase* base) {
  auto* msg = static_cast<RedisMessage*>(base);
  Socket* const s = msg->socket();
  auto* conn = static_cast<RedisConnection*>(s->context(SocketContextSlot::kProtocol));
  // Taken before the message can be destroyed: conn lives while it is held.
  SocketUniquePtr hold;
  s->ReAddress(&hold);
  RedisMessage* const first = conn->Submit(msg);
  if (first != nullptr) RunChain(conn, std::move(hold), first);
}

Protocol MakeRedisProtocol() {
  Protocol p;
  p.parse = ParseRedis;
  p.process_request = ProcessRedisRequest;
  p.process_response = ProcessRedisResponse;
  p.serialize_request = SerializeRedisRequest;
  p.pack_request = PackRedisRequest;
  // Each call carries its id in-band (redis_client.h), and replies come in
  // request order, so calls may share a connection too.
  p.supported_connection_types = kSingle | kPooled | kShort;
  p.in_order = true;
  p.name = "redis";
  return p;
}

}  // namespace weft::rpc::redis
