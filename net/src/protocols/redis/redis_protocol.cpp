#include "protocols/redis/redis_protocol.h"

#include <errno.h>
#include <gflags/gflags.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "net_log.h"
#include "protocols/redis/redis_client.h"
#include "weft/rpc/errno.h"
#include "weft/rpc/redis.h"
#include "weft/rpc/server.h"

DEFINE_int64(weft_redis_client_output_limit, int64_t{256} * 1024 * 1024,
             "A redis connection whose unwritten replies pass this many bytes is closed "
             "(a client that pipelines and does not read); <= 0: no limit");

DEFINE_int64(weft_redis_client_query_limit, int64_t{1024} * 1024 * 1024,
             "A redis command whose arguments pass this many bytes (16 more per argument) "
             "is a protocol error and closes its connection, decided before the bytes are "
             "read; <= 0: no limit. Read when a connection starts");

namespace weft::rpc::redis {

namespace {

// The most commands a batch reserves room for before it knows its count:
// about 64 KiB of RespCommand slots (each holds its arguments' first 256
// bytes inline, about 500 bytes a slot). A larger batch grows its vector.
constexpr size_t kMaxReservedCommands = 128;

// A server connection's redis state. Owned by the socket (kProtocol slot),
// deleted when it recycles; whoever touches it holds a socket reference.
class RedisConnection : public SocketContext {
 public:
  RedisConnection() {
    const int64_t limit = __atomic_load_n(&FLAGS_weft_redis_client_query_limit, __ATOMIC_RELAXED);
    if (limit > 0) parser.set_max_command_bytes(static_cast<size_t>(limit));
  }

  // Reading fiber only.
  RespRequestParser parser;
  // Set by the reading fiber after a protocol error: later bytes are
  // dropped (the connection closes after the error's reply).
  bool broken = false;
  // Reading fiber only: a command was cut, so the connection speaks RESP
  // (before that, bytes of another protocol are left to it).
  bool chosen = false;
  // Reading fiber only: an HTTP-looking command followed the commands of
  // the batch just returned; the next parse refuses the connection.
  bool attack_pending = false;
  // Reading fiber only: the next batch's number.
  uint64_t next_seq = 0;
  // Reading fiber only: the last batch's command count (at least 16, at
  // most kMaxReservedCommands), reserved up front for the next batch, so a
  // client that pipelines more than 16 commands a read (or a read that
  // caught several clients' worth) does not grow the vector per batch.
  size_t batch_hint = 16;
  // Set once a reply closes the connection (QUIT, a protocol error, the
  // output limit, a refused write): later commands are not run, as Redis
  // stops serving such a client. Touched only by the fiber running the
  // chain of batches; the hand-over between such fibers goes through mu_
  // (Submit/Done) or BatchRun::phase, which order it.
  bool closed = false;

  // Queues msg and returns the batch the caller must run now (msg, or
  // nullptr when a batch before it is missing or one is running). Any
  // fiber.
  RedisMessage* Submit(RedisMessage* msg) {
    std::lock_guard<std::mutex> guard(mu_);
    if (!running_ && msg->seq == next_to_run_) {
      // The common case (the batch the reading fiber runs itself): no
      // map node.
      running_ = true;
      return msg;
    }
    ready_.emplace(msg->seq, msg);
    if (running_) return nullptr;
    return TakeNextLocked();
  }
  // The running batch ended: the next one to run, or nullptr (then nobody
  // runs until Submit brings the next in order). Only the fiber that runs
  // batches (the one Submit or Done handed a batch to).
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

