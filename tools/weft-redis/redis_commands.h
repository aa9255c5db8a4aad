// weft-redis' command table: each Redis command as a method of a
// weft::rpc::Server (the redis protocol calls methods by lower-cased
// command name, see weft/rpc/redis.h), over a RedisStore.
//
// Arity is checked as Redis does (exact, or at least N) before a command
// runs; replies and error texts are worded as redis-server 7 words them.
#ifndef WEFT_TOOLS_WEFT_REDIS_REDIS_COMMANDS_H_
#define WEFT_TOOLS_WEFT_REDIS_REDIS_COMMANDS_H_

#include <stdint.h>

#include "redis_store.h"
#include "weft/rpc/server.h"

namespace weft::redis_tool {

// What INFO reports about the process.
struct ServerInfo {
  int tcp_port = 0;
  int64_t start_ms = 0;  // CLOCK_MONOTONIC
};

// Adds every command as a method of `server` (before Start). store, info
// and server must outlive the server's calls. 0, or -1 with errno from
// AddMethod.
int AddRedisCommands(rpc::Server* server, RedisStore* store, const ServerInfo* info);

}  // namespace weft::redis_tool

#endif  // WEFT_TOOLS_WEFT_REDIS_REDIS_COMMANDS_H_
