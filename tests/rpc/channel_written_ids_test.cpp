// The client's per-call bookkeeping on a long-lived single connection:
// whatever a call leaves on its socket (the written-but-unanswered ids)
// goes when the call ends, however the reply and the writer's bookkeeping
// interleave, so a connection that serves millions of calls holds only the
// calls in flight.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/net/socket_map.h"
#include "weft/rpc/channel.h"
#include "weft/rpc/server.h"

namespace weft::rpc {
namespace {

using test::kTimeScale;

struct Load {
  Channel* channel = nullptr;
  int calls = 0;
  std::atomic<int> failures{0};
};

void* call_loop(void* arg) {
  Load* const l = static_cast<Load*>(arg);
  IOBuf req;
  req.append(std::string(64, 'w'));
  for (int i = 0; i < l->calls; ++i) {
    Controller cntl;
    IOBuf resp;
    l->channel->CallMethod("echo", &cntl, req, &resp, nullptr);
    if (cntl.Failed() || resp.size() != 64) l->failures.fetch_add(1);
  }
  return nullptr;
}

TEST(ChannelWrittenIdsTest, EndedCallsLeaveNoWrittenIdsOnTheirConnection) {
  test::Watchdog dog("written ids", test::kLong);
  Server server;
  ASSERT_EQ(0,
            server.AddMethod("echo", [](Controller*, const IOBuf& req, IOBuf* resp, Closure done) {
              resp->append(req);
              done();
            }));
  ASSERT_EQ(0, server.Start("127.0.0.1:0", nullptr));
  {
    Channel ch;
    ChannelOptions opt;
    opt.timeout_ms = 10000 * kTimeScale;
    ASSERT_EQ(0, ch.Init(server.listen_address(), &opt));
    // Many callers at once, so replies often come back before the writer
    // that sent their requests has finished its bookkeeping.
    Load load;
    load.channel = &ch;
    load.calls = 400;
    std::vector<bthread_t> tids(32);
    for (bthread_t& t : tids) ASSERT_EQ(0, bthread_start_background(&t, nullptr, call_loop, &load));
    for (bthread_t t : tids) bthread_join(t, nullptr);
    EXPECT_EQ(0, load.failures.load());
    EXPECT_EQ(0, PendingCallCount());
    SocketUniquePtr s;
    ASSERT_EQ(0, SocketMap::global().Get(SocketMapKey{server.listen_address(), "weft_std"}, &s));
    // Every call ended: none of them may still be kept on the connection.
    // (Writers finish their bookkeeping right after the write; give them a
    // moment, bounded: a KeepWrite fiber can be starved for a while.)
    for (int i = 0; i < 10000 * test::kTimeScale && s->written_id_count() != 0; ++i) usleep(1000);
    EXPECT_EQ(0u, s->written_id_count());
  }
  server.Stop();
  server.Join();
}

}  // namespace
}  // namespace weft::rpc
