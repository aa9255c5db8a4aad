// Thread-locals reached across a suspension point: a fiber may resume on
// another pthread, so every per-thread cache must be found afresh after a
// wait, and must still work while its thread is exiting.
#include <gtest/gtest.h>
#include <pthread.h>
#include <weft/bthread.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "base/slot_pool.h"
#include "test_util.h"

namespace {

struct Item {
  int payload = 0;
};
using ItemPool = weft::base::SlotPool<Item>;

struct MigrationResult {
  bool migrated = false;
  uint32_t freed = ItemPool::kInvalid;
  uint32_t reallocated = ItemPool::kInvalid;
};

// Reads the pool on whatever pthread runs it now: nothing can be cached
// from the caller's frame.
WEFT_NOINLINE uint32_t alloc_on_this_thread() {
  asm volatile("" ::: "memory");
  return ItemPool::instance().alloc();
}

// Holds its worker (without yielding) until released, so a fiber that
// wakes meanwhile runs on another worker.
void* hold_the_worker(void* arg) {
  auto* release = static_cast<std::atomic<bool>*>(arg);
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  while (!release->load() && std::chrono::steady_clock::now() < end) weft::base::cpu_relax();
  return nullptr;
}

// Suspends until the fiber runs on a pthread other than `before` (bounded).
WEFT_NOINLINE bool move_off(pthread_t before) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    std::atomic<bool> release{false};
    bthread_t holder;
    if (bthread_start_background(&holder, nullptr, hold_the_worker, &release) != 0) return false;
    bthread_usleep(1000);
    const bool moved = !pthread_equal(before, pthread_self());
    release.store(true);
    bthread_join(holder, nullptr);
    if (moved && !pthread_equal(before, pthread_self())) return true;
  }
  return false;
}

// The pool calls are inlined into this function on both sides of the
// suspension. A compiler may compute the thread-local cache's address once
// (before it) and reuse it after: the free would then land in the cache of
// the pthread the fiber left.
void* free_after_migrating(void* arg) {
  auto* out = static_cast<MigrationResult*>(arg);
  ItemPool& pool = ItemPool::instance();
  const uint32_t idx = pool.alloc();
  out->migrated = move_off(pthread_self());
  pool.free(idx);
  out->freed = idx;
  // The cache is LIFO: the slot just freed comes back first on this thread.
  out->reallocated = alloc_on_this_thread();
  return nullptr;
}

TEST(TlsMigrationTest, SlotPoolFreeAfterMigratingGoesToTheResumingThreadsCache) {
  if (bthread_getconcurrency() < 2) GTEST_SKIP() << "needs two workers to migrate between";
  MigrationResult r;
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, nullptr, free_after_migrating, &r));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  if (!r.migrated) GTEST_SKIP() << "the fiber never resumed on another worker";
  EXPECT_EQ(r.freed, r.reallocated)
      << "the free went to the cache of the pthread the fiber ran on before sleeping";
}

// A thread_local made before the runtime's per-thread caches, so it is
// destroyed after them; its destructor starts and joins a fiber, as an
// exit path (a logger flushing, a connection pool closing) may.
struct EndsFibersAtThreadExit {
  bool armed = false;
  std::atomic<int>* ran = nullptr;
  ~EndsFibersAtThreadExit() {
    if (!armed) return;
    for (int i = 0; i < 4; ++i) {
      bthread_t tid;
      if (bthread_start_background(&tid, &BTHREAD_ATTR_SMALL, [](void* a) -> void* {
            static_cast<std::atomic<int>*>(a)->fetch_add(1);
            return nullptr;
          }, ran) == 0) {
        bthread_join(tid, nullptr);
      }
    }
  }
};
thread_local EndsFibersAtThreadExit tls_exit_user;

TEST(TlsMigrationTest, StackCacheStillWorksAfterTheThreadsThreadLocalsAreDestroyed) {
  std::atomic<int> ran{0};
  std::thread t([&] {
    tls_exit_user.armed = true;  // constructed first, destroyed last
    tls_exit_user.ran = &ran;
    // Fills this thread's stack and slot caches.
    bthread_t tid;
    ASSERT_EQ(0, bthread_start_background(&tid, &BTHREAD_ATTR_SMALL, [](void*) -> void* {
      return nullptr;
    }, nullptr));
    ASSERT_EQ(0, bthread_join(tid, nullptr));
  });
  t.join();
  // Under ASan, a cache used after its destructor is a heap-use-after-free.
  EXPECT_EQ(4, ran.load());
}

}  // namespace
