// SlotPool<T>: type-stable slots addressed by 32-bit indices.
//
// Objects are constructed once, in chunks, and never destroyed or unmapped,
// so a pointer or index obtained for one use stays safe to read after the
// object is freed and reused: callers pair an index with a version stored in
// the object to form ABA-free ids (fiber ids, timer ids). Freed indices go to
// a per-thread cache first and move to a shared FIFO list in batches, so
// alloc and free usually touch no shared cache line, and an index that
// reaches the shared list is reused as late as possible (long id reuse
// distance) but always eventually.
#ifndef WEFT_BASE_SLOT_POOL_H_
#define WEFT_BASE_SLOT_POOL_H_

#include <stdint.h>

#include <atomic>
#include <deque>
#include <mutex>
#include <new>
#include <vector>

#include "base/compiler.h"

namespace weft::base {

template <typename T, uint32_t kChunkBits = 8, uint32_t kMaxChunks = 65536>
class SlotPool {
 public:
  static constexpr uint32_t kInvalid = UINT32_MAX;
  static constexpr uint32_t kChunkSize = 1u << kChunkBits;
  static constexpr uint64_t kCapacity = uint64_t{kChunkSize} * kMaxChunks;

  // The process-wide pool for T. Leaked on purpose: threads that exit after
  // main() returns still flush their caches into it.
  static SlotPool& instance() {
    static SlotPool* pool = new SlotPool;
    return *pool;
  }

  // Returns a free index, or kInvalid when the pool is at capacity or out of
  // memory. Any thread.
  uint32_t alloc() {
    if (WEFT_UNLIKELY(tls_cache_gone())) return alloc_without_cache();
    LocalCache& cache = local_cache();
    if (cache.items.empty() && !refill(&cache)) return kInvalid;
    const uint32_t idx = cache.items.back();
    cache.items.pop_back();
    return idx;
  }

  // Returns `idx` for reuse. Any thread, and a fiber just resumed from a
  // wait (the cache is found afresh on each call).
  void free(uint32_t idx) {
    if (WEFT_UNLIKELY(tls_cache_gone())) {
      // This thread is exiting (e.g. an atexit handler joining a fiber after
      // the main thread's thread_locals were destroyed).
      std::lock_guard<std::mutex> guard(mu_);
      global_.push_back(idx);
      return;
    }
    LocalCache& cache = local_cache();
    cache.items.push_back(idx);
    if (cache.items.size() >= kLocalMax) {
      std::lock_guard<std::mutex> guard(mu_);
      // Give back the oldest half so the hottest stay local.
      global_.insert(global_.end(), cache.items.begin(), cache.items.begin() + kLocalMax / 2);
      cache.items.erase(cache.items.begin(), cache.items.begin() + kLocalMax / 2);
    }
  }

  // The object at `idx`, or nullptr if `idx` was never handed out. Any
  // thread; the acquire load pairs with the release store that publishes a
  // new chunk in refill().
  T* at(uint32_t idx) const {
    if (idx >= kCapacity) return nullptr;
    T* chunk = chunks_[idx >> kChunkBits].load(std::memory_order_acquire);
    if (chunk == nullptr) return nullptr;
    return &chunk[idx & (kChunkSize - 1)];
  }

  // How many indices were ever handed out (a bound on valid indices).
  uint32_t allocated() const { return next_.load(std::memory_order_acquire); }

 private:
  static constexpr size_t kLocalMax = 128;
  static constexpr size_t kBatch = 32;

  // Set when the calling thread's LocalCache was destroyed (thread exit);
  // trivially destructible, so it outlives the cache.
  //
  // This and local_cache_storage() are never inlined, and the empty asm
  // makes each call read the thread pointer afresh: free() runs after a
  // join wait, from which the fiber may resume on another pthread, and a
  // compiler that inlined the accessor could reuse the TLS address it
  // computed before the wait (the cache of the pthread the fiber left).
  WEFT_NOINLINE static bool& tls_cache_gone() {
    asm volatile("" ::: "memory");
    static thread_local bool gone = false;
    return gone;
  }

  uint32_t alloc_without_cache() {
    LocalCache scratch;
    const bool ok = refill(&scratch);
    if (!ok) return kInvalid;
    const uint32_t idx = scratch.items.back();
    scratch.items.pop_back();
    return idx;  // scratch's destructor returns the rest to global_.
  }

  struct LocalCache {
    std::vector<uint32_t> items;
    ~LocalCache() {
      if (this == &local_cache_storage()) tls_cache_gone() = true;
      if (items.empty()) return;
      SlotPool& pool = instance();
      std::lock_guard<std::mutex> guard(pool.mu_);
      pool.global_.insert(pool.global_.end(), items.begin(), items.end());
    }
  };

  SlotPool() = default;

  // Not inlined, for the reason given at tls_cache_gone().
  WEFT_NOINLINE static LocalCache& local_cache_storage() {
    asm volatile("" ::: "memory");
    static thread_local LocalCache cache;
    return cache;
  }
  static LocalCache& local_cache() { return local_cache_storage(); }

  bool refill(LocalCache* cache) {
    std::lock_guard<std::mutex> guard(mu_);
    if (!global_.empty()) {
      const size_t n = global_.size() < kBatch ? global_.size() : kBatch;
      cache->items.insert(cache->items.end(), global_.begin(), global_.begin() + n);
      global_.erase(global_.begin(), global_.begin() + n);
      return true;
    }
    uint32_t first = next_.load(std::memory_order_relaxed);
    if (first >= kCapacity) return false;
    uint32_t count = kBatch;
    if (first + count > kCapacity) count = static_cast<uint32_t>(kCapacity - first);
    for (uint32_t i = 0; i < count; ++i) {
      const uint32_t idx = first + i;
      std::atomic<T*>& chunk = chunks_[idx >> kChunkBits];
      if (chunk.load(std::memory_order_relaxed) == nullptr) {
        T* fresh = new (std::nothrow) T[kChunkSize];
        if (fresh == nullptr) {
          count = i;
          break;
        }
        chunk.store(fresh, std::memory_order_release);
      }
    }
    if (count == 0) return false;
    // Hand out the lowest index first.
    for (uint32_t i = count; i > 0; --i) cache->items.push_back(first + i - 1);
    next_.store(first + count, std::memory_order_release);
    return true;
  }

  std::mutex mu_;
  std::deque<uint32_t> global_;  // guarded by mu_
  std::atomic<uint32_t> next_{0};
  std::atomic<T*> chunks_[kMaxChunks] = {};
};

}  // namespace weft::base

#endif  // WEFT_BASE_SLOT_POOL_H_
