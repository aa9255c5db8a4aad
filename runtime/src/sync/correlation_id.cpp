// bthread_id_*: versioned ids on type-stable slots. Each slot has a small
// spinlock-protected state and a sequence butex that moves on every unlock
// and destroy; lockers and joiners wait for it to move and look again.
#include <errno.h>

#include <climits>
#include <vector>

#include "base/slot_pool.h"
#include "base/spinlock.h"
#include "sync/sync_util.h"
#include "weft/bthread.h"

namespace weft::sync {
namespace {

struct IdSlot {
  base::SpinLock lock;
  uint32_t version = 0;  // guarded by lock; odd while the id is alive
  bool locked = false;   // guarded by lock
  void* data = nullptr;
  int (*on_error)(bthread_id_t, void*, int) = nullptr;
  std::vector<int> pending;       // guarded by lock: errors raised while locked
  wait::Butex* seq = nullptr;     // bumped (under lock) on unlock and destroy
  uint32_t slot = 0;
};

using IdPool = base::SlotPool<IdSlot>;

uint32_t slot_of(bthread_id_t id) { return static_cast<uint32_t>(id.value); }
uint32_t version_of(bthread_id_t id) { return static_cast<uint32_t>(id.value >> 32); }

IdSlot* find(bthread_id_t id) {
  const uint32_t slot = slot_of(id);
  if (version_of(id) == 0 || slot >= IdPool::instance().allocated()) return nullptr;
  IdSlot* s = IdPool::instance().at(slot);
  return s != nullptr && s->seq != nullptr ? s : nullptr;
}

int default_on_error(bthread_id_t id, void*, int) { return bthread_id_unlock_and_destroy(id); }

// The slot of a live id, returned with its lock held; nullptr (and *err set,
// nothing held) when the id was destroyed or never existed, or when
// `must_be_locked` and the id is not locked.
IdSlot* lock_live(bthread_id_t id, bool must_be_locked, int* err) {
  IdSlot* s = find(id);
  if (s == nullptr) {
    *err = EINVAL;
    return nullptr;
  }
  s->lock.lock();
  if (s->version != version_of(id)) {
    s->lock.unlock();
    *err = EINVAL;
    return nullptr;
  }
  if (must_be_locked && !s->locked) {
    s->lock.unlock();
    *err = EPERM;
    return nullptr;
  }
  return s;
}

// Bumps the sequence; the caller holds s->lock and wakes after releasing it.
void bump(IdSlot* s) { s->seq->value.fetch_add(1, std::memory_order_release); }

// Waits for the sequence to move from `seen`. Interrupts are kept for the
// fiber's next blocking call: these waits are not interruptible.
void wait_for_change(IdSlot* s, int seen) {
  if (wait::butex_wait_until(s->seq, seen, base::kNoDeadline) != 0 && errno == EINTR) {
    rearm_interrupt();
  }
}

}  // namespace
}  // namespace weft::sync

using weft::sync::IdSlot;

extern "C" {

int bthread_id_create(bthread_id_t* id, void* data,
                      int (*on_error)(bthread_id_t, void*, int)) {
  using namespace weft::sync;
  const uint32_t slot = IdPool::instance().alloc();
  if (slot == IdPool::kInvalid) return ENOMEM;
  IdSlot* s = IdPool::instance().at(slot);
  if (s->seq == nullptr) {
    s->seq = weft::wait::butex_alloc();
    if (s->seq == nullptr) {
      IdPool::instance().free(slot);
      return ENOMEM;
    }
    s->slot = slot;
  }
  s->lock.lock();
  s->version += 1;  // odd: alive
  s->locked = false;
  s->data = data;
  s->on_error = on_error != nullptr ? on_error : default_on_error;
  s->pending.clear();
  id->value = (static_cast<uint64_t>(s->version) << 32) | slot;
  s->lock.unlock();
  return 0;
}

int bthread_id_lock(bthread_id_t id, void** pdata) {
  using namespace weft::sync;
  IdSlot* s = find(id);
  if (s == nullptr) return EINVAL;
  for (;;) {
    s->lock.lock();
    if (s->version != version_of(id)) {
      s->lock.unlock();
      return EINVAL;
    }
    if (!s->locked) {
      s->locked = true;
      if (pdata != nullptr) *pdata = s->data;
      s->lock.unlock();
      return 0;
    }
    const int seen = s->seq->value.load(std::memory_order_relaxed);
    s->lock.unlock();
    wait_for_change(s, seen);
  }
}

int bthread_id_unlock(bthread_id_t id) {
  using namespace weft::sync;
  int err = 0;
  IdSlot* s = lock_live(id, /*must_be_locked=*/true, &err);
  if (s == nullptr) return err;
  if (!s->pending.empty()) {
    // Deliver the oldest queued error; the id stays locked for the handler.
    const int code = s->pending.front();
    s->pending.erase(s->pending.begin());
    void* data = s->data;
    auto handler = s->on_error;
    s->lock.unlock();
    handler(id, data, code);
    return 0;
  }
  s->locked = false;
  bump(s);
  s->lock.unlock();
  weft::wait::butex_wake_some(s->seq, INT_MAX, 0);
  return 0;
}

int bthread_id_unlock_and_destroy(bthread_id_t id) {
  using namespace weft::sync;
  int err = 0;
  IdSlot* s = lock_live(id, /*must_be_locked=*/true, &err);
  if (s == nullptr) return err;
  s->version += 1;  // even: destroyed; the id never matches again
  s->locked = false;
  s->pending.clear();
  bump(s);
  s->lock.unlock();
  weft::wait::butex_wake_some(s->seq, INT_MAX, 0);
  IdPool::instance().free(s->slot);
  return 0;
}

int bthread_id_error(bthread_id_t id, int error_code) {
  using namespace weft::sync;
  int err = 0;
  IdSlot* s = lock_live(id, /*must_be_locked=*/false, &err);
  if (s == nullptr) return err;
  if (s->locked) {
    s->pending.push_back(error_code);
    s->lock.unlock();
    return 0;
  }
  s->locked = true;
  void* data = s->data;
  auto handler = s->on_error;
  s->lock.unlock();
  handler(id, data, error_code);
  return 0;
}

int bthread_id_join(bthread_id_t id) {
  using namespace weft::sync;
  IdSlot* s = find(id);
  if (s == nullptr) return 0;
  for (;;) {
    s->lock.lock();
    if (s->version != version_of(id)) {
      s->lock.unlock();
      return 0;
    }
    const int seen = s->seq->value.load(std::memory_order_relaxed);
    s->lock.unlock();
    wait_for_change(s, seen);
  }
}

}  // extern "C"
