// The protocol registry, connection types, error names, Controller and
// Closure (weft/rpc/protocol.h, errno.h, controller.h, closure.h).
#include <gtest/gtest.h>
#include <string.h>

#include <memory>
#include <set>
#include <string>

#include "weft/rpc/controller.h"
#include "weft/rpc/errno.h"
#include "weft/rpc/protocol.h"

namespace weft::rpc {
namespace {

TEST(RpcErrno, ValuesAreRpcMdsBrpcValues) {
  EXPECT_EQ(1001, ENOSERVICE);
  EXPECT_EQ(1002, ENOMETHOD);
  EXPECT_EQ(1003, EREQUEST);
  EXPECT_EQ(1004, ERPCAUTH);
  EXPECT_EQ(1005, ETOOMANYFAILS);
  EXPECT_EQ(1008, ERPCTIMEDOUT);
  EXPECT_EQ(1009, EFAILEDSOCKET);
  EXPECT_EQ(1011, EOVERCROWDED);
  EXPECT_EQ(2001, ELOGOFF);
  EXPECT_EQ(2004, ELIMIT);
}

TEST(RpcErrno, ErrorTextNamesEveryRpcCodeAndSystemErrno) {
  std::set<std::string> seen;
  for (int code : {ENOSERVICE, ENOMETHOD, EREQUEST, ERPCAUTH, ETOOMANYFAILS, ERPCTIMEDOUT,
                   EFAILEDSOCKET, EOVERCROWDED, ELOGOFF, ELIMIT}) {
    const char* t = ErrorText(code);
    ASSERT_NE(nullptr, t);
    EXPECT_NE(std::string::npos, std::string(t).find('E')) << code;
    EXPECT_TRUE(seen.insert(t).second) << "two codes share the text " << t;
  }
  EXPECT_STREQ(strerror(ECANCELED), ErrorText(ECANCELED));
  EXPECT_STREQ(strerror(ETIMEDOUT), ErrorText(ETIMEDOUT));
  EXPECT_STREQ("unknown error", ErrorText(123456));
  EXPECT_STREQ("unknown error", ErrorText(-5));
  // Static: the same pointer every time, never overwritten.
  EXPECT_EQ(ErrorText(EPIPE), ErrorText(EPIPE));
}

TEST(ConnectionType, ParsesSinglePooledShortOnly) {
  ConnectionType t = kPooled;
  EXPECT_TRUE(ParseConnectionType("single", &t));
  EXPECT_EQ(kSingle, t);
  EXPECT_TRUE(ParseConnectionType("pooled", &t));
  EXPECT_EQ(kPooled, t);
  EXPECT_TRUE(ParseConnectionType("short", &t));
  EXPECT_EQ(kShort, t);
  EXPECT_FALSE(ParseConnectionType("Single", &t));
  EXPECT_FALSE(ParseConnectionType("", &t));
  EXPECT_FALSE(ParseConnectionType("singlex", &t));
  EXPECT_EQ(kShort, t);
  EXPECT_STREQ("single", ConnectionTypeName(kSingle));
  EXPECT_STREQ("pooled", ConnectionTypeName(kPooled));
  EXPECT_STREQ("short", ConnectionTypeName(kShort));
}

ParseResult NeverParse(IOBuf*, Socket*, bool, const void*) {
  return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
}
void NoopProcess(InputMessageBase* m) { m->Destroy(); }

TEST(ProtocolRegistry, WeftStdIsBuiltIn) {
  const Protocol* p = FindProtocol("weft_std");
  ASSERT_NE(nullptr, p);
  EXPECT_STREQ("weft_std", p->name);
  EXPECT_NE(nullptr, p->parse);
  EXPECT_NE(nullptr, p->process_request);
  EXPECT_NE(nullptr, p->pack_request);
  EXPECT_EQ(static_cast<unsigned>(kSingle | kPooled | kShort), p->supported_connection_types);
  EXPECT_FALSE(p->in_order);
  EXPECT_EQ(p, FindProtocol("weft_std"));
  const auto all = ListProtocols();
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(p, all[0]);  // built-ins first
}

TEST(ProtocolRegistry, RegisterReturnsZeroThenEexist) {
  Protocol p;
  p.name = "test_proto_registry";
  p.parse = NeverParse;
  p.process_request = NoopProcess;
  p.supported_connection_types = kPooled | kShort;
  p.in_order = true;
  EXPECT_EQ(0, RegisterProtocol(p));
  EXPECT_EQ(EEXIST, RegisterProtocol(p));
  Protocol builtin = *FindProtocol("weft_std");
  EXPECT_EQ(EEXIST, RegisterProtocol(builtin));
  const Protocol* found = FindProtocol("test_proto_registry");
  ASSERT_NE(nullptr, found);
  EXPECT_TRUE(found->in_order);
  EXPECT_EQ(static_cast<unsigned>(kPooled | kShort), found->supported_connection_types);
  EXPECT_EQ(nullptr, FindProtocol("test_proto_registr"));
  EXPECT_EQ(nullptr, FindProtocol("no_such_protocol"));
}

TEST(ProtocolRegistry, RegisterRefusesIncompleteProtocols) {
  Protocol p;
  p.parse = NeverParse;
  p.process_request = NoopProcess;
  EXPECT_EQ(EINVAL, RegisterProtocol(p));  // no name
  p.name = "";
  EXPECT_EQ(EINVAL, RegisterProtocol(p));
  p.name = "test_proto_incomplete";
  p.parse = nullptr;
  EXPECT_EQ(EINVAL, RegisterProtocol(p));
  p.parse = NeverParse;
  p.process_request = nullptr;
  EXPECT_EQ(EINVAL, RegisterProtocol(p));
  EXPECT_EQ(nullptr, FindProtocol("test_proto_incomplete"));
}

TEST(Controller, SetFailedKeepsCodeAndFormattedText) {
  Controller c;
  EXPECT_FALSE(c.Failed());
  EXPECT_EQ(0, c.ErrorCode());
  EXPECT_TRUE(c.ErrorText().empty());
  c.SetFailed(ENOMETHOD, "no method %s (%d)", "x", 7);
  EXPECT_TRUE(c.Failed());
  EXPECT_EQ(ENOMETHOD, c.ErrorCode());
  EXPECT_EQ("no method x (7)", c.ErrorText());
  // A text longer than the formatting's stack buffer.
  const std::string big(1000, 'z');
  c.SetFailed(EREQUEST, "%s", big.c_str());
  EXPECT_EQ(big, c.ErrorText());
  // Empty text: the code's name, so a failed call never has an empty text.
  c.SetFailed(ELIMIT, "%s", "");
  EXPECT_STREQ(ErrorText(ELIMIT), c.ErrorText().c_str());
  // 0 is not "success": a failed controller with a non-zero code.
  c.SetFailed(0, "oops");
  EXPECT_TRUE(c.Failed());
  EXPECT_NE(0, c.ErrorCode());
}

TEST(Controller, ResetClearsEverything) {
  Controller c;
  c.set_timeout_ms(100);
  c.set_max_retry(5);
  c.SetFailed(ELOGOFF, "bye");
  c.set_latency_us(42);
  c.set_retried_count(2);
  c.set_remote_side(EndPoint::loopback(80));
  bthread_id_t id;
  id.value = 77;
  c.set_call_id(id);
  EXPECT_EQ(100, c.timeout_ms());
  EXPECT_EQ(5, c.max_retry());
  c.Reset();
  EXPECT_FALSE(c.Failed());
  EXPECT_TRUE(c.ErrorText().empty());
  EXPECT_EQ(Controller::kUnset, c.timeout_ms());
  EXPECT_EQ(Controller::kUnset, c.max_retry());
  EXPECT_EQ(0, c.latency_us());
  EXPECT_EQ(0, c.retried_count());
  EXPECT_FALSE(c.remote_side().is_set());
  EXPECT_EQ(0u, c.call_id().value);
}

TEST(Closure, OwnsMoveOnlyStateAndRunsOnce) {
  int runs = 0;
  auto owned = std::make_unique<int>(5);
  Closure done([&runs, p = std::move(owned)] { runs += *p; });
  EXPECT_TRUE(static_cast<bool>(done));
  Closure moved = std::move(done);
  EXPECT_FALSE(static_cast<bool>(done));  // NOLINT: checking the moved-from state
  moved();
  EXPECT_EQ(5, runs);
  EXPECT_FALSE(static_cast<bool>(moved));
}

// Counts the live copies of the state a callable owns, so each test can
// check that exactly what was made is destroyed (inline or on the heap).
struct Tracked {
  static inline int alive = 0;
  Tracked() { ++alive; }
  Tracked(const Tracked&) { ++alive; }
  Tracked(Tracked&&) noexcept { ++alive; }
  ~Tracked() { --alive; }
};

TEST(Closure, SmallAndLargeCallablesSurviveMovesAndRunOnce) {
  int small_runs = 0, large_runs = 0;
  {
    Tracked t;
    Closure small([&small_runs, t] { ++small_runs; });
    char big[256] = {1};
    Closure large([&large_runs, t, big] { large_runs += big[0]; });
    EXPECT_EQ(3, Tracked::alive);
    Closure small2 = std::move(small);
    Closure large2 = std::move(large);
    small = std::move(large2);  // assigning over an empty one
    EXPECT_EQ(3, Tracked::alive);
    small2();
    small();
    EXPECT_EQ(1, small_runs);
    EXPECT_EQ(1, large_runs);
    EXPECT_EQ(1, Tracked::alive);  // only t: each callable was freed after its run
  }
  EXPECT_EQ(0, Tracked::alive);
}

TEST(Closure, AnUnrunClosureFreesWhatItOwns) {
  {
    Tracked t;
    Closure small([t] {});
    char big[256] = {};
    Closure large([t, big] { (void)big; });
    Closure replaced([t] {});
    replaced = Closure([] {});  // the old callable is destroyed unrun
    EXPECT_EQ(3, Tracked::alive);
  }
  EXPECT_EQ(0, Tracked::alive);
}

// A reply's last step often frees the object that holds the Closure being
// run: the callable must not live in that object while it runs.
TEST(Closure, TheCallableMayDestroyItsOwnHolder) {
  struct Holder {
    Closure done;
    int* seen;
  };
  int seen = 0;
  auto* h = new Holder{nullptr, &seen};
  Tracked t;
  h->done = Closure([h, t] {
    int* out = h->seen;
    delete h;               // frees the storage this Closure was in
    *out = Tracked::alive;  // t's copy is still alive here
  });
  h->done();
  EXPECT_EQ(2, seen);
  EXPECT_EQ(1, Tracked::alive);
}

// A callback that keeps its owner alive, dropped by assigning over it: the
// owner (and the Closure in it) dies while the old callable is destroyed,
// so the assignment must touch nothing after that (ASan checks it).
TEST(Closure, AssigningOverACallableThatOwnsTheHolderIsSafe) {
  struct Conn {
    Closure cb;
  };
  auto conn = std::make_shared<Conn>();
  conn->cb = Closure([self = conn] {});
  const std::weak_ptr<Conn> watch = conn;
  Conn* raw = conn.get();
  conn.reset();  // only the callable holds the connection now
  raw->cb = nullptr;
  EXPECT_TRUE(watch.expired());
  // And a callable whose destruction frees the Closure being moved in.
  auto holder = std::make_shared<Conn>();
  holder->cb = Closure([] {});
  Closure target([keep = holder] {});
  Conn* h = holder.get();
  holder.reset();             // target's callable is the last owner of h
  target = std::move(h->cb);  // destroying target's old callable frees h
  EXPECT_TRUE(static_cast<bool>(target));
  target();
}

TEST(ClosureDeathTest, SecondCallAborts) {
  Closure done([] {});
  done();
  EXPECT_DEATH(done(), "called twice");
}

}  // namespace
}  // namespace weft::rpc
