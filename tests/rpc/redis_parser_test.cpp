// The RESP2 request parser and writers: Redis' limits and wording, hostile
// lengths, nesting, truncation at every byte, one byte at a time.
#include <gtest/gtest.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "net_test_util.h"
#include "protocols/redis/redis_client.h"
#include "protocols/redis/redis_protocol.h"
#include "protocols/redis/resp_request_parser.h"
#include "weft/rpc/controller.h"
#include "weft/rpc/redis.h"

namespace weft::rpc::redis {
namespace {

// Any non-null arg: the server side of ParseRedis.
const int kServerTag = 0;

std::vector<std::string> Args(const RespCommand& c) {
  const RedisArgs& a = c.args;
  std::vector<std::string> r;
  for (size_t i = 0; i < a.size(); ++i) r.emplace_back(a[i]);
  return r;
}

// Feeds `bytes` whole; returns every command, or the error text in *error.
std::vector<std::vector<std::string>> ParseAll(const std::string& bytes, std::string* error,
                                               size_t* left = nullptr,
                                               size_t max_command_bytes = SIZE_MAX) {
  RespRequestParser p;
  p.set_max_command_bytes(max_command_bytes);
  IOBuf buf;
  buf.append(bytes);
  std::vector<std::vector<std::string>> out;
  for (;;) {
    RespCommand c;
    const auto r = p.Parse(&buf, &c);
    if (r == RespRequestParser::kOk) {
      out.push_back(Args(c));
      continue;
    }
    if (r == RespRequestParser::kError) *error = p.error();
    break;
  }
  if (left != nullptr) *left = buf.size();
  return out;
}

std::string Resp(const std::vector<std::string>& args) {
  std::string s = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& a : args) s += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  return s;
}

TEST(RedisParserTest, ArraysOfBulkStringsBecomeCommandsWithLowerCasedNames) {
  RespRequestParser p;
  IOBuf buf;
  buf.append(Resp({"SET", "k", std::string("v\0\r\nx", 5)}));
  RespCommand c;
  ASSERT_EQ(RespRequestParser::kOk, p.Parse(&buf, &c));
  EXPECT_EQ("set", c.name);
  EXPECT_EQ((std::vector<std::string>{"SET", "k", std::string("v\0\r\nx", 5)}), Args(c));
  EXPECT_TRUE(buf.empty());
}

TEST(RedisParserTest, InlineCommandsSplitLikeRedis) {
  std::string err;
  const auto cmds = ParseAll("PING\r\nset k \"a b\\x41\\n\" 'it\\'s'\nECHO  x  \r\n", &err);
  EXPECT_EQ("", err);
  ASSERT_EQ(3u, cmds.size());
  EXPECT_EQ((std::vector<std::string>{"PING"}), cmds[0]);
  EXPECT_EQ((std::vector<std::string>{"set", "k", "a bA\n", "it's"}), cmds[1]);
  EXPECT_EQ((std::vector<std::string>{"ECHO", "x"}), cmds[2]);
}

TEST(RedisParserTest, EmptyCommandsAreSkipped) {
  std::string err;
  const auto cmds = ParseAll("*0\r\n*-1\r\n\r\n   \r\nPING\r\n", &err);
  EXPECT_EQ("", err);
  ASSERT_EQ(1u, cmds.size());
  EXPECT_EQ((std::vector<std::string>{"PING"}), cmds[0]);
}

TEST(RedisParserTest, UnbalancedQuotesAreAProtocolError) {
  std::string err;
  EXPECT_TRUE(ParseAll("set k \"abc\r\n", &err).empty());
  EXPECT_EQ("Protocol error: unbalanced quotes in request", err);
  err.clear();
  ParseAll("set k \"abc\"def\r\n", &err);
  EXPECT_EQ("Protocol error: unbalanced quotes in request", err);
}

TEST(RedisParserTest, NegativeBulkLengthIsInvalidBulkLength) {
  std::string err;
  EXPECT_TRUE(ParseAll("*1\r\n$-5\r\n", &err).empty());
  EXPECT_EQ("Protocol error: invalid bulk length", err);
  err.clear();
  ParseAll("*1\r\n$-1\r\n", &err);
  EXPECT_EQ("Protocol error: invalid bulk length", err);
  err.clear();
  ParseAll("*1\r\n$12a\r\n", &err);
  EXPECT_EQ("Protocol error: invalid bulk length", err);
}

TEST(RedisParserTest, BulkOver512MBIsInvalidBulkLengthAndExactly512MBWaits) {
  std::string err;
  ParseAll("*1\r\n$536870913\r\n", &err);
  EXPECT_EQ("Protocol error: invalid bulk length", err);
  err.clear();
  ParseAll("*1\r\n$99999999999999999999999\r\n", &err);
  EXPECT_EQ("Protocol error: invalid bulk length", err);
  err.clear();
  size_t left = 0;
  EXPECT_TRUE(ParseAll("*1\r\n$536870912\r\nabc", &err, &left).empty());
  EXPECT_EQ("", err);  // a legal length: waits for the bytes
  EXPECT_EQ(3u, left);
}

TEST(RedisParserTest, HugeArrayCountIsInvalidMultibulkLength) {
  std::string err;
  ParseAll("*99999999999\r\n", &err);
  EXPECT_EQ("Protocol error: invalid multibulk length", err);
  err.clear();
  ParseAll("*2147483648\r\n", &err);
  EXPECT_EQ("Protocol error: invalid multibulk length", err);
  err.clear();
  ParseAll("*x\r\n", &err);
  EXPECT_EQ("Protocol error: invalid multibulk length", err);
  // INT_MAX itself is legal and reserves nothing: it waits for arguments.
  err.clear();
  size_t left = 1;
  EXPECT_TRUE(ParseAll("*2147483647\r\n", &err, &left).empty());
  EXPECT_EQ("", err);
  EXPECT_EQ(0u, left);
}

TEST(RedisParserTest, NestedArraysAreAProtocolError) {
  std::string err;
  EXPECT_TRUE(ParseAll("*1\r\n*1\r\n$1\r\na\r\n", &err).empty());
  EXPECT_EQ("Protocol error: expected '$', got '*'", err);
  err.clear();
  ParseAll("*2\r\n$1\r\na\r\n:1\r\n", &err);
  EXPECT_EQ("Protocol error: expected '$', got ':'", err);
}

// The query limit counts each argument's bytes plus kArgCost, and refuses
// from the length line, before the bulk's bytes are there.
TEST(RedisParserTest, ACommandOverTheQueryLimitIsRefusedFromItsLengthLine) {
  const std::string kOver = "Protocol error: command over the query limit";
  const size_t limit = 4096;
  // SET k <v>: 3 + 1 + v bytes, and 3 * kArgCost.
  const size_t fits = limit - 4 - 3 * kArgCost;
  std::string err;
  auto cmds = ParseAll(Resp({"SET", "k", std::string(fits, 'v')}), &err, nullptr, limit);
  EXPECT_EQ("", err);
  ASSERT_EQ(1u, cmds.size());
  EXPECT_EQ(fits, cmds[0][2].size());
  // One byte more: refused with only the length line sent.
  const std::string head = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$" + std::to_string(fits + 1) + "\r\n";
  EXPECT_TRUE(ParseAll(head, &err, nullptr, limit).empty());
  EXPECT_EQ(kOver, err);
  // Empty arguments count too: "*2000000000" cannot hold memory for free.
  err.clear();
  std::string empties = "*2000000000\r\n";
  for (size_t i = 0; i <= limit / kArgCost; ++i) empties += "$0\r\n\r\n";
  EXPECT_TRUE(ParseAll(empties, &err, nullptr, limit).empty());
  EXPECT_EQ(kOver, err);
  // A bulk past the limit by itself.
  err.clear();
  ParseAll("*1\r\n$536870912\r\n", &err, nullptr, limit);
  EXPECT_EQ(kOver, err);
  // The limit is per command: many commands under it pass.
  err.clear();
  std::string many;
  for (int i = 0; i < 20; ++i) many += Resp({"SET", "k", std::string(fits, 'v')});
  EXPECT_EQ(20u, ParseAll(many, &err, nullptr, limit).size());
  EXPECT_EQ("", err);
}

// Under a limit smaller than what the in-place fast path may take, every
// command goes the general way and is still bounded.
TEST(RedisParserTest, ASmallQueryLimitBoundsSmallCommandsToo) {
  std::string err;
  EXPECT_EQ(1u, ParseAll(Resp({"SET", "k", "v"}), &err, nullptr, 100).size());
  EXPECT_EQ("", err);
  // 3 + 1 + 50 bytes and 48: 102 > 100, though a whole small command.
  EXPECT_TRUE(ParseAll(Resp({"SET", "k", std::string(50, 'v')}), &err, nullptr, 100).empty());
  EXPECT_EQ("Protocol error: command over the query limit", err);
}

TEST(RedisParserTest, InlineLineWithoutEndIsCutAt64KiB) {
  std::string err;
  size_t left = 0;
  EXPECT_TRUE(ParseAll(std::string(kMaxInlineSize, 'a'), &err, &left).empty());
  EXPECT_EQ("", err);
  EXPECT_EQ(kMaxInlineSize, left);
  ParseAll(std::string(kMaxInlineSize + 1, 'a'), &err);
  EXPECT_EQ("Protocol error: too big inline request", err);
  err.clear();
  ParseAll("*" + std::string(kMaxInlineSize + 1, '1'), &err);
  EXPECT_EQ("Protocol error: too big mbulk count string", err);
  err.clear();
  ParseAll("*1\r\n$" + std::string(kMaxInlineSize + 1, '1'), &err);
  EXPECT_EQ("Protocol error: too big bulk count string", err);
}

TEST(RedisParserTest, AnErrorIsFinal) {
  RespRequestParser p;
  IOBuf buf;
  buf.append("*1\r\n$-5\r\n");
  RespCommand c;
  ASSERT_EQ(RespRequestParser::kError, p.Parse(&buf, &c));
  buf.clear();
  buf.append("PING\r\n");
  EXPECT_EQ(RespRequestParser::kError, p.Parse(&buf, &c));
}

// Without a connection (socket == nullptr), every prefix of a pipeline
// either yields its complete commands or waits, consuming nothing.
TEST(RedisParserTest, TruncationAtEveryByteWaitsAndConsumesNothing) {
  const std::string one = Resp({"SET", "key", "value"});
  const std::string two = "INCR counter\r\n";
  const std::string three = Resp({"GET", ""});
  const std::string all = one + two + three;
  for (size_t cut = 0; cut <= all.size(); ++cut) {
    IOBuf buf;
    buf.append(all.data(), cut);
    size_t commands = 0;
    for (;;) {
      const size_t before = buf.size();
      ParseResult r = ParseRedis(&buf, nullptr, false, &kServerTag);
      if (!r.is_ok()) {
        ASSERT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, r.error()) << cut;
        ASSERT_EQ(before, buf.size()) << cut;
        break;
      }
      auto* m = static_cast<RedisMessage*>(r.message());
      EXPECT_TRUE(m->protocol_error.empty()) << cut;
      ++commands;
      m->Destroy();
    }
    const size_t expect = cut >= all.size()                ? 3
                          : cut >= one.size() + two.size() ? 2
                          : cut >= one.size()              ? 1
                                                           : 0;
    EXPECT_EQ(expect, commands) << "cut at " << cut;
  }
}

