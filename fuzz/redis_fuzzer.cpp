// Fuzzes the RESP2 request parser: the input is cut into commands as a
// connection would (whole, then again fed in two pieces split where the
// first byte says, then one byte at a time), and each feeding must cut the
// same commands and end with the same error. Half the inputs run under a
// small query limit (from the second byte), so refusals from a length line
// are fed the same three ways too. The parser must never crash,
// read out of bounds or allocate for lengths it has not received. The reply
// scanner (the client side) sees the same bytes.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "protocols/redis/redis_client.h"
#include "protocols/redis/resp_request_parser.h"
#include "weft/net/iobuf.h"
#include "weft/rpc/redis.h"

namespace {

using weft::IOBuf;
using weft::rpc::redis::RespCommand;
using weft::rpc::redis::RespRequestParser;

struct Outcome {
  std::vector<std::string> commands;
  std::string error;
};

// Feeds data[0, size) in pieces of `step` bytes (0: one piece split at
// `split`).
Outcome Feed(const uint8_t* data, size_t size, size_t split, size_t step, size_t limit) {
  Outcome o;
  RespRequestParser p;
  p.set_max_command_bytes(limit);
  IOBuf buf;
  std::vector<std::pair<size_t, size_t>> pieces;
  if (step == 0) {
    pieces = {{0, split}, {split, size - split}};
  } else {
    for (size_t i = 0; i < size; i += step)
      pieces.emplace_back(i, size - i < step ? size - i : step);
  }
  for (const auto& [off, n] : pieces) {
    buf.append(data + off, n);
    for (;;) {
      RespCommand c;
      const RespRequestParser::Result r = p.Parse(&buf, &c);
      if (r == RespRequestParser::kError) {
        o.error = p.error();
        return o;
      }
      if (r == RespRequestParser::kNeedMore) break;
      const weft::rpc::redis::RedisArgs& args = c.args;
      if (args.size() == 0) abort();
      std::string summary = c.name;
      for (size_t i = 0; i < args.size(); ++i) summary += "|" + std::string(args[i]);
      o.commands.push_back(summary);
    }
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An odd second byte: a query limit of 16 to 2048 bytes (below 2048 the
  // fast path steps aside and the general one decides every command).
  const size_t limit = size > 1 && (data[1] & 1) != 0 ? 16 * (1 + data[1] / 2) : SIZE_MAX;
  const Outcome whole = Feed(data, size, size, 0, limit);
  const size_t split = size == 0 ? 0 : data[0] % (size + 1);
  const Outcome parts = Feed(data, size, split, 0, limit);
  if (parts.commands != whole.commands || parts.error != whole.error) abort();
  if (size <= 4096) {
    const Outcome bytes = Feed(data, size, 0, 1, limit);
    if (bytes.commands != whole.commands || bytes.error != whole.error) abort();
  }
  // The client side's scanner over the same bytes: bounded, no crash.
  size_t pos = 0;
  const char* chars = reinterpret_cast<const char*>(data);
  while (pos < size) {
    size_t end = 0;
    if (weft::rpc::redis::ScanReply(chars, size, pos, 0, &end) !=
        weft::rpc::redis::ReplyScan::kOk) {
      break;
    }
    if (end <= pos) abort();
    pos = end;
  }
  return 0;
}
