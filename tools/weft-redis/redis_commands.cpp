#include "redis_commands.h"

#include <time.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "weft/rpc/redis.h"

namespace weft::redis_tool {

namespace {

using rpc::redis::AppendArrayHeader;
using rpc::redis::AppendBulk;
using rpc::redis::AppendError;
using rpc::redis::AppendInteger;
using rpc::redis::AppendNullBulk;
using rpc::redis::AppendStatus;
using rpc::redis::RedisArgs;

constexpr char kNotInteger[] = "ERR value is not an integer or out of range";
constexpr char kSyntax[] = "ERR syntax error";

struct Context {
  RedisStore* store;
  const ServerInfo* info;
  rpc::Server* server;
};

using Command = std::function<void(const Context&, const RedisArgs&, IOBuf*)>;

struct CommandSpec {
  const char* name;
  // As Redis: n > 0 exactly n arguments (the name included), n < 0 at
  // least -n.
  int arity;
  Command run;
};

bool Int(std::string_view s, int64_t* v) {
  if (s.empty() || s.size() > 20) return false;
  std::string t(s);
  char* end = nullptr;
  errno = 0;
  const long long r = strtoll(t.c_str(), &end, 10);
  if (errno == ERANGE || end != t.c_str() + t.size() || t[0] == ' ' || t[0] == '+') return false;
  *v = r;
  return true;
}

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (x != b[i]) return false;
  }
  return true;
}

void Incr(const Context& c, std::string_view key, int64_t delta, IOBuf* out) {
  int64_t v = 0;
  switch (c.store->IncrBy(key, delta, NowMs::Clock(), &v)) {
    case RedisStore::IncrResult::kOk:
      AppendInteger(out, v);
      break;
    case RedisStore::IncrResult::kNotInteger:
      AppendError(out, kNotInteger);
      break;
    case RedisStore::IncrResult::kOverflow:
      AppendError(out, "ERR increment or decrement would overflow");
      break;
  }
}

void Set(const Context& c, const RedisArgs& a, IOBuf* out) {
  int64_t expire_at = RedisStore::kNoExpiry;
  auto cond = RedisStore::SetCondition::kAlways;
  const NowMs now = NowMs::Clock();  // read only for EX / PX, or an expiring key
  bool have_expiry = false;
  for (size_t i = 3; i < a.size(); ++i) {
    const std::string_view opt = a[i];
    if (EqualsNoCase(opt, "nx") && cond != RedisStore::SetCondition::kIfPresent) {
      cond = RedisStore::SetCondition::kIfMissing;
    } else if (EqualsNoCase(opt, "xx") && cond != RedisStore::SetCondition::kIfMissing) {
      cond = RedisStore::SetCondition::kIfPresent;
    } else if ((EqualsNoCase(opt, "ex") || EqualsNoCase(opt, "px")) && !have_expiry &&
               i + 1 < a.size()) {
      int64_t n = 0;
      if (!Int(a[i + 1], &n)) return AppendError(out, kNotInteger);
      const bool seconds = EqualsNoCase(opt, "ex");
      // In milliseconds, added to now: neither step may overflow.
      if (n <= 0 || (seconds && n > INT64_MAX / 1000) ||
          (seconds ? n * 1000 : n) > INT64_MAX - now.get()) {
        return AppendError(out, "ERR invalid expire time in 'set' command");
      }
      expire_at = now.get() + (seconds ? n * 1000 : n);
      have_expiry = true;
      ++i;
    } else {
      return AppendError(out, kSyntax);
    }
  }
  if (c.store->Set(a[1], a[2], expire_at, cond, now)) {
    AppendStatus(out, "OK");
  } else {
    AppendNullBulk(out);
  }
}

void Info(const Context& c, const RedisArgs&, IOBuf* out) {
  const int64_t now = MonotonicMs();
  std::string s;
  s += "# Server\r\n";
  s += "redis_version:7.0.0\r\n";
  s += "redis_mode:standalone\r\n";
  s += "weft:1\r\n";
  s += "process_id:" + std::to_string(getpid()) + "\r\n";
  s += "tcp_port:" + std::to_string(c.info->tcp_port) + "\r\n";
  s += "uptime_in_seconds:" + std::to_string((now - c.info->start_ms) / 1000) + "\r\n";
  s += "\r\n# Clients\r\n";
  s += "connected_clients:" + std::to_string(c.server->connection_count()) + "\r\n";
  s += "\r\n# Persistence\r\n";
  s += "loading:0\r\n";
  s += "\r\n# Replication\r\n";
  s += "role:master\r\n";
  s += "\r\n# Keyspace\r\n";
  const size_t keys = c.store->Size();
  if (keys > 0) {
    s += "db0:keys=" + std::to_string(keys) +
         ",expires=" + std::to_string(c.store->ExpiringCount()) + ",avg_ttl=0\r\n";
  }
  AppendBulk(out, s);
}