// A protocol error without a connection is a message carrying the reply
// text, not a silent close.
TEST(RedisParserTest, ProtocolErrorBecomesAnErrReply) {
  IOBuf buf;
  buf.append("*1\r\n$-5\r\n");
  ParseResult r = ParseRedis(&buf, nullptr, false, &kServerTag);
  ASSERT_TRUE(r.is_ok());
  auto* m = static_cast<RedisMessage*>(r.message());
  EXPECT_EQ("ERR Protocol error: invalid bulk length", m->protocol_error);
  m->Destroy();
}

TEST(RedisParserTest, StreamFedOneByteAtATimeYieldsTheSameCommands) {
  std::string all;
  std::vector<std::vector<std::string>> expected;
  for (int i = 0; i < 50; ++i) {
    std::vector<std::string> cmd = {"MSET", "k" + std::to_string(i), std::string(i * 7, 'v')};
    all += Resp(cmd);
    expected.push_back(cmd);
    all += "PING\r\n";
    expected.push_back({"PING"});
  }
  RespRequestParser p;
  IOBuf buf;
  std::vector<std::vector<std::string>> got;
  for (char ch : all) {
    buf.push_back(ch);
    for (;;) {
      RespCommand c;
      const auto r = p.Parse(&buf, &c);
      ASSERT_NE(RespRequestParser::kError, r) << p.error();
      if (r != RespRequestParser::kOk) break;
      got.push_back(Args(c));
    }
  }
  EXPECT_EQ(expected, got);
  EXPECT_TRUE(buf.empty());
}

