// bthread_key_*: a registry of versioned keys and per-fiber two-level
// tables. Reading a value is: the current fiber's table, the sub-table, the
// entry, and a check of both the entry's and the key's version (so a
// deleted key reads NULL at once).
//
// The hot paths (get, and set into an existing sub-table) are inlined into
// the C functions with no call, no hashing and no null check of the
// sub-table: every first-level slot points at a real sub-table or at the
// shared, never-written g_empty_sub, whose versions (0, even) match no live
// key.
#include "local/key_table.h"

#include <errno.h>
#include <limits.h>

#include <atomic>
#include <mutex>
#include <new>
#include <vector>

#include "base/compiler.h"
#include "sched/fiber_lifecycle.h"
#include "sched/task_group.h"
#include "sched/task_meta.h"
#include "weft/bthread.h"

namespace weft::local {
namespace {

constexpr uint32_t kSubSize = 32;
constexpr uint32_t kSubCount = 32;
constexpr uint32_t kMaxKeys = kSubSize * kSubCount;
// Destructors may set values again; like pthreads, give up after
// PTHREAD_DESTRUCTOR_ITERATIONS rounds (values still set then are left to
// their owners, as pthreads do).
constexpr int kDestructorRounds = PTHREAD_DESTRUCTOR_ITERATIONS;

// The registry. A key's version is odd while it is alive. Written under
// g_registry_mu; read lock-free by get/setspecific (relaxed is enough: a
// racing delete is not ordered with a racing get or set by the contract).
// Versions sit in their own array, 4 bytes apart, so the check is one
// scaled load.
std::atomic<uint32_t> g_key_versions[kMaxKeys];
void (*g_key_dtors[kMaxKeys])(void*);  // guarded by g_registry_mu
std::mutex g_registry_mu;
std::vector<uint32_t>* g_free_keys = new std::vector<uint32_t>;  // guarded by mu
uint32_t g_next_key = 0;                                         // guarded by mu

// Versions and values in two arrays, so each is one scaled load (an
// interleaved 16-byte entry costs a shift and an add more per access).
// versions[i] is the version of the key the value was stored under.
struct SubTable {
  uint32_t versions[kSubSize] = {};
  void* data[kSubSize] = {};
};

// Where every unused first-level slot points: never written.
SubTable g_empty_sub;

struct PoolImpl {
  std::mutex mu;
  std::vector<KeyTable*> tables;  // guarded by mu
  bool destroyed = false;         // guarded by mu
};

}  // namespace

class KeyTable {
 public:
  KeyTable() {
    for (SubTable*& s : subs_) s = &g_empty_sub;
  }
  ~KeyTable() {
    for (SubTable* s : subs_) {
      if (s != &g_empty_sub) delete s;
    }
  }

  // Any key, even a bogus one: NULL unless `key` is alive and a value was
  // stored under this very version.
  void* get(bthread_key_t key) const {
    if (WEFT_UNLIKELY(key.index >= kMaxKeys)) return nullptr;
    const SubTable* sub = subs_[key.index / kSubSize];
    const uint32_t i = key.index % kSubSize;
    // Both checks: the entry is of this key's lifetime, and the key was not
    // deleted since (a deleted key reads NULL at once).
    if (sub->versions[i] != key.version ||
        g_key_versions[key.index].load(std::memory_order_relaxed) != key.version) {
      return nullptr;
    }
    return sub->data[i];
  }

  // `key` was checked alive by the caller. False when the key's sub-table
  // is not allocated yet (see set_slow()).
  bool try_set(bthread_key_t key, void* data) {
    SubTable* sub = subs_[key.index / kSubSize];
    if (WEFT_UNLIKELY(sub == &g_empty_sub)) return false;
    const uint32_t i = key.index % kSubSize;
    sub->versions[i] = key.version;
    sub->data[i] = data;
    return true;
  }

  int set(bthread_key_t key, void* data) {
    SubTable*& sub = subs_[key.index / kSubSize];
    if (sub == &g_empty_sub) {
      SubTable* fresh = new (std::nothrow) SubTable;
      if (fresh == nullptr) return ENOMEM;
      sub = fresh;
    }
    (void)try_set(key, data);
    return 0;
  }