void Config(const Context&, const RedisArgs& a, IOBuf* out) {
  if (!EqualsNoCase(a[1], "get")) {
    return AppendError(out, "ERR unknown subcommand '" + std::string(a[1]) + "'. Try CONFIG HELP.");
  }
  if (a.size() < 3) return AppendError(out, rpc::redis::WrongArgsError("config|get"));
  // The few parameters clients ask for (redis-benchmark: save and
  // appendonly): weft-redis keeps nothing on disk.
  static const std::pair<const char*, const char*> kParams[] = {
      {"save", ""}, {"appendonly", "no"}, {"databases", "1"}, {"maxmemory", "0"}};
  std::vector<std::pair<const char*, const char*>> hits;
  for (size_t i = 2; i < a.size(); ++i) {
    for (const auto& p : kParams) {
      if (a[i] == "*" || EqualsNoCase(a[i], p.first)) hits.push_back(p);
    }
  }
  AppendArrayHeader(out, static_cast<int64_t>(hits.size() * 2));
  for (const auto& p : hits) {
    AppendBulk(out, p.first);
    AppendBulk(out, p.second);
  }
}

void Hello(const Context&, const RedisArgs& a, IOBuf* out) {
  if (a.size() >= 2) {
    int64_t v = 0;
    if (!Int(a[1], &v))
      return AppendError(out, "ERR Protocol version is not an integer or out of range");
    if (v != 2) return AppendError(out, "NOPROTO unsupported protocol version");
    if (a.size() > 2) return AppendError(out, kSyntax);  // AUTH / SETNAME: not kept
  }
  AppendArrayHeader(out, 14);
  AppendBulk(out, "server");
  AppendBulk(out, "redis");
  AppendBulk(out, "version");
  AppendBulk(out, "7.0.0");
  AppendBulk(out, "proto");
  AppendInteger(out, 2);
  AppendBulk(out, "id");
  AppendInteger(out, 1);
  AppendBulk(out, "mode");
  AppendBulk(out, "standalone");
  AppendBulk(out, "role");
  AppendBulk(out, "master");
  AppendBulk(out, "modules");
  AppendArrayHeader(out, 0);
}

const std::vector<CommandSpec>& Specs();

void CommandCmd(const Context&, const RedisArgs& a, IOBuf* out) {
  const auto& specs = Specs();
  if (a.size() == 1) {
    // Redis 6's entry shape: name, arity, flags, first key, last key, step.
    AppendArrayHeader(out, static_cast<int64_t>(specs.size()));
    for (const CommandSpec& s : specs) {
      AppendArrayHeader(out, 6);
      AppendBulk(out, s.name);
      AppendInteger(out, s.arity);
      AppendArrayHeader(out, 0);
      AppendInteger(out, 0);
      AppendInteger(out, 0);
      AppendInteger(out, 0);
    }
    return;
  }
  if (EqualsNoCase(a[1], "count")) return AppendInteger(out, static_cast<int64_t>(specs.size()));
  if (EqualsNoCase(a[1], "docs")) {
    // redis-cli asks at start for its hints; a map per command, here with
    // a summary only (the other fields are optional).
    std::vector<const CommandSpec*> wanted;
    for (const CommandSpec& s : specs) {
      bool want = a.size() == 2;
      for (size_t i = 2; i < a.size() && !want; ++i) want = EqualsNoCase(a[i], s.name);
      if (want) wanted.push_back(&s);
    }
    AppendArrayHeader(out, static_cast<int64_t>(wanted.size() * 2));
    for (const CommandSpec* s : wanted) {
      AppendBulk(out, s->name);
      AppendArrayHeader(out, 2);
      AppendBulk(out, "summary");
      AppendBulk(out, std::string("weft-redis ") + s->name);
    }
    return;
  }
  AppendError(out, "ERR unknown subcommand '" + std::string(a[1]) + "'. Try COMMAND HELP.");
}