TEST(RedisParserTest, ParseInt64IsStrict) {
  int64_t v = 0;
  EXPECT_TRUE(ParseInt64("-9223372036854775808", 20, &v));
  EXPECT_EQ(INT64_MIN, v);
  EXPECT_TRUE(ParseInt64("9223372036854775807", 19, &v));
  EXPECT_EQ(INT64_MAX, v);
  EXPECT_FALSE(ParseInt64("9223372036854775808", 19, &v));
  EXPECT_FALSE(ParseInt64("+1", 2, &v));
  EXPECT_FALSE(ParseInt64("-", 1, &v));
  EXPECT_FALSE(ParseInt64("", 0, &v));
  EXPECT_FALSE(ParseInt64(" 1", 2, &v));
}

TEST(RedisWriterTest, RepliesAndErrorsAreWordedAsRedis) {
  IOBuf out;
  AppendStatus(&out, "OK");
  AppendError(&out, "ERR a\r\nb");
  AppendInteger(&out, -42);
  AppendBulk(&out, "hi");
  AppendNullBulk(&out);
  AppendArrayHeader(&out, 2);
  EXPECT_EQ("+OK\r\n-ERR a  b\r\n:-42\r\n$2\r\nhi\r\n$-1\r\n*2\r\n", out.to_string());
  EXPECT_EQ("ERR wrong number of arguments for 'get' command", WrongArgsError("GET"));
  IOBuf req;
  AppendRequestArg(&req, "foo");
  AppendRequestArg(&req, "a");
  AppendRequestArg(&req, "b");
  RedisArgs args;
  ASSERT_TRUE(args.Parse(req));
  EXPECT_EQ("ERR unknown command 'foo', with args beginning with: 'a' 'b' ",
            UnknownCommandError(args));
}

