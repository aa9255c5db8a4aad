// IOBuf across threads and fibers: blocks outliving the thread that made
// them, buffers handed from producers to a consumer, fibers appending across
// yields.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft/bthread.h>
#include <weft/net/iobuf.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../runtime/test_util.h"
#include "iobuf_test_util.h"

namespace {

using weft::IOBuf;
using weft::test::kScale;
using weft::test::pattern;

TEST(IOBufTest, ThreadExitFreesItsBlocksButNotSharedOnes) {
  IOBuf::release_thread_cache();
  const int64_t base = IOBuf::block_count();
  std::thread([] {
    IOBuf a;
    a.append(pattern(100000));  // fills the cache when released
    a.clear();
    a.append("x", 1);  // and leaves a current block
  }).join();
  EXPECT_EQ(base, IOBuf::block_count());
  // Blocks still referenced outlive the thread that filled them.
  IOBuf got;
  const std::string s = pattern(10000, 15);
  std::thread([&] { got.append(s); }).join();
  EXPECT_TRUE(got.equals(s));
  EXPECT_EQ(base + 2, IOBuf::block_count());
  got.clear();  // the last holder is this thread now
  IOBuf::release_thread_cache();
  EXPECT_EQ(base, IOBuf::block_count());
}

// Producers build messages (some sharing blocks with buffers they keep and
// drop later) and hand them to a consumer that checks, re-cuts and drops
// them, so counts fall to zero on either side and blocks migrate between
// thread caches.
TEST(IOBufStressTest, ProducersHandBuffersToAConsumer) {
  IOBuf::release_thread_cache();
  const int64_t base = IOBuf::block_count();
  constexpr int kProducers = 4;
  const int per = 20000 / kScale;
  struct Msg {
    IOBuf buf;
    std::string expect;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Msg> queue;
  int done = 0;
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      std::mt19937 rng(p);
      IOBuf keep;  // shares blocks with sent messages
      for (int i = 0; i < per; ++i) {
        Msg m;
        const int parts = static_cast<int>(rng() % 4) + 1;
        for (int k = 0; k < parts; ++k) {
          const std::string s = pattern(rng() % (k == 0 ? 9000 : 200) + 1, rng());
          EXPECT_EQ(0, m.buf.append(s));
          m.expect += s;
        }
        if (rng() % 3 == 0 && !keep.empty()) {
          m.buf.append(keep);  // shared with what this thread still holds
          m.expect += keep.to_string();
        }
        keep = m.buf;
        keep.pop_front(rng() % (keep.size() + 1));
        if (rng() % 5 == 0) keep.clear();
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return queue.size() < 64; });  // bounds the memory in flight
        queue.push_back(std::move(m));
        cv.notify_all();
      }
      std::lock_guard<std::mutex> lock(mu);
      ++done;
      cv.notify_all();
    });
  }
  long checked = 0;
  std::thread consumer([&] {
    IOBuf agg;
    std::string model;
    std::string cut;
    for (;;) {
      Msg m;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return !queue.empty() || done == kProducers; });
        if (queue.empty()) break;
        m = std::move(queue.front());
        queue.pop_front();
        cv.notify_all();
      }
      ASSERT_TRUE(m.buf.equals(m.expect));
      ++checked;
      agg.append(std::move(m.buf));
      model += m.expect;
      ASSERT_EQ(0, agg.append("|", 1));
      model += '|';
      if (agg.size() > 50000) {
        IOBuf front;
        const size_t k = agg.cutn(&front, 30000);
        cut.clear();
        front.cutn(&cut, k);
        ASSERT_EQ(model.substr(0, k), cut);
        model.erase(0, k);
      }
    }
    ASSERT_TRUE(agg.equals(model));
  });
  for (auto& t : producers) t.join();
  consumer.join();
  EXPECT_EQ(static_cast<long>(kProducers) * per, checked);
  IOBuf::release_thread_cache();
  EXPECT_EQ(base, IOBuf::block_count());
}

// Fibers move between workers between calls; each call uses the thread it
// runs on. Contents must come out right whichever blocks they landed in.
TEST(IOBufFiberTest, FibersAppendAcrossYields) {
  struct Arg {
    int id = 0;
    bool ok = false;
  };
  auto body = [](void* a) -> void* {
    auto* arg = static_cast<Arg*>(a);
    IOBuf b;
    std::string model;
    for (int k = 0; k < 2000 / kScale; ++k) {
      const std::string s = pattern(k % 50 + 1, arg->id * 100000 + k);
      if (b.append(s) != 0) return nullptr;
      model += s;
      if (k % 3 == 0) bthread_yield();
      if (k % 100 == 99) model.erase(0, b.pop_front(1000));
    }
    arg->ok = b.equals(model);
    return nullptr;
  };
  Arg args[8];
  bthread_t tids[8];
  for (int i = 0; i < 8; ++i) {
    args[i].id = i;
    ASSERT_EQ(0, bthread_start_background(&tids[i], nullptr, body, &args[i]));
  }
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(0, bthread_join(tids[i], nullptr));
    EXPECT_TRUE(args[i].ok) << i;
  }
}

}  // namespace