const std::vector<CommandSpec>& Specs() {
  static const std::vector<CommandSpec> specs = {
      {"ping", -1,
       [](const Context&, const RedisArgs& a, IOBuf* out) {
         if (a.size() > 2) return AppendError(out, rpc::redis::WrongArgsError("ping"));
         if (a.size() == 2) return AppendBulk(out, a[1]);
         AppendStatus(out, "PONG");
       }},
      {"echo", 2, [](const Context&, const RedisArgs& a, IOBuf* out) { AppendBulk(out, a[1]); }},
      {"set", -3, Set},
      {"get", 2,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         const auto reply = [out](std::string_view v) { AppendBulk(out, v); };
         if (!c.store->Read(a[1], NowMs::Clock(), reply)) AppendNullBulk(out);
       }},
      {"del", -2,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         const NowMs now = NowMs::Clock();
         int64_t n = 0;
         for (size_t i = 1; i < a.size(); ++i) n += c.store->Delete(a[i], now) ? 1 : 0;
         AppendInteger(out, n);
       }},
      {"exists", -2,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         const NowMs now = NowMs::Clock();
         int64_t n = 0;
         for (size_t i = 1; i < a.size(); ++i) n += c.store->Exists(a[i], now) ? 1 : 0;
         AppendInteger(out, n);
       }},
      {"incr", 2, [](const Context& c, const RedisArgs& a, IOBuf* out) { Incr(c, a[1], 1, out); }},
      {"decr", 2, [](const Context& c, const RedisArgs& a, IOBuf* out) { Incr(c, a[1], -1, out); }},
      {"incrby", 3,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         int64_t d = 0;
         if (!Int(a[2], &d)) return AppendError(out, kNotInteger);
         Incr(c, a[1], d, out);
       }},
      {"decrby", 3,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         int64_t d = 0;
         if (!Int(a[2], &d) || d == INT64_MIN) return AppendError(out, kNotInteger);
         Incr(c, a[1], -d, out);
       }},
      {"mget", -2,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         const NowMs now = NowMs::Clock();
         AppendArrayHeader(out, static_cast<int64_t>(a.size() - 1));
         const auto reply = [out](std::string_view v) { AppendBulk(out, v); };
         for (size_t i = 1; i < a.size(); ++i) {
           if (!c.store->Read(a[i], now, reply)) AppendNullBulk(out);
         }
       }},
      {"mset", -3,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         if (a.size() % 2 == 0) return AppendError(out, rpc::redis::WrongArgsError("mset"));
         std::vector<std::pair<std::string_view, std::string_view>> pairs;
         for (size_t i = 1; i + 1 < a.size(); i += 2) pairs.emplace_back(a[i], a[i + 1]);
         c.store->MultiSet(pairs);
         AppendStatus(out, "OK");
       }},
      {"expire", 3,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         int64_t s = 0;
         if (!Int(a[2], &s)) return AppendError(out, kNotInteger);
         const int64_t now = MonotonicMs();
         if (s > (INT64_MAX - now) / 1000 || s < (INT64_MIN + now) / 1000) {
           return AppendError(out, "ERR invalid expire time in 'expire' command");
         }
         AppendInteger(out, c.store->ExpireAt(a[1], now + s * 1000, now) ? 1 : 0);
       }},
      {"ttl", 2,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         const int64_t ms = c.store->PttlMs(a[1], NowMs::Clock());
         AppendInteger(out, ms < 0 ? ms : (ms + 500) / 1000);
       }},
      {"pttl", 2,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         AppendInteger(out, c.store->PttlMs(a[1], NowMs::Clock()));
       }},
      {"dbsize", 1,
       [](const Context& c, const RedisArgs&, IOBuf* out) {
         AppendInteger(out, static_cast<int64_t>(c.store->Size()));
       }},
      {"flushall", -1,
       [](const Context& c, const RedisArgs& a, IOBuf* out) {
         if (a.size() > 2 ||
             (a.size() == 2 && !EqualsNoCase(a[1], "sync") && !EqualsNoCase(a[1], "async"))) {
           return AppendError(out, kSyntax);
         }
         c.store->Clear();
         AppendStatus(out, "OK");
       }},
      {"flushdb", -1,
       [](const Context& c, const RedisArgs&, IOBuf* out) {
         c.store->Clear();
         AppendStatus(out, "OK");
       }},
      {"select", 2,
       [](const Context&, const RedisArgs& a, IOBuf* out) {
         int64_t db = 0;
         if (!Int(a[1], &db)) return AppendError(out, kNotInteger);
         if (db != 0) return AppendError(out, "ERR DB index is out of range");
         AppendStatus(out, "OK");
       }},
      {"info", -1, Info},
      {"config", -2, Config},
      {"command", -1, CommandCmd},
      {"hello", -1, Hello},
  };
  return specs;
}

}  // namespace

int AddRedisCommands(rpc::Server* server, RedisStore* store, const ServerInfo* info) {
  const Context ctx{store, info, server};
  for (const CommandSpec& spec : Specs()) {
    const CommandSpec* s = &spec;  // Specs() lives for the process
    const int rc = server->AddMethod(s->name, [ctx, s](rpc::Controller* cntl, const IOBuf& request,
                                                       IOBuf* response, rpc::Closure done) {
      // From the redis protocol the arguments come decoded; scratch is for
      // a caller that encodes them into the request (tests).
      RedisArgs scratch;
      const RedisArgs* const args = rpc::redis::CommandArgs(*cntl, request, &scratch);
      if (args == nullptr) {
        AppendError(response, "ERR malformed request");
      } else if ((s->arity > 0 && args->size() != static_cast<size_t>(s->arity)) ||
                 (s->arity < 0 && args->size() < static_cast<size_t>(-s->arity))) {
        AppendError(response, rpc::redis::WrongArgsError(s->name));
      } else {
        s->run(ctx, *args, response);
      }
      done();
    });
    if (rc != 0) return rc;
  }
  return 0;
}

}  // namespace weft::redis_tool