// The writers build a reply of up to 256 bytes on the stack and append it
// once; longer ones go out piece by piece. Both give the same bytes, at
// every length across the switch, for every writer, and a long error is
// cleaned of CR/LF too.
TEST(RedisWriterTest, SmallAndLargeRepliesAreTheSameBytesAcrossTheSwitch) {
  for (size_t n = 200; n <= 300; ++n) {
    std::string text(n, 'x');
    text[n / 2] = '\r';
    text[n / 3] = '\n';
    std::string clean = text;
    clean[n / 2] = ' ';
    clean[n / 3] = ' ';
    const std::string bulk(n, 'b');
    IOBuf out;
    AppendBulk(&out, bulk);
    AppendError(&out, text);
    AppendStatus(&out, clean);
    EXPECT_EQ("$" + std::to_string(n) + "\r\n" + bulk + "\r\n-" + clean + "\r\n+" + clean + "\r\n",
              out.to_string())
        << "length " << n;
    IOBuf req;
    AppendRequestArg(&req, bulk);
    AppendRequestArg(&req, "");
    RedisArgs args;
    ASSERT_TRUE(args.Parse(req)) << "length " << n;
    ASSERT_EQ(2u, args.size());
    EXPECT_EQ(bulk, args[0]);
    EXPECT_EQ("", args[1]);
  }
  IOBuf out;
  AppendBulk(&out, "");
  AppendInteger(&out, INT64_MIN);
  AppendArrayHeader(&out, 0);
  // Default views (null data, no bytes) too.
  AppendBulk(&out, std::string_view());
  AppendStatus(&out, std::string_view());
  AppendError(&out, std::string_view());
  EXPECT_EQ("$0\r\n\r\n:-9223372036854775808\r\n*0\r\n$0\r\n\r\n+\r\n-\r\n", out.to_string());
  IOBuf req;
  AppendRequestArg(&req, std::string_view());
  RedisArgs args;
  ASSERT_TRUE(args.Parse(req));
  ASSERT_EQ(1u, args.size());
  EXPECT_EQ("", args[0]);
}

