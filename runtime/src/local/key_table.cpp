// bthread_key_*: a registry of versioned keys and per-fiber two-level
// tables. Reading a value is: the current fiber's table, the sub-table, the
// entry, and a check of both the entry's and the key's version (so a
// deleted key reads NULL at once).
#include "local/key_table.h"

#include <errno.h>
#include <limits.h>

#include <atomic>
#include <mutex>
#include <new>
#include <vector>

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

struct KeyInfo {
  // Odd while the key is alive. Written under g_registry_mu; read lock-free
  // by getspecific (relaxed is enough: a racing delete is not ordered with a
  // racing get by the contract).
  std::atomic<uint32_t> version{0};
  void (*dtor)(void*) = nullptr;  // guarded by g_registry_mu
};

KeyInfo g_keys[kMaxKeys];
std::mutex g_registry_mu;
std::vector<uint32_t>* g_free_keys = new std::vector<uint32_t>;  // guarded by mu
uint32_t g_next_key = 0;                                         // guarded by mu

struct Entry {
  uint32_t version = 0;
  void* data = nullptr;
};

struct SubTable {
  Entry entries[kSubSize];
};

struct PoolImpl {
  std::mutex mu;
  std::vector<KeyTable*> tables;  // guarded by mu
  bool destroyed = false;         // guarded by mu
};

}  // namespace

class KeyTable {
 public:
  ~KeyTable() {
    for (SubTable* s : subs_) delete s;
  }

  void* get(bthread_key_t key) const {
    if (key.index >= kMaxKeys) return nullptr;
    const SubTable* sub = subs_[key.index / kSubSize];
    if (sub == nullptr) return nullptr;
    const Entry& e = sub->entries[key.index % kSubSize];
    if (e.version != key.version) return nullptr;
    if (g_keys[key.index].version.load(std::memory_order_relaxed) != key.version) return nullptr;
    return e.data;
  }

  int set(bthread_key_t key, void* data) {
    SubTable*& sub = subs_[key.index / kSubSize];
    if (sub == nullptr) {
      sub = new (std::nothrow) SubTable;
      if (sub == nullptr) return ENOMEM;
    }
    Entry& e = sub->entries[key.index % kSubSize];
    e.version = key.version;
    e.data = data;
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
        if (sub == nullptr) continue;
        for (uint32_t i = 0; i < kSubSize; ++i) {
          Entry& e = sub->entries[i];
          if (e.data == nullptr) continue;
          void* data = e.data;
          e.data = nullptr;
          void (*dtor)(void*) = nullptr;
          {
            std::lock_guard<std::mutex> guard(g_registry_mu);
            const KeyInfo& info = g_keys[s * kSubSize + i];
            if (info.version.load(std::memory_order_relaxed) == e.version) dtor = info.dtor;
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
  SubTable* subs_[kSubCount] = {};
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

using weft::local::g_keys;
using weft::local::kMaxKeys;

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
  KeyInfo& info = g_keys[index];
  const uint32_t version = info.version.load(std::memory_order_relaxed) + 1;  // odd: alive
  info.dtor = dtor;
  info.version.store(version, std::memory_order_relaxed);
  key->index = index;
  key->version = version;
  return 0;
}

int bthread_key_delete(bthread_key_t key) {
  using namespace weft::local;
  if (key.index >= kMaxKeys) return EINVAL;
  std::lock_guard<std::mutex> guard(g_registry_mu);
  KeyInfo& info = g_keys[key.index];
  if (info.version.load(std::memory_order_relaxed) != key.version || (key.version & 1) == 0) {
    return EINVAL;
  }
  info.version.store(key.version + 1, std::memory_order_relaxed);  // even: deleted
  info.dtor = nullptr;
  g_free_keys->push_back(key.index);
  return 0;
}

int bthread_setspecific(bthread_key_t key, void* data) {
  using namespace weft::local;
  if (key.index >= kMaxKeys || (key.version & 1) == 0 ||
      g_keys[key.index].version.load(std::memory_order_relaxed) != key.version) {
    return EINVAL;
  }
  KeyTable* t = current_table(/*create=*/true);
  if (t == nullptr) return ENOMEM;
  return t->set(key, data);
}

void* bthread_getspecific(bthread_key_t key) {
  // Fast path: a fiber on a worker that already has its table. Reading the
  // thread-local directly is safe: nothing here can suspend.
  const weft::sched::TaskGroup* g = weft::sched::tls_current_group;
  if (g != nullptr && g->running_fiber()) {
    const weft::local::KeyTable* t = g->current_task()->keytable;
    if (t != nullptr) return t->get(key);
  }
  const weft::local::KeyTable* t = weft::local::current_table(/*create=*/false);
  return t == nullptr ? nullptr : t->get(key);
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
