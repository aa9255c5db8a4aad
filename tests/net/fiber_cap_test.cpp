// --weft_max_fibers bounds the user's fibers, not the net layer's own: the
// event dispatcher, started lazily on the first socket, still starts when
// the user's fibers have reached the cap (it used to be refused, and the
// net layer aborted the process). Each case runs in a forked child, since
// the dispatcher starts once per process and this program's own process
// never starts it.
#include <gflags/gflags.h>
#include <gtest/gtest.h>

#include <atomic>

#include "../runtime/test_util.h"
#include "net_test_util.h"
#include "weft/bthread.h"
#include "weft/butex.h"
#include "weft/net/acceptor.h"
#include "weft/net/endpoint.h"

DECLARE_int64(weft_max_fibers);

namespace {

using weft::test::in_child;  // -1 when the child did not exit: the old abort

void* wait_on_butex(void* arg) {
  auto* word = static_cast<std::atomic<int>*>(arg);
  while (word->load() == 0) weft::butex_wait(word, 0, nullptr);
  return nullptr;
}

TEST(FiberCap, TheDispatcherStartsWhenUserFibersFillTheCap) {
  EXPECT_EQ(in_child([] {
              constexpr int kCap = 4;
              FLAGS_weft_max_fibers = kCap;
              void* butex = weft::butex_create();
              auto* word = static_cast<std::atomic<int>*>(butex);
              bthread_t tids[kCap];
              int started = 0;
              while (started < kCap &&
                     bthread_start_background(&tids[started], nullptr, wait_on_butex, word) == 0) {
                ++started;
              }
              bthread_t extra;
              if (bthread_start_background(&extra, nullptr, wait_on_butex, word) != EAGAIN) {
                return 2;  // the cap is not in force: the case proves nothing
              }
              // The first socket with a consumer starts the dispatcher.
              weft::Acceptor acceptor(weft::test::EchoOnMessages);
              const int fd = weft::tcp_listen(weft::EndPoint::loopback(0));
              if (fd < 0) return 3;
              if (acceptor.StartAccept(fd, 0) != 0) return 1;
              word->store(1);
              weft::butex_wake_all(butex);
              for (int i = 0; i < started; ++i) bthread_join(tids[i], nullptr);
              acceptor.StopAccept();
              return 0;
            }),
            0);
}

}  // namespace