// Arguments past the inline count (8) and the inline bytes (256) move to
// the heap; every view stays right through the switch, through moves
// (which copy the inline bytes) and across Parse and Clear.
TEST(RedisArgsTest, BuiltGrownAndMovedArgumentsKeepTheirBytes) {
  std::vector<std::string> want;
  RedisArgs a;
  for (size_t i = 0; i < 20; ++i) {
    want.push_back(std::string(i * 7 % 50, static_cast<char>('a' + i)));
    if (i % 2 == 0) {
      a.Append(want.back());
    } else {
      char* to = a.AppendUninitialized(want.back().size());
      memcpy(to, want.back().data(), want.back().size());
    }
    ASSERT_EQ(i + 1, a.size());
    for (size_t j = 0; j <= i; ++j) ASSERT_EQ(want[j], a[j]) << "after " << i << ", arg " << j;
  }
  RedisArgs b(std::move(a));
  EXPECT_EQ(0u, a.size());
  ASSERT_EQ(want.size(), b.size());
  for (size_t j = 0; j < want.size(); ++j) EXPECT_EQ(want[j], b[j]) << j;
  // Inline arguments moved over heap ones, and the other way round.
  RedisArgs small;
  small.Append("get");
  small.Append(std::string_view());
  small.Append("key");
  b = std::move(small);
  ASSERT_EQ(3u, b.size());
  EXPECT_EQ("get", b[0]);
  EXPECT_EQ("", b[1]);
  EXPECT_EQ("key", b[2]);
  RedisArgs big;
  big.Append(std::string(300, 'x'));
  b = std::move(big);
  ASSERT_EQ(1u, b.size());
  EXPECT_EQ(std::string(300, 'x'), b[0]);
  // The moved-from object is empty and usable again.
  small.Append("again");
  ASSERT_EQ(1u, small.size());
  EXPECT_EQ("again", small[0]);
  // Parse replaces what was held; a malformed request leaves nothing.
  IOBuf req;
  AppendRequestArg(&req, "set");
  AppendRequestArg(&req, "k");
  ASSERT_TRUE(b.Parse(req));
  ASSERT_EQ(2u, b.size());
  EXPECT_EQ("set", b[0]);
  EXPECT_EQ("k", b[1]);
  IOBuf bad;
  bad.append("\x05\0\0\0ab", 6);
  EXPECT_FALSE(b.Parse(bad));
  EXPECT_EQ(0u, b.size());
  b.Append("x");
  b.Clear();
  EXPECT_EQ(0u, b.size());
}

// A method finds the arguments the protocol decoded (no copy); a caller
// that runs it directly passes them encoded in the request instead.
TEST(RedisArgsTest, CommandArgsPrefersTheProtocolsDecodedArguments) {
  RedisArgs decoded;
  decoded.Append("get");
  decoded.Append("k");
  IOBuf request;
  AppendRequestArg(&request, "set");
  AppendRequestArg(&request, "k");
  AppendRequestArg(&request, "v");
  RedisArgs scratch;
  Controller cntl;
  cntl.set_request_object(&decoded);
  EXPECT_EQ(&decoded, cntl.request_object<RedisArgs>());
  EXPECT_EQ(&decoded, cntl.request_object<const RedisArgs>());
  EXPECT_EQ(&decoded, CommandArgs(cntl, request, &scratch));
  EXPECT_EQ(0u, scratch.size());
  // Another type's object is not taken for RedisArgs.
  const int other = 7;
  Controller typed;
  typed.set_request_object(&other);
  EXPECT_EQ(&other, typed.request_object<int>());
  EXPECT_EQ(nullptr, typed.request_object<RedisArgs>());
  const RedisArgs* got = CommandArgs(typed, request, &scratch);
  ASSERT_EQ(&scratch, got);
  ASSERT_EQ(3u, got->size());
  EXPECT_EQ("set", (*got)[0]);
  EXPECT_EQ("v", (*got)[2]);
  // Reset forgets the object; then an empty request holds no command.
  cntl.Reset();
  EXPECT_EQ(nullptr, cntl.request_object<RedisArgs>());
  EXPECT_EQ(nullptr, CommandArgs(cntl, IOBuf(), &scratch));
  RedisArgs none;
  cntl.set_request_object(&none);
  EXPECT_EQ(nullptr, CommandArgs(cntl, request, &scratch));
}

