#include "protocols/redis/redis_client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <memory>
#include <string>
#include <string_view>

#include "net_log.h"
#include "protocols/redis/resp_request_parser.h"
#include "weft/rpc/call_completion.h"
#include "weft/rpc/errno.h"
#include "weft/rpc/redis.h"

namespace weft::rpc::redis {

namespace {

constexpr char kHeaderPrefix[] = "weft:";

// Finds the CRLF ending the line at pos: the index of its CR, or npos.
size_t LineEnd(const char* data, size_t size, size_t pos) {
  for (size_t i = pos; i + 1 < size; ++i) {
    if (data[i] == '\r') return data[i + 1] == '\n' ? i : std::string::npos - 1;
  }
  return std::string::npos;
}

// A client connection's reply state. Reading fiber only; owned by the
// socket (kProtocol slot).
class ClientConnection : public SocketContext {
 public:
  // Between calls: waiting for a header. Within one: its id and how many
  // replies are still to come, the ones cut so far in `replies`.
  bool in_call = false;
  uint64_t correlation_id = 0;
  uint64_t remaining = 0;
  IOBuf replies;
  // The read buffer must reach this size before scanning again is worth
  // it (the reply at its front was found to need that much).
  size_t need_size = 0;
};

ParseResult BadReply(Socket* socket, const char* why) {
  socket->SetFailed(EPROTO, "close %s: redis: %s", socket->description().c_str(), why);
  return ParseResult::Error(PARSE_ERROR_ABSOLUTELY_WRONG, why);
}

bool ParseHeader(std::string_view bulk, uint64_t* id, uint64_t* n) {
  if (bulk.substr(0, sizeof(kHeaderPrefix) - 1) != kHeaderPrefix) return false;
  unsigned long long a = 0, b = 0;
  const std::string rest(bulk.substr(sizeof(kHeaderPrefix) - 1));
  char tail = 0;
  if (sscanf(rest.c_str(), "%llu:%llu%c", &a, &b, &tail) != 2) return false;
  *id = a;
  *n = b;
  return true;
}

// Decodes the reply at data[pos, end) (already scanned: well formed).
size_t Decode(const char* data, size_t pos, RedisReply* r) {
  const size_t cr = LineEnd(data, SIZE_MAX, pos);
  const std::string_view line(data + pos + 1, cr - pos - 1);
  size_t next = cr + 2;
  int64_t n = 0;
  switch (data[pos]) {
    case '+':
      r->type = RedisReply::kStatus;
      r->str = std::string(line);
      break;
    case '-':
      r->type = RedisReply::kError;
      r->str = std::string(line);
      break;
    case ':':
      r->type = RedisReply::kInteger;
      ParseInt64(line.data(), line.size(), &r->integer);
      break;
    case '$':
      ParseInt64(line.data(), line.size(), &n);
      if (n < 0) {
        r->type = RedisReply::kNil;
      } else {
        r->type = RedisReply::kBulk;
        r->str.assign(data + next, static_cast<size_t>(n));
        next += static_cast<size_t>(n) + 2;
      }
      break;
    default:  // '*'
      ParseInt64(line.data(), line.size(), &n);
      if (n < 0) {
        r->type = RedisReply::kNil;
      } else {
        r->type = RedisReply::kArray;
        r->elements.resize(static_cast<size_t>(n));
        for (auto& e : r->elements) next = Decode(data, next, &e);
      }
      break;
  }
  return next;
}

}  // namespace

ReplyScan ScanReply(const char* data, size_t size, size_t pos, int depth, size_t* end) {
  if (depth > kMaxReplyDepth) return ReplyScan::kError;
  if (pos >= size) return ReplyScan::kNeedMore;
  const size_t cr = LineEnd(data, size, pos);
  if (cr == std::string::npos) {
    return size - pos > kMaxInlineSize ? ReplyScan::kError : ReplyScan::kNeedMore;
  }
  if (cr == std::string::npos - 1) return ReplyScan::kError;  // a CR without LF
  const char type = data[pos];
  const char* line = data + pos + 1;
  const size_t line_size = cr - pos - 1;
  size_t next = cr + 2;
  int64_t n = 0;
  switch (type) {
    case '+':
    case '-':
      break;
    case ':':
      if (!ParseInt64(line, line_size, &n)) return ReplyScan::kError;
      break;
    case '$':
      if (!ParseInt64(line, line_size, &n) || n < -1 || n > kMaxBulkLength) {
        return ReplyScan::kError;
      }
      if (n >= 0) {
        if (size - next < static_cast<size_t>(n) + 2) {
          // Tell the caller how far the buffer must grow.
          *end = next + static_cast<size_t>(n) + 2;
          return ReplyScan::kNeedMore;
        }
        next += static_cast<size_t>(n);
        if (data[next] != '\r' || data[next + 1] != '\n') return ReplyScan::kError;
        next += 2;
      }
      break;
    case '*':
      if (!ParseInt64(line, line_size, &n) || n < -1 || n > INT32_MAX) return ReplyScan::kError;
      for (int64_t i = 0; i < n; ++i) {
        size_t e = 0;
        const ReplyScan r = ScanReply(data, size, next, depth + 1, &e);
        if (r != ReplyScan::kOk) {
          if (r == ReplyScan::kNeedMore) *end = 0;
          return r;
        }
        next = e;
      }
      break;
    default:
      return ReplyScan::kError;
  }
  *end = next;
  return ReplyScan::kOk;
}

ParseResult ParseReplyMessage(IOBuf* source, Socket* socket) {
  if (socket == nullptr) return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
  SocketContext* ctx = socket->context(SocketContextSlot::kProtocol);
  if (ctx == nullptr) ctx = socket->InitContext(new ClientConnection);
  auto* c = static_cast<ClientConnection*>(ctx);
  for (;;) {
    if (source->empty() || source->size() < c->need_size) {
      return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
    }
    // Replies are scanned flat; need_size keeps a large reply arriving in
    // pieces from being copied once per read.
    const std::string flat = source->to_string();
    size_t end = 0;
    const ReplyScan r = ScanReply(flat.data(), flat.size(), 0, 0, &end);
    if (r == ReplyScan::kNeedMore) {
      c->need_size = end > flat.size() ? end : flat.size() + 1;
      return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
    }
    c->need_size = 0;
    if (r == ReplyScan::kError) return BadReply(socket, "a malformed reply");
    if (!c->in_call) {
      RedisReply header;
      Decode(flat.data(), 0, &header);
      uint64_t id = 0, n = 0;
      if (header.type != RedisReply::kBulk || !ParseHeader(header.str, &id, &n)) {
        if (header.type == RedisReply::kError) {
          WEFT_NET_WARN("close %s: redis: the server refused a call: %s",
                        socket->description().c_str(), header.str.c_str());
        }
        return BadReply(socket, "a reply that is not a call's header");
      }
      source->pop_front(end);
      c->in_call = true;
      c->correlation_id = id;
      c->remaining = n;
    } else {
      source->cutn(&c->replies, end);
      --c->remaining;
    }
    if (c->in_call && c->remaining == 0) {
      auto* msg = new RedisReplyMessage;
      msg->correlation_id = c->correlation_id;
      msg->replies.swap(c->replies);
      c->in_call = false;
      return ParseResult::Ok(msg);
    }
  }
}

void ProcessRedisResponse(InputMessageBase* base) {
  auto* msg = static_cast<RedisReplyMessage*>(base);
  // A late reply (its call ended) is dropped and counted by CompleteCall.
  CompleteCall(msg->correlation_id, msg->socket(), 0, std::string_view(), &msg->replies);
  msg->Destroy();
}

void SerializeRedisRequest(IOBuf* out, Controller* cntl, const IOBuf& request) {
  (void)cntl;
  out->append(request);
}

void PackRedisRequest(IOBuf* out, uint64_t correlation_id, const char* method, Controller* cntl,
                      const IOBuf& body) {
  (void)method;
  // Requests are arrays too: the reply scanner counts the commands.
  const std::string flat = body.to_string();
  uint64_t n = 0;
  size_t pos = 0;
  while (pos < flat.size()) {
    size_t end = 0;
    if (flat[pos] != '*' || ScanReply(flat.data(), flat.size(), pos, 0, &end) != ReplyScan::kOk) {
      if (cntl != nullptr) cntl->SetFailed(EREQUEST, "redis: the request is not whole commands");
      return;
    }
    pos = end;
    ++n;
  }
  char header[64];
  snprintf(header, sizeof(header), "%s%" PRIu64 ":%" PRIu64, kHeaderPrefix, correlation_id, n);
  RedisRequest echo;
  echo.AddCommand({"ECHO", header});
  out->append(echo.buf());
  out->append(body);
}

bool ParseReplies(const IOBuf& response, std::vector<RedisReply>* replies) {
  replies->clear();
  const std::string flat = response.to_string();
  size_t pos = 0;
  while (pos < flat.size()) {
    size_t end = 0;
    if (ScanReply(flat.data(), flat.size(), pos, 0, &end) != ReplyScan::kOk) return false;
    replies->emplace_back();
    Decode(flat.data(), pos, &replies->back());
    pos = end;
  }
  return true;
}

}  // namespace weft::rpc::redis