  // Runs destructors of live keys for non-null values, as pthreads do:
  // rounds over this same table, each value cleared just before its
  // destructor runs. The caller keeps the table installed as the current
  // one (fiber or pthread) meanwhile, so destructors read the values not yet
  // destroyed and values they set are destroyed in the next round.
  void destroy_values() {
    for (int round = 0; round < kDestructorRounds; ++round) {
      bool any = false;
      for (uint32_t s = 0; s < kSubCount; ++s) {
        SubTable* sub = subs_[s];
        if (sub == &g_empty_sub) continue;
        for (uint32_t i = 0; i < kSubSize; ++i) {
          if (sub->data[i] == nullptr) continue;
          void* data = sub->data[i];
          sub->data[i] = nullptr;
          void (*dtor)(void*) = nullptr;
          {
            std::lock_guard<std::mutex> guard(g_registry_mu);
            const uint32_t index = s * kSubSize + i;
            if (g_key_versions[index].load(std::memory_order_relaxed) == sub->versions[i]) {
              dtor = g_key_dtors[index];
            }
          }
          if (dtor != nullptr) {
            dtor(data);
            any = true;
          }
        }
      }
      if (!any) return;
    }
  }

 private:
  SubTable* subs_[kSubCount];  // each a real sub-table or &g_empty_sub
};

namespace {

PoolImpl* pool_impl(bthread_keytable_pool_t* pool) {
  return pool == nullptr ? nullptr : static_cast<PoolImpl*>(pool->impl);
}

KeyTable* take_from_pool(bthread_keytable_pool_t* pool) {
  PoolImpl* impl = pool_impl(pool);
  if (impl == nullptr) return nullptr;
  std::lock_guard<std::mutex> guard(impl->mu);
  if (impl->destroyed || impl->tables.empty()) return nullptr;
  KeyTable* t = impl->tables.back();
  impl->tables.pop_back();
  return t;
}

void destroy_table(KeyTable* t) {
  t->destroy_values();
  delete t;
}

// A pthread's own table. The pointer is a trivial thread-local (no init
// guard on the read path); the object that destroys the table (with
// destructors) at thread exit is touched only when the table is created.
thread_local KeyTable* tls_pthread_table = nullptr;

struct PthreadTableReaper {
  ~PthreadTableReaper() {
    // Still installed while destructors run (see destroy_values()).
    if (tls_pthread_table != nullptr) destroy_table(tls_pthread_table);
    tls_pthread_table = nullptr;
  }
};

// The table of the caller: its fiber's, or its pthread's. With create, makes
// one (from the fiber's pool when it has one).
KeyTable* current_table(bool create) {
  sched::TaskMeta* m = sched::current_fiber();
  KeyTable** slot = m != nullptr ? &m->keytable : &tls_pthread_table;
  if (*slot == nullptr && m != nullptr && m->attr.keytable_pool != nullptr) {
    // Lazily, so fibers that never touch keys never touch the pool.
    *slot = take_from_pool(m->attr.keytable_pool);
  }
  if (*slot == nullptr && create) {
    *slot = new (std::nothrow) KeyTable;
    if (m == nullptr) {
      static thread_local PthreadTableReaper reaper;
      (void)reaper;
    }
  }
  return *slot;
}

}  // namespace

void on_fiber_exit(sched::TaskMeta* m) {
  KeyTable* t = m->keytable;
  if (t == nullptr) return;
  PoolImpl* impl = pool_impl(m->attr.keytable_pool);
  if (impl != nullptr) {
    std::lock_guard<std::mutex> guard(impl->mu);
    if (!impl->destroyed) {
      m->keytable = nullptr;
      impl->tables.push_back(t);
      return;
    }
  }
  // The table stays the fiber's while its destructors run (on the fiber's
  // own stack, so nothing else reads m->keytable meanwhile): a destructor's
  // getspecific sees the values not destroyed yet, and its setspecific lands
  // in this table, for the next round, instead of in a new table nobody
  // would free.
  destroy_table(t);
  m->keytable = nullptr;
}

}  // namespace weft::local

using weft::local::g_key_versions;
using weft::local::kMaxKeys;