TEST(RedisReplyTest, RepliesDecodeAndDeepNestingIsRefused) {
  IOBuf resp;
  resp.append("+OK\r\n:7\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n-ERR x\r\n$3\r\nabc\r\n");
  std::vector<RedisReply> r;
  ASSERT_TRUE(ParseReplies(resp, &r));
  ASSERT_EQ(5u, r.size());
  EXPECT_EQ(RedisReply::kStatus, r[0].type);
  EXPECT_EQ(7, r[1].integer);
  EXPECT_EQ(RedisReply::kNil, r[2].type);
  ASSERT_EQ(2u, r[3].elements.size());
  EXPECT_EQ("ERR x", r[3].elements[1].elements[0].str);
  EXPECT_EQ("abc", r[4].str);
  std::string deep;
  for (int i = 0; i <= kMaxReplyDepth + 1; ++i) deep += "*1\r\n";
  deep += ":1\r\n";
  size_t end = 0;
  EXPECT_EQ(ReplyScan::kError, ScanReply(deep.data(), deep.size(), 0, 0, &end));
  const std::string huge = "$536870913\r\n";
  EXPECT_EQ(ReplyScan::kError, ScanReply(huge.data(), huge.size(), 0, 0, &end));
  const std::string part = "*2\r\n:1\r\n";
  EXPECT_EQ(ReplyScan::kNeedMore, ScanReply(part.data(), part.size(), 0, 0, &end));
}

}  // namespace
}  // namespace weft::rpc::redis

namespace weft::rpc::redis {
namespace {

// A command consumed in part by one parse (its header lines) and finished
// by the next: the second parse starts mid-bulk, at bytes that are no
// command name, and must not hand the connection to other protocols.
TEST(RedisParserTest, ACommandSplitMidBulkOnAFirstMessageStaysRedis) {
  int a = -1, b = -1;
  ASSERT_TRUE(test::make_tcp_pair(&a, &b));
  SocketId id;
  SocketUniquePtr s;
  ASSERT_TRUE(test::adopt_fd(a, &id, &s));
  IOBuf buf;
  buf.append("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$8\r\nvv");
  ParseResult r = ParseRedis(&buf, s.get(), false, &kServerTag);
  ASSERT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, r.error());
  buf.append("vvvvvv\r\n");
  r = ParseRedis(&buf, s.get(), false, &kServerTag);
  ASSERT_TRUE(r.is_ok()) << ParseErrorToString(r.error());
  auto* m = static_cast<RedisMessage*>(r.message());
  ASSERT_EQ(1u, m->commands.size());
  EXPECT_EQ("set", m->commands[0].name);
  EXPECT_EQ(3u, m->commands[0].args.size());
  m->Destroy();
  s->SetFailed();
  close(b);
}

}  // namespace
}  // namespace weft::rpc::redis

