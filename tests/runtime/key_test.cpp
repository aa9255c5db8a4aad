// Fiber-local storage: values per fiber and per pthread, destructor counts,
// versioned keys, and keytable pools.
#include <errno.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <weft/bthread.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "test_util.h"

namespace {

std::atomic<int> g_destroyed{0};
void count_dtor(void* p) {
  g_destroyed.fetch_add(1);
  delete static_cast<int*>(p);
}

TEST(KeyTest, ValuesArePerFiberAndDestroyedOnceAtTheEnd) {
  bthread_key_t key;
  ASSERT_EQ(0, bthread_key_create(&key, count_dtor));
  g_destroyed.store(0);
  const int n = 1000;
  struct Arg {
    bthread_key_t key;
    int index;
    std::atomic<int>* mismatches;
  };
  std::atomic<int> mismatches{0};
  std::vector<Arg> args(n);
  std::vector<bthread_t> tids(n);
  for (int i = 0; i < n; ++i) {
    args[i] = Arg{key, i, &mismatches};
    ASSERT_EQ(0, bthread_start_background(
                     &tids[i], nullptr,
                     [](void* a) -> void* {
                       auto* arg = static_cast<Arg*>(a);
                       if (bthread_getspecific(arg->key) != nullptr) arg->mismatches->fetch_add(1);
                       if (bthread_setspecific(arg->key, new int(arg->index)) != 0) {
                         arg->mismatches->fetch_add(1);
                       }
                       bthread_usleep(100);  // migrate, interleave with the others
                       auto* v = static_cast<int*>(bthread_getspecific(arg->key));
                       if (v == nullptr || *v != arg->index) arg->mismatches->fetch_add(1);
                       return nullptr;
                     },
                     &args[i]));
  }
  for (auto& t : tids) ASSERT_EQ(0, bthread_join(t, nullptr));
  EXPECT_EQ(0, mismatches.load());
  EXPECT_EQ(n, g_destroyed.load());
  ASSERT_EQ(0, bthread_key_delete(key));
}

TEST(KeyTest, PthreadsHaveTheirOwnValuesDestroyedAtThreadExit) {
  bthread_key_t key;
  ASSERT_EQ(0, bthread_key_create(&key, count_dtor));
  g_destroyed.store(0);
  std::thread t([&] {
    EXPECT_EQ(nullptr, bthread_getspecific(key));
    EXPECT_EQ(0, bthread_setspecific(key, new int(5)));
    EXPECT_EQ(5, *static_cast<int*>(bthread_getspecific(key)));
  });
  t.join();
  EXPECT_EQ(1, g_destroyed.load());
  EXPECT_EQ(nullptr, bthread_getspecific(key));  // this thread never set it
  ASSERT_EQ(0, bthread_key_delete(key));
}

TEST(KeyTest, ADeletedKeyReadsNullAndANewKeyNeverSeesOldValues) {
  bthread_key_t old_key;
  ASSERT_EQ(0, bthread_key_create(&old_key, nullptr));
  int value = 1;
  ASSERT_EQ(0, bthread_setspecific(old_key, &value));
  ASSERT_EQ(&value, bthread_getspecific(old_key));
  ASSERT_EQ(0, bthread_key_delete(old_key));
  EXPECT_EQ(nullptr, bthread_getspecific(old_key));
  EXPECT_EQ(EINVAL, bthread_setspecific(old_key, &value));
  EXPECT_EQ(EINVAL, bthread_key_delete(old_key));
  bthread_key_t new_key;
  ASSERT_EQ(0, bthread_key_create(&new_key, nullptr));
  EXPECT_EQ(old_key.index, new_key.index);  // the slot is reused...
  EXPECT_NE(old_key.version, new_key.version);
  EXPECT_EQ(nullptr, bthread_getspecific(new_key));  // ...but not the value
  ASSERT_EQ(0, bthread_key_delete(new_key));
  bthread_key_t bogus{5000, 1};
  EXPECT_EQ(EINVAL, bthread_setspecific(bogus, &value));
  EXPECT_EQ(nullptr, bthread_getspecific(bogus));
}

TEST(KeyTest, APoolHandsATableWithItsValuesToTheNextFiber) {
  bthread_keytable_pool_t pool;
  ASSERT_EQ(0, bthread_keytable_pool_init(&pool));
  bthread_key_t key;
  ASSERT_EQ(0, bthread_key_create(&key, count_dtor));
  g_destroyed.store(0);
  bthread_attr_t attr = BTHREAD_ATTR_NORMAL;
  attr.keytable_pool = &pool;
  struct Arg {
    bthread_key_t key;
    void* seen = nullptr;
    int* stored = nullptr;
  } first{key}, second{key};
  auto fn = [](void* a) -> void* {
    auto* arg = static_cast<Arg*>(a);
    arg->seen = bthread_getspecific(arg->key);
    if (arg->seen == nullptr) {
      arg->stored = new int(42);
      bthread_setspecific(arg->key, arg->stored);
    }
    return nullptr;
  };
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(&tid, &attr, fn, &first));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(nullptr, first.seen);
  ASSERT_NE(nullptr, first.stored);
  EXPECT_EQ(0, g_destroyed.load());  // kept in the pool, not destroyed
  ASSERT_EQ(0, bthread_start_background(&tid, &attr, fn, &second));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(first.stored, second.seen);
  ASSERT_EQ(0, bthread_keytable_pool_destroy(&pool));
  EXPECT_EQ(1, g_destroyed.load());  // destroying the pool runs the destructor
  ASSERT_EQ(0, bthread_key_delete(key));
}

