// Correlation ids: locking, queued error delivery, join, destroyed ids.
#include <errno.h>
#include <gtest/gtest.h>
#include <weft/bthread.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

struct Record {
  std::mutex mu;
  std::vector<int> errors;
  bool destroy_on_error = false;
};

int record_error(bthread_id_t id, void* data, int code) {
  auto* r = static_cast<Record*>(data);
  bool destroy;
  {
    std::lock_guard<std::mutex> guard(r->mu);
    r->errors.push_back(code);
    destroy = r->destroy_on_error;
  }
  return destroy ? bthread_id_unlock_and_destroy(id) : bthread_id_unlock(id);
}

TEST(IdTest, LockUnlockAndData) {
  Record r;
  bthread_id_t id;
  ASSERT_EQ(0, bthread_id_create(&id, &r, record_error));
  void* data = nullptr;
  ASSERT_EQ(0, bthread_id_lock(id, &data));
  EXPECT_EQ(&r, data);
  EXPECT_EQ(0, bthread_id_unlock(id));
  EXPECT_EQ(EPERM, bthread_id_unlock(id));
  ASSERT_EQ(0, bthread_id_lock(id, nullptr));
  EXPECT_EQ(0, bthread_id_unlock_and_destroy(id));
  EXPECT_EQ(EINVAL, bthread_id_lock(id, nullptr));
  EXPECT_EQ(EINVAL, bthread_id_error(id, 1));
  EXPECT_EQ(EINVAL, bthread_id_unlock(id));
  EXPECT_EQ(0, bthread_id_join(id));  // destroyed: at once
  bthread_id_t bogus = INVALID_BTHREAD_ID;
  EXPECT_EQ(EINVAL, bthread_id_lock(bogus, nullptr));
}

TEST(IdTest, ErrorsWhileLockedAreQueuedAndDeliveredOnUnlockInOrder) {
  Record r;
  bthread_id_t id;
  ASSERT_EQ(0, bthread_id_create(&id, &r, record_error));
  ASSERT_EQ(0, bthread_id_error(id, 7));  // unlocked: delivered at once
  {
    std::lock_guard<std::mutex> guard(r.mu);
    ASSERT_EQ(std::vector<int>({7}), r.errors);
  }
  ASSERT_EQ(0, bthread_id_lock(id, nullptr));
  ASSERT_EQ(0, bthread_id_error(id, 8));
  ASSERT_EQ(0, bthread_id_error(id, 9));
  {
    std::lock_guard<std::mutex> guard(r.mu);
    EXPECT_EQ(1u, r.errors.size());  // queued, not delivered
  }
  ASSERT_EQ(0, bthread_id_unlock(id));  // delivers 8, whose handler unlocks and delivers 9
  {
    std::lock_guard<std::mutex> guard(r.mu);
    EXPECT_EQ(std::vector<int>({7, 8, 9}), r.errors);
  }
  ASSERT_EQ(0, bthread_id_lock(id, nullptr));
  ASSERT_EQ(0, bthread_id_unlock_and_destroy(id));
}

TEST(IdTest, JoinWaitsForDestroyAndWaitingLockersGetEinval) {
  Record r;
  r.destroy_on_error = true;
  bthread_id_t id;
  ASSERT_EQ(0, bthread_id_create(&id, &r, record_error));
  ASSERT_EQ(0, bthread_id_lock(id, nullptr));
  struct Arg {
    bthread_id_t id;
    std::atomic<int> joined{0};
    std::atomic<int> lock_rc{-1};
  } arg{id};
  bthread_t joiner, locker;
  ASSERT_EQ(0, bthread_start_background(
                   &joiner, nullptr,
                   [](void* a) -> void* {
                     auto* p = static_cast<Arg*>(a);
                     bthread_id_join(p->id);
                     p->joined.store(1);
                     return nullptr;
                   },
                   &arg));
  ASSERT_EQ(0, bthread_start_background(
                   &locker, nullptr,
                   [](void* a) -> void* {
                     auto* p = static_cast<Arg*>(a);
                     p->lock_rc.store(bthread_id_lock(p->id, nullptr));
                     return nullptr;
                   },
                   &arg));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(0, arg.joined.load());
  EXPECT_EQ(-1, arg.lock_rc.load());
  ASSERT_EQ(0, bthread_id_error(id, 5));  // queued: we hold the lock
  ASSERT_EQ(0, bthread_id_unlock(id));    // delivers 5: the handler destroys
  ASSERT_EQ(0, bthread_join(joiner, nullptr));
  ASSERT_EQ(0, bthread_join(locker, nullptr));
  EXPECT_EQ(1, arg.joined.load());
  // The locker either got the id before the error was delivered (0, and the
  // error waited for it) or found it destroyed (EINVAL).
  const int rc = arg.lock_rc.load();
  EXPECT_TRUE(rc == EINVAL || rc == 0) << rc;
  if (rc == 0) bthread_id_unlock_and_destroy(id);
  std::lock_guard<std::mutex> guard(r.mu);
  EXPECT_EQ(std::vector<int>({5}), r.errors);
}

TEST(IdTest, LockIsMutuallyExclusiveAcrossFibersAndPthreads) {
  bthread_id_t id;
  ASSERT_EQ(0, bthread_id_create(&id, nullptr, nullptr));
  const int per = 20000 / weft::test::kScale;
  struct Arg {
    bthread_id_t id;
    int per;
    long counter = 0;
    std::atomic<int> inside{0};
    std::atomic<int> violations{0};
  } arg{id, per};
  auto body = [](void* a) -> void* {
    auto* p = static_cast<Arg*>(a);
    for (int i = 0; i < p->per; ++i) {
      if (bthread_id_lock(p->id, nullptr) != 0) return reinterpret_cast<void*>(1);
      if (p->inside.fetch_add(1) != 0) p->violations.fetch_add(1);
      ++p->counter;
      p->inside.fetch_sub(1);
      bthread_id_unlock(p->id);
    }
    return nullptr;
  };
  std::vector<bthread_t> tids(6);
  for (auto& t : tids) ASSERT_EQ(0, bthread_start_background(&t, nullptr, body, &arg));
  std::thread t1([&] { body(&arg); });
  std::thread t2([&] { body(&arg); });
  for (auto& t : tids) ASSERT_EQ(0, bthread_join(t, nullptr));
  t1.join();
  t2.join();
  EXPECT_EQ(0, arg.violations.load());
  EXPECT_EQ(8L * per, arg.counter);
  // A NULL on_error destroys the id on the first error.
  ASSERT_EQ(0, bthread_id_error(id, 1));
  EXPECT_EQ(EINVAL, bthread_id_lock(id, nullptr));
}

}  // namespace