namespace weft::rpc::redis {
namespace {

// A connection's socket for ParseRedis (the parser state lives in it).
struct ParseConnection {
  ParseConnection() {
    EXPECT_TRUE(test::make_tcp_pair(&a, &b));
    EXPECT_TRUE(test::adopt_fd(a, &id, &s));
  }
  ~ParseConnection() {
    s->SetFailed();
    close(b);
  }
  int a = -1, b = -1;
  SocketId id;
  SocketUniquePtr s;
};

// Every batch ParseRedis cuts from buf on c until it needs more bytes,
// appended (command by command, name first) to *got.
void CutBatches(ParseConnection* c, IOBuf* buf, std::vector<std::vector<std::string>>* got,
                size_t* batches = nullptr) {
  for (;;) {
    ParseResult r = ParseRedis(buf, c->s.get(), false, &kServerTag);
    if (!r.is_ok()) {
      ASSERT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, r.error());
      return;
    }
    auto* m = static_cast<RedisMessage*>(r.message());
    EXPECT_TRUE(m->protocol_error.empty());
    EXPECT_FALSE(m->commands.empty());
    for (const RespCommand& cmd : m->commands) {
      std::vector<std::string> args = Args(cmd);
      args.insert(args.begin(), cmd.name);
      got->push_back(std::move(args));
    }
    if (batches != nullptr) ++*batches;
    m->Destroy();
  }
}

// The redis-server model: one parse on a connection takes every complete
// command of the read buffer as one batch (one message, one process call,
// one write), leaving only the incomplete tail.
TEST(RedisBatchTest, OneParseCutsEveryCompleteCommandOfTheBuffer) {
  ParseConnection c;
  const std::string whole = Resp({"SET", "k", "v"}) + "INCR n\r\n" + Resp({"GET", "k"}) +
                            "PING\r\n" + Resp({"ECHO", std::string(2000, 'e')});
  const std::string tail = "*2\r\n$3\r\nGET\r\n$1\r\n";
  IOBuf buf;
  buf.append(whole + tail);
  ParseResult r = ParseRedis(&buf, c.s.get(), false, &kServerTag);
  ASSERT_TRUE(r.is_ok());
  // Only the partial command is left (its header lines may be consumed
  // already, never more).
  EXPECT_LE(buf.size(), tail.size());
  auto* m = static_cast<RedisMessage*>(r.message());
  ASSERT_EQ(5u, m->commands.size());
  EXPECT_EQ("set", m->commands[0].name);
  EXPECT_EQ("incr", m->commands[1].name);
  EXPECT_EQ("get", m->commands[2].name);
  EXPECT_EQ("ping", m->commands[3].name);
  EXPECT_EQ("echo", m->commands[4].name);
  ASSERT_EQ(2u, m->commands[4].args.size());
  EXPECT_EQ(std::string(2000, 'e'), m->commands[4].args[1]);
  m->Destroy();
  EXPECT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, ParseRedis(&buf, c.s.get(), false, &kServerTag).error());
  buf.append("k\r\n");
  std::vector<std::vector<std::string>> got;
  CutBatches(&c, &buf, &got);
  EXPECT_EQ((std::vector<std::vector<std::string>>{{"get", "GET", "k"}}), got);
}

// The commands of a pipeline, whatever byte the read boundary falls on,
// come out of the batches the same and in order; each side of the
// boundary is at most one batch.
TEST(RedisBatchTest, APipelineSplitAtEveryByteGivesTheSameCommandsInOrder) {
  std::vector<std::vector<std::string>> want = {
      {"SET", "key", "value"},         {"INCR", "counter"}, {"GET", ""},
      {"ECHO", std::string(600, 'x')},  // past the copied-bulk size: cut
      {"MSET", "a", "1", "b", "2"},
  };
  std::string all;
  for (const auto& w : want) all += Resp(w);
  all += "ping  \t hello\r\n";
  want.push_back({"ping", "hello"});
  all += "\r\n";  // a blank inline line: skipped
  all += "echo \"a b\"\r\n";
  want.push_back({"echo", "a b"});
  for (auto& w : want) {
    std::string name = w[0];
    for (char& ch : name) ch = static_cast<char>(tolower(ch));
    w.insert(w.begin(), name);
  }
  for (size_t cut = 0; cut <= all.size(); ++cut) {
    ParseConnection c;
    IOBuf buf;
    std::vector<std::vector<std::string>> got;
    size_t batches = 0;
    buf.append(all.data(), cut);
    CutBatches(&c, &buf, &got, &batches);
    buf.append(all.data() + cut, all.size() - cut);
    CutBatches(&c, &buf, &got, &batches);
    EXPECT_TRUE(buf.empty()) << cut;
    EXPECT_EQ(want, got) << "cut at " << cut;
    EXPECT_LE(batches, 2u) << cut;
  }
}

// A batch of more commands than it reserved (16) grows its vector, which
// moves the commands cut so far: each keeps its own arguments, inline or
// on the heap.
TEST(RedisBatchTest, ABatchPastItsReservationKeepsEveryCommandsArguments) {
  ParseConnection c;
  std::string all;
  std::vector<std::vector<std::string>> want;
  for (int i = 0; i < 300; ++i) {
    const std::string value(static_cast<size_t>(i % 5 == 0 ? 400 : i % 17), 'a' + i % 26);
    want.push_back({"SET", "key" + std::to_string(i), value});
    all += Resp({"SET", "key" + std::to_string(i), value});
  }
  IOBuf buf;
  buf.append(all);
  ParseResult r = ParseRedis(&buf, c.s.get(), false, &kServerTag);
  ASSERT_TRUE(r.is_ok());
  EXPECT_TRUE(buf.empty());
  auto* m = static_cast<RedisMessage*>(r.message());
  ASSERT_EQ(want.size(), m->commands.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i], Args(m->commands[i])) << i;
    EXPECT_EQ("set", m->commands[i].name) << i;
  }
  m->Destroy();
}