  // Batches run one at a time in seq order: running_ says one is running,
  // ready_ holds those cut (their fibers started) and not yet run. Guarded
  // by mu_ (held only to move pointers, never across a command). Its
  // unlock/lock is what orders one batch's effects (conn->closed, the
  // replies queued) before the next batch's run in another fiber.
  std::mutex mu_;
  std::map<uint64_t, RedisMessage*> ready_;
  uint64_t next_to_run_ = 0;
  bool running_ = false;
};

// The replies of a batch are written at once past this size (so a read of
// many large GETs does not gather them all first).
constexpr size_t kMaxBatchBytes = 64 * 1024;

struct MessageDestroyer {
  void operator()(RedisMessage* m) const { m->Destroy(); }
};
using MessagePtr = std::unique_ptr<RedisMessage, MessageDestroyer>;

// The running batch of a connection, from its first command to its last
// reply; reused for the batches that follow in the same chain. Touched by
// one fiber at a time: the one running the chain, which moves from the
// caller of ProcessBatchedCall to the handler's done when the handler completes
// later (phase decides, see there).
struct BatchRun {
  MessagePtr msg;
  RedisConnection* conn = nullptr;
  // Keeps the socket, and so conn, alive until the chain ends (msg's own
  // reference goes with msg, between batches).
  SocketUniquePtr hold;
  Server* server = nullptr;
  // The Server's accounting of the chain's commands: one drain count and
  // one concurrency slot for the whole chain, one metrics update per
  // message, not per command (CallBatch). Begun with the first message,
  // joined by each next one, ended once the last one's replies are
  // queued: Join, which holds off closing the connection while it is
  // active, so finds every batch of the chain answered.
  CallBatch batch;
  // The next command of msg to run.
  size_t next = 0;
  // Replies not yet written, in request order. The running command's
  // method appends its reply here directly (its response is out itself:
  // no IOBuf per reply to append and clear); reply_start is where that
  // reply begins, so a failed call's partial output is cut off again.
  IOBuf out;
  size_t reply_start = 0;
  // The running command's call; emplaced afresh for each command.
  std::optional<Controller> cntl;
  // Per command: the handler's done and the fiber that called ProcessBatchedCall
  // race to see who comes second: 0 -> 1 by the first; the second runs the
  // chain on. acq_rel: the second sees everything the first wrote (the
  // reply the handler appended). Reset (relaxed) by the chain
  // before each ProcessBatchedCall: the closure that reaches the handler's done
  // is made after it, and the handler's hand-off of its done to another
  // fiber orders the reset before that fiber's exchange.
  std::atomic<int> phase{0};
};

// Writes run's replies (the output limit first). close_after: then close
// the connection gracefully (the replies are flushed first). Chain role.
void Flush(BatchRun* run, bool close_after) {
  RedisConnection* const conn = run->conn;
  Socket* const s = run->hold.get();
  // Before the write: a client that read a reply finds its command in the
  // metrics.
  run->server->RecordBatch(&run->batch);
  if (close_after) conn->closed = true;
  if (!run->out.empty()) {
    const int64_t limit = client_output_limit();
    if (limit > 0 && s->unwritten_bytes() + static_cast<int64_t>(run->out.size()) > limit) {
      WEFT_NET_WARN("close %s: redis output over --weft_redis_client_output_limit=%lld",
                    s->description().c_str(), static_cast<long long>(limit));
      s->SetFailed(EOVERCROWDED, "close %s: redis output over --weft_redis_client_output_limit",
                   s->description().c_str());
      run->out.clear();
      conn->closed = true;
      return;
    }
    // Socket::Write keeps the order of its callers' pushes, and the chain
    // (one fiber at a time, handed over through mu_ or phase) is the only
    // writer of this connection's replies, so the wire order is the
    // request order.
    if (s->Write(&run->out) != 0) {
      run->out.clear();
      conn->closed = true;
      if (errno == EOVERCROWDED) {
        // The socket refused the replies (--weft_socket_max_unwritten_
        // bytes): the client would read later replies as these ones'.
        WEFT_NET_WARN("close %s: redis reply refused (output overcrowded)",
                      s->description().c_str());
        s->SetFailed(EOVERCROWDED, "close %s: redis reply refused (output overcrowded)",
                     s->description().c_str());
      }
      return;
    }
  }
  if (close_after) {
    s->CloseGracefully(ESHUTDOWN, "%s: closed after its reply", s->description().c_str());
  }
}

// Completes the running command's reply in the batch's replies (what its
// method appended, or its error as Redis words it). Chain role.
void AppendReply(BatchRun* run) {
  Controller& cntl = *run->cntl;
  if (cntl.Failed()) {
    // Whatever the method appended before failing is not its reply.
    run->out.pop_back(run->out.size() - run->reply_start);
    if (cntl.ErrorCode() == ENOMETHOD) {
      AppendError(&run->out, UnknownCommandError(run->msg->commands[run->next - 1].args));
    } else {
      AppendError(&run->out, "ERR " + cntl.ErrorText());
    }
  } else if (run->out.size() == run->reply_start) {
    // A method that appended nothing would shift every later reply onto
    // the wrong command: answer something.
    AppendError(&run->out, "ERR the command produced no reply");
  }
}

void RunChain(BatchRun* run);

// The request bytes a method gets: none, its arguments come decoded
// (Controller::request_object). Never written, so sharing it is safe;
// leaked, so a call running during exit still finds it.
const IOBuf& NoRequestBytes() {
  static const IOBuf* const empty = new IOBuf;
  return *empty;
}

// The handler's done: the reply, then the chain if the caller left.
void OnCallDone(BatchRun* run) {
  run->server->EndBatchedCall(&run->batch, *run->cntl);
  AppendReply(run);
  if (run->phase.exchange(1, std::memory_order_acq_rel) == 0) return;  // the caller goes on
  RunChain(run);
}

// Runs the rest of run's batch, then each next batch Done() hands back,
// until a command completes later (its done carries on) or no batch is
// ready (then run is freed).
void RunChain(BatchRun* run) {
  RedisConnection* const conn = run->conn;
  for (;;) {
    std::vector<RespCommand>& commands = run->msg->commands;
    while (run->next < commands.size() && !conn->closed) {
      RespCommand& c = commands[run->next++];
      if (std::string_view(c.name) == "quit") {
        // Answered by the protocol: OK, then the close, dropping later
        // commands' replies as Redis does.
        AppendStatus(&run->out, "OK");
        Flush(run, true);
        break;
      }
      run->cntl.emplace();
      run->cntl->set_remote_side(run->hold->remote_side());
      // The method reads the arguments as the parser decoded them
      // (CommandArgs); c lives in msg until the batch's replies are out.
      run->cntl->set_request_object(&c.args);
      run->phase.store(0, std::memory_order_relaxed);
      // Nothing else touches out until this command's done (Flush runs
      // only between commands, in the chain).
      run->reply_start = run->out.size();
      run->server->ProcessBatchedCall(&run->batch, c.name, &*run->cntl, NoRequestBytes(), &run->out,
                                      Closure([run] { OnCallDone(run); }));
      if (run->phase.exchange(1, std::memory_order_acq_rel) == 0) return;  // done goes on
      if (run->out.size() >= kMaxBatchBytes) Flush(run, false);
    }
    if (!conn->closed) {
      if (!run->msg->protocol_error.empty()) {
        AppendError(&run->out, run->msg->protocol_error);
        Flush(run, true);
      } else {
        Flush(run, false);
      }
    }
    // Dropped replies (after a close) leave nothing behind.
    run->out.clear();
    // The batch goes after its replies are queued: a postponed EOF's
    // graceful close then flushes them.
    run->msg.reset();
    RedisMessage* const next = conn->Done();
    if (next == nullptr) {
      // The replies are queued: Join, which this releases, then closes
      // the connection gracefully and so writes them.
      run->server->EndBatch(&run->batch);
      break;
    }
    run->msg.reset(next);
    run->next = 0;
    run->server->BeginBatch(&run->batch, next->received_us());
  }
  delete run;
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
      msg->commands.push_back(std::move(cmd));
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
  if (conn->attack_pending) {
    conn->broken = true;
    return ParseResult::Error(PARSE_ERROR_ABSOLUTELY_WRONG, "redis: possible security attack");
  }
  // Every complete command of the buffer goes into one batch; the first
  // allocation waits for the first command (a partial one costs nothing).
  // The first command is cut into `first`; once the batch exists, each
  // next one straight into its slot (no move of a command per command).
  RedisMessage* msg = nullptr;
  RespCommand first;
  for (;;) {
    // All bytes taken: no next command to cut (and no slot to make for
    // one, which at a full reservation would grow the vector only to pop
    // the slot again).
    if (msg != nullptr && source->empty()) break;
    // Only at a command's start: mid-command (a bulk split across reads)
    // the bytes are a value, and the parser already consumed RESP.
    if (!conn->chosen && conn->parser.at_command_start() && !source->empty() &&
        source->byte_at(0) != '*') {
      const ParseError e = ClaimInline(*source);
      if (e != PARSE_OK) return ParseResult::Error(e);  // nothing cut yet (not chosen)
    }
    RespCommand* const cmd = msg == nullptr ? &first : &msg->commands.emplace_back();
    const RespRequestParser::Result r = conn->parser.Parse(source, cmd);
    if (r != RespRequestParser::kOk && msg != nullptr) msg->commands.pop_back();  // no command
    if (r == RespRequestParser::kNeedMore) break;
    if (r == RespRequestParser::kOk &&
        (std::string_view(cmd->name) == "post" || std::string_view(cmd->name) == "host:")) {
      // As redis-server: an HTTP request smuggled at a Redis port (cross
      // protocol scripting) closes the connection without a reply. The
      // commands before it still run, as they would have alone.
      WEFT_NET_WARN("close %s: redis: '%s' command, possibly an HTTP request",
                    socket->description().c_str(), cmd->name.c_str());
      if (msg != nullptr) {
        msg->commands.pop_back();
        conn->attack_pending = true;
        break;
      }
      conn->broken = true;
      return ParseResult::Error(PARSE_ERROR_ABSOLUTELY_WRONG, "redis: possible security attack");
    }
    conn->chosen = true;
    if (msg == nullptr) {
      msg = new RedisMessage;
      msg->commands.reserve(conn->batch_hint);
      if (r == RespRequestParser::kOk) {
        msg->commands.push_back(std::move(first));
        continue;
      }
    } else if (r == RespRequestParser::kOk) {
      continue;
    }
    // Answered after the batch's commands, then the connection closes
    // (RunChain).
    WEFT_NET_WARN("close %s: redis: %s", socket->description().c_str(),
                  conn->parser.error().c_str());
    conn->broken = true;
    source->clear();
    msg->protocol_error = "ERR " + conn->parser.error();
    break;
  }
  if (msg == nullptr) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  conn->batch_hint = std::clamp<size_t>(msg->commands.size(), 16, kMaxReservedCommands);
  msg->seq = conn->next_seq++;
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
  if (first == nullptr) return;  // the running chain will take it
  auto* run = new BatchRun;
  run->msg.reset(first);
  run->conn = conn;
  run->hold = std::move(hold);
  run->server = static_cast<Server*>(const_cast<void*>(first->arg()));
  run->server->BeginBatch(&run->batch, first->received_us());
  RunChain(run);
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