TEST(KeyTest, DestructorsRunOnlyForLiveKeys) {
  bthread_key_t key;
  ASSERT_EQ(0, bthread_key_create(&key, count_dtor));
  g_destroyed.store(0);
  struct Arg {
    bthread_key_t key;
    std::atomic<int> phase{0};
    int* value = nullptr;
  } arg{key};
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(
                   &tid, nullptr,
                   [](void* a) -> void* {
                     auto* p = static_cast<Arg*>(a);
                     p->value = new int(1);
                     bthread_setspecific(p->key, p->value);
                     p->phase.store(1);
                     while (p->phase.load() != 2) bthread_usleep(100);
                     return nullptr;
                   },
                   &arg));
  ASSERT_TRUE(weft::test::wait_until([&] { return arg.phase.load() == 1; }));
  ASSERT_EQ(0, bthread_key_delete(key));
  arg.phase.store(2);
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(0, g_destroyed.load());  // deleted key: no destructor (as pthreads)
  delete arg.value;
}

// ---- destructors, as pthreads run them ----
//
// Up to PTHREAD_DESTRUCTOR_ITERATIONS rounds over the fiber's (or pthread's)
// own table: a value a destructor sets is destroyed in the next round, and
// other keys keep their values until their own destructor runs.

struct DtorKeys {
  bthread_key_t first;   // its destructor sets `second`
  bthread_key_t second;  // its destructor counts and frees
  std::atomic<int> second_destroyed{0};
};
DtorKeys* g_dtor_keys = nullptr;

void first_dtor_sets_second(void* p) {
  delete static_cast<int*>(p);
  EXPECT_EQ(0, bthread_setspecific(g_dtor_keys->second, new int(2)));
}
void second_dtor_counts(void* p) {
  delete static_cast<int*>(p);
  g_dtor_keys->second_destroyed.fetch_add(1);
}

class KeyDestructors : public ::testing::Test {
 protected:
  void SetUp() override {
    g_dtor_keys = &keys_;
    ASSERT_EQ(0, bthread_key_create(&keys_.first, first_dtor_sets_second));
    ASSERT_EQ(0, bthread_key_create(&keys_.second, second_dtor_counts));
  }
  void TearDown() override {
    EXPECT_EQ(0, bthread_key_delete(keys_.first));
    EXPECT_EQ(0, bthread_key_delete(keys_.second));
    g_dtor_keys = nullptr;
  }
  DtorKeys keys_;
};