// A whole small command in the buffer's first block is parsed in place (the
// fast path); fed one byte at a time the same bytes take the general path.
// Both must give the same commands, at the edges of the fast path's bounds
// too.
TEST(RedisBatchTest, InPlaceParseMatchesTheGeneralPathAtItsBounds) {
  std::vector<std::string> args64 = {"MSET"}, args65 = {"MSET"};
  for (int i = 1; i < 64; ++i) args64.push_back(std::to_string(i));
  for (int i = 1; i < 65; ++i) args65.push_back(std::to_string(i));
  const std::vector<std::string> inputs = {
      Resp({"SET", "k", std::string(512, 'v')}),
      Resp({"SET", "k", std::string(513, 'v')}),
      Resp({"SET", "k", std::string(1000, 'v')}),
      Resp({"SET", std::string(500, 'k'), std::string(500, 'v')}),
      // 1024 argument bytes in all, the fast path's most, and one more.
      Resp({"SET", "k", std::string(1020, 'v')}),
      Resp({"SET", "k", std::string(1021, 'v')}),
      Resp(args64),
      Resp(args65),
      Resp({"GeT", ""}),
      "*02\r\n$003\r\nGET\r\n$1\r\nk\r\n",         // leading zeros
      "*1\r\n$4\r\nPINGxy",                        // the CRLF after a bulk is not checked
      "*1\r\n$000000000000000000004\r\nPING\r\n",  // a long length line
      "*1\r\n$000000000000000004\r\nPING\r\n",     // 18 digits: the fast path's most
      "*1\r\n$0000000000000000004\r\nPING\r\n",    // 19 digits: the general path's
      "*1\r\n$-0\r\n\r\n",                         // a signed zero length
      "*1\r\n$+4\r\nPING\r\n",
      "*1\r\n$ 4\r\nPING\r\n",
      "*1\r\n$4 \r\nPING\r\n",
      "*1\r\n$\r\nPING\r\n",  // no digits
      "*+1\r\n$4\r\nPING\r\n",
      "*1\r\n$4",  // a length line not yet whole
      "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n",
      "*1\n\n$4\r\nPING\r\n",  // the byte after the CR is not checked
      std::string("PING\t\v\f a\0b \r\n", 15),
      "PING\r",
      "  SET  'a b'  \"c\\x41\"  \r\n",
      std::string(2000, 'a') + "\r\n",
      "*1\r\n$3\r\nGET\r\n*0\r\n*-1\r\nPING\r\n",
  };
  // Every command (name first) of `in` fed in pieces of `step` bytes (0:
  // whole), and the error that ended it.
  auto parse = [](const std::string& in, size_t step, std::string* error) {
    RespRequestParser p;
    IOBuf buf;
    std::vector<std::vector<std::string>> out;
    size_t off = 0;
    while (off < in.size() && error->empty()) {
      const size_t n = step == 0 ? in.size() : std::min(step, in.size() - off);
      buf.append(in.data() + off, n);
      off += n;
      for (;;) {
        RespCommand c;
        const auto r = p.Parse(&buf, &c);
        if (r == RespRequestParser::kError) *error = p.error();
        if (r != RespRequestParser::kOk) break;
        std::vector<std::string> a = Args(c);
        a.insert(a.begin(), c.name);
        out.push_back(std::move(a));
      }
    }
    return out;
  };
  for (const std::string& in : inputs) {
    std::string error_whole, error_bytes;
    const auto whole = parse(in, 0, &error_whole);
    const auto bytes = parse(in, 1, &error_bytes);
    EXPECT_EQ(bytes, whole) << in;
    EXPECT_EQ(error_bytes, error_whole) << in;
  }
}

}  // namespace
}  // namespace weft::rpc::redis