namespace weft::local {
namespace {

// The running fiber's table, read straight from the worker's thread-local
// (nothing here can suspend, so the TLS address cannot go stale), or
// nullptr: not on a worker, or the fiber has no table yet. A worker's main
// context has a TaskMeta too (cur_ == &main_meta_) whose keytable is always
// null: current_table() gives the main context the pthread's table
// (tls_pthread_table), never main_meta_.keytable. So no running_fiber()
// check is needed here.
inline KeyTable* running_fiber_table() {
  // tls_current_group is WEFT_CONSTINIT: one %fs-relative load, no init test.
  const sched::TaskGroup* g = sched::tls_current_group;
  return WEFT_LIKELY(g != nullptr) ? g->current_task()->keytable : nullptr;
}

// Everything but the fast paths: pthreads, fibers without a table (or whose
// table comes from a pool), a missing sub-table.
WEFT_NOINLINE void* get_slow(bthread_key_t key) {
  const KeyTable* t = current_table(/*create=*/false);
  return t == nullptr ? nullptr : t->get(key);
}

WEFT_NOINLINE int set_slow(bthread_key_t key, void* data) {
  KeyTable* t = current_table(/*create=*/true);
  if (t == nullptr) return ENOMEM;
  return t->set(key, data);
}

}  // namespace
}  // namespace weft::local

extern "C" {

int bthread_key_create(bthread_key_t* key, void (*dtor)(void*)) {
  using namespace weft::local;
  std::lock_guard<std::mutex> guard(g_registry_mu);
  uint32_t index;
  if (!g_free_keys->empty()) {
    index = g_free_keys->back();
    g_free_keys->pop_back();
  } else if (g_next_key < kMaxKeys) {
    index = g_next_key++;
  } else {
    return EAGAIN;
  }
  const uint32_t version = g_key_versions[index].load(std::memory_order_relaxed) + 1;  // odd
  g_key_dtors[index] = dtor;
  g_key_versions[index].store(version, std::memory_order_relaxed);
  key->index = index;
  key->version = version;
  return 0;
}

int bthread_key_delete(bthread_key_t key) {
  using namespace weft::local;
  if (key.index >= kMaxKeys) return EINVAL;
  std::lock_guard<std::mutex> guard(g_registry_mu);
  if (g_key_versions[key.index].load(std::memory_order_relaxed) != key.version ||
      (key.version & 1) == 0) {
    return EINVAL;
  }
  g_key_versions[key.index].store(key.version + 1, std::memory_order_relaxed);  // even: deleted
  g_key_dtors[key.index] = nullptr;
  g_free_keys->push_back(key.index);
  return 0;
}

int bthread_setspecific(bthread_key_t key, void* data) {
  using namespace weft::local;
  // Always checked against the registry, even when the entry already holds
  // this version: a key deleted since must still answer EINVAL.
  if (WEFT_UNLIKELY(key.index >= kMaxKeys || (key.version & 1) == 0 ||
                    g_key_versions[key.index].load(std::memory_order_relaxed) != key.version)) {
    return EINVAL;
  }
  KeyTable* t = running_fiber_table();
  if (WEFT_LIKELY(t != nullptr) && WEFT_LIKELY(t->try_set(key, data))) return 0;
  return set_slow(key, data);
}

void* bthread_getspecific(bthread_key_t key) {
  using namespace weft::local;
  const KeyTable* t = running_fiber_table();
  if (WEFT_LIKELY(t != nullptr)) return t->get(key);
  return get_slow(key);
}

int bthread_keytable_pool_init(bthread_keytable_pool_t* pool) {
  if (pool == nullptr) return EINVAL;
  pool->impl = new (std::nothrow) weft::local::PoolImpl;
  return pool->impl == nullptr ? ENOMEM : 0;
}

int bthread_keytable_pool_destroy(bthread_keytable_pool_t* pool) {
  using namespace weft::local;
  PoolImpl* impl = pool_impl(pool);
  if (impl == nullptr) return EINVAL;
  std::vector<KeyTable*> tables;
  {
    std::lock_guard<std::mutex> guard(impl->mu);
    impl->destroyed = true;
    tables.swap(impl->tables);
  }
  for (KeyTable* t : tables) destroy_table(t);
  // As in bthread, no fiber started with this pool may still be running:
  // they read pool->impl when they end.
  pool->impl = nullptr;
  delete impl;
  return 0;
}

}  // extern "C"