void* set_first(void*) {
  bthread_setspecific(g_dtor_keys->first, new int(1));
  return nullptr;
}

TEST_F(KeyDestructors, SetspecificInsideDestructorIsDestroyedNextRound) {
  // Started one after another from a fiber, so the fibers reuse one another's
  // slots: a table left behind in a slot becomes unreachable when the slot
  // is reused, and LeakSanitizer sees it.
  constexpr int kFibers = 8;
  bthread_t parent;
  ASSERT_EQ(0, bthread_start_background(
                   &parent, nullptr,
                   [](void*) -> void* {
                     for (int i = 0; i < kFibers; ++i) {
                       bthread_t tid;
                       EXPECT_EQ(0, bthread_start_background(&tid, nullptr, set_first, nullptr));
                       EXPECT_EQ(0, bthread_join(tid, nullptr));
                     }
                     return nullptr;
                   },
                   nullptr));
  ASSERT_EQ(0, bthread_join(parent, nullptr));
  // Before the fix the value went into a fresh table nobody destroyed.
  EXPECT_EQ(kFibers, keys_.second_destroyed.load());
}

TEST_F(KeyDestructors, SetspecificInsideDestructorAtPthreadExitIsDestroyedNextRound) {
  std::thread t([] { set_first(nullptr); });
  t.join();
  EXPECT_EQ(1, keys_.second_destroyed.load());
}

// Destructors of two keys each record what the other key read.
struct Readers {
  bthread_key_t a, b;
  std::mutex mu;
  std::vector<std::pair<char, void*>> seen;  // (whose destructor, other's value)
};
Readers* g_readers = nullptr;

void reader_dtor_a(void*) {
  std::lock_guard<std::mutex> guard(g_readers->mu);
  g_readers->seen.emplace_back('a', bthread_getspecific(g_readers->b));
}
void reader_dtor_b(void*) {
  std::lock_guard<std::mutex> guard(g_readers->mu);
  g_readers->seen.emplace_back('b', bthread_getspecific(g_readers->a));
}

TEST_F(KeyDestructors, OtherKeysReadableInsideDestructor) {
  Readers r;
  g_readers = &r;
  ASSERT_EQ(0, bthread_key_create(&r.a, reader_dtor_a));
  ASSERT_EQ(0, bthread_key_create(&r.b, reader_dtor_b));
  static int va = 1, vb = 2;
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(
                   &tid, nullptr,
                   [](void*) -> void* {
                     bthread_setspecific(g_readers->a, &va);
                     bthread_setspecific(g_readers->b, &vb);
                     return nullptr;
                   },
                   nullptr));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  ASSERT_EQ(2u, r.seen.size());
  // Whichever runs first still sees the other's value; the second sees NULL
  // (its value was cleared before its destructor ran, as pthreads do).
  const char first = r.seen[0].first;
  EXPECT_EQ(first == 'a' ? static_cast<void*>(&vb) : static_cast<void*>(&va), r.seen[0].second);
  EXPECT_EQ(nullptr, r.seen[1].second);
  EXPECT_EQ(0, bthread_key_delete(r.a));
  EXPECT_EQ(0, bthread_key_delete(r.b));
  g_readers = nullptr;
}

std::atomic<int> g_rearms{0};
bthread_key_t g_rearm_key;
void rearm_forever(void* p) {
  g_rearms.fetch_add(1);
  EXPECT_EQ(0, bthread_setspecific(g_rearm_key, p));
}

TEST_F(KeyDestructors, AValueSetAgainEveryRoundStopsAfterPthreadDestructorIterations) {
  ASSERT_EQ(0, bthread_key_create(&g_rearm_key, rearm_forever));
  g_rearms.store(0);
  static int v = 0;
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(
                   &tid, nullptr,
                   [](void*) -> void* {
                     bthread_setspecific(g_rearm_key, &v);
                     return nullptr;
                   },
                   nullptr));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(PTHREAD_DESTRUCTOR_ITERATIONS, g_rearms.load());
  EXPECT_EQ(0, bthread_key_delete(g_rearm_key));
}

}  // namespace
