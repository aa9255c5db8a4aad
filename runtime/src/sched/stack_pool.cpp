#include "sched/stack_pool.h"

#include <errno.h>
#include <gflags/gflags.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "base/compiler.h"

DEFINE_int32(weft_stack_size_small, 32 * 1024, "Usable bytes of a BTHREAD_ATTR_SMALL fiber stack");
DEFINE_int32(weft_stack_size_normal, 1024 * 1024,
             "Usable bytes of a BTHREAD_ATTR_NORMAL fiber stack");
DEFINE_int32(weft_stack_size_large, 8 * 1024 * 1024,
             "Usable bytes of a BTHREAD_ATTR_LARGE fiber stack");

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102  // Linux 6.13 uapi; Debian 12's headers predate it.
#endif

namespace weft::sched {
namespace {

// Sanitizers grow frames several-fold; give their builds proportionally
// larger stacks so the same programs fit.
#if defined(WEFT_ASAN) || defined(WEFT_TSAN)
constexpr size_t kSanitizerStackFactor = 4;
#else
constexpr size_t kSanitizerStackFactor = 1;
#endif

// Slabs aim at this many bytes of address space (reserved, not committed:
// MAP_NORESERVE), capped at kMaxSlotsPerSlab stacks.
constexpr size_t kSlabTargetBytes = 16u << 20;
constexpr size_t kMaxSlotsPerSlab = 64;
constexpr size_t kMaxSlabs = 1u << 20;
constexpr size_t kLocalCacheMax = 16;

// Address space left inaccessible below every stack. Stacks in a slab are
// contiguous, so a frame that moves the stack pointer past the whole guard
// at once lands in the neighbour's stack and corrupts it silently; 64 KiB
// covers any frame the compiler does not probe (the project builds with
// -fstack-clash-protection, which probes every page of larger frames, but
// callers' code may not). Reserved only: MADV_GUARD_INSTALL costs no memory
// whatever its size, and the mprotect fallback costs one split per guard.
constexpr size_t kGuardBytes = 64 * 1024;

struct SlabRecord {
  char* base;
  size_t slot_bytes;  // guard + usable stack
  size_t nslots;
  size_t usable;
  size_t guard;
};

// Registry of slabs for the signal handler: entries are written before
// nslabs is bumped (release), and the handler reads nslabs with acquire.
SlabRecord g_slabs[kMaxSlabs];
std::atomic<size_t> g_nslabs{0};

size_t page_size() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

enum class GuardMode { kUnknown, kMadvise, kMprotect };

GuardMode detect_guard_mode() {
  static const GuardMode mode = [] {
    void* probe = mmap(nullptr, page_size() * 2, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (probe == MAP_FAILED) return GuardMode::kMprotect;
    const bool ok = madvise(probe, page_size(), MADV_GUARD_INSTALL) == 0;
    munmap(probe, page_size() * 2);
    return ok ? GuardMode::kMadvise : GuardMode::kMprotect;
  }();
  return mode;
}

struct ClassPool {
  std::mutex mu;
  std::vector<void*> free_bottoms;  // usable bottoms of free stacks
  size_t usable = 0;
  size_t guard = 0;
  size_t slot_bytes = 0;
  size_t slots_per_slab = 0;
};

ClassPool* pools() {
  static ClassPool* p = [] {
    auto* arr = new ClassPool[kStackClasses];
    const int32_t sizes[kStackClasses] = {FLAGS_weft_stack_size_small, FLAGS_weft_stack_size_normal,
                                          FLAGS_weft_stack_size_large};
    const size_t page = page_size();
    for (int c = 0; c < kStackClasses; ++c) {
      size_t want = static_cast<size_t>(sizes[c] > 0 ? sizes[c] : 4096) * kSanitizerStackFactor;
      want = (want + page - 1) / page * page;
      arr[c].usable = want;
      arr[c].guard = (kGuardBytes + page - 1) / page * page;
      arr[c].slot_bytes = want + arr[c].guard;
      size_t n = kSlabTargetBytes / arr[c].slot_bytes;
      if (n < 1) n = 1;
      if (n > kMaxSlotsPerSlab) n = kMaxSlotsPerSlab;
      arr[c].slots_per_slab = n;
    }
    return arr;
  }();
  return p;
}

// Maps a new slab for `pool` and puts all its stacks on the free list.
// Called with pool->mu held.
int grow(ClassPool* pool) {
  const size_t bytes = pool->slot_bytes * pool->slots_per_slab;
  if (g_nslabs.load(std::memory_order_relaxed) >= kMaxSlabs) return ENOMEM;
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return ENOMEM;
  char* base = static_cast<char*>(mem);
  const GuardMode mode = detect_guard_mode();
  for (size_t i = 0; i < pool->slots_per_slab; ++i) {
    char* guard = base + i * pool->slot_bytes;
    const int rc = mode == GuardMode::kMadvise ? madvise(guard, pool->guard, MADV_GUARD_INSTALL)
                                               : mprotect(guard, pool->guard, PROT_NONE);
    if (rc != 0) {
      // Out of mappings (mprotect splits) or memory: give the slab back.
      munmap(mem, bytes);
      return ENOMEM;
    }
  }
  static std::mutex registry_mu;
  {
    std::lock_guard<std::mutex> guard(registry_mu);
    const size_t n = g_nslabs.load(std::memory_order_relaxed);
    g_slabs[n] =
        SlabRecord{base, pool->slot_bytes, pool->slots_per_slab, pool->usable, pool->guard};
    g_nslabs.store(n + 1, std::memory_order_release);
  }
  for (size_t i = pool->slots_per_slab; i > 0; --i) {
    pool->free_bottoms.push_back(base + (i - 1) * pool->slot_bytes + pool->guard);
  }
  return 0;
}

// The per-thread cache. It is trivially destructible, so its storage stays
// valid through all of the thread's thread_local destructors: a destructor
// that starts or ends fibers (a logger flushing, a pool closing) may still
// reach it after the flusher below has run. From then on `exiting` sends
// every call to the shared pools.
struct LocalStacks {
  void* bottoms[kStackClasses][kLocalCacheMax + 1];
  size_t n[kStackClasses];
  bool flusher_armed;  // the flusher's destructor is registered
  bool exiting;        // the flusher ran: bypass the cache
};
thread_local LocalStacks tls_stacks;  // zero-initialised: no guard, no destructor

void put_back(ClassPool* pool, void* const* bottoms, size_t n) {
  std::lock_guard<std::mutex> guard(pool->mu);
  pool->free_bottoms.insert(pool->free_bottoms.end(), bottoms, bottoms + n);
}

// Hands the cache back when the thread exits.
struct LocalStacksFlusher {
  ~LocalStacksFlusher() {
    LocalStacks& s = tls_stacks;
    s.exiting = true;
    for (int c = 0; c < kStackClasses; ++c) {
      if (s.n[c] != 0) put_back(&pools()[c], s.bottoms[c], s.n[c]);
      s.n[c] = 0;
    }
  }
};

// The calling thread's cache, or nullptr once the thread is exiting. Not
// inlined, and the empty asm makes every call read the thread pointer
// afresh: stacks are released from the "remained" callback of whichever
// worker a fiber switched on, and a compiler must never reuse a TLS
// address computed on another pthread.
WEFT_NOINLINE LocalStacks* local_stacks() {
  asm volatile("" ::: "memory");
  LocalStacks* s = &tls_stacks;
  if (WEFT_UNLIKELY(s->exiting)) return nullptr;
  if (WEFT_UNLIKELY(!s->flusher_armed)) {
    s->flusher_armed = true;
    static thread_local LocalStacksFlusher flusher;  // registers the destructor
    (void)flusher;
  }
  return s;
}

}  // namespace

int stack_acquire(int cls, Stack* out) {
  ClassPool& pool = pools()[cls];
  LocalStacks* local = local_stacks();
  if (local == nullptr || local->n[cls] == 0) {
    std::lock_guard<std::mutex> guard(pool.mu);
    if (pool.free_bottoms.empty()) {
      const int rc = grow(&pool);
      if (rc != 0) return rc;
    }
    if (local == nullptr) {
      out->bottom = pool.free_bottoms.back();
      pool.free_bottoms.pop_back();
    } else {
      size_t n = pool.free_bottoms.size();
      if (n > kLocalCacheMax / 2) n = kLocalCacheMax / 2;
      // Keep the order: the last one in the pool is the next handed out.
      for (size_t i = 0; i < n; ++i) {
        local->bottoms[cls][i] = pool.free_bottoms[pool.free_bottoms.size() - n + i];
      }
      pool.free_bottoms.resize(pool.free_bottoms.size() - n);
      local->n[cls] = n;
    }
  }
  if (local != nullptr) out->bottom = local->bottoms[cls][--local->n[cls]];
  out->size = pool.usable;
  out->cls = cls;
  return 0;
}

void stack_release(const Stack& stack) {
  LocalStacks* local = local_stacks();
  if (WEFT_UNLIKELY(local == nullptr)) {
    put_back(&pools()[stack.cls], &stack.bottom, 1);
    return;
  }
  void** bottoms = local->bottoms[stack.cls];
  size_t& n = local->n[stack.cls];
  bottoms[n++] = stack.bottom;
  if (n > kLocalCacheMax) {
    // Give back the oldest half so the hottest stay local.
    put_back(&pools()[stack.cls], bottoms, kLocalCacheMax / 2);
    for (size_t i = kLocalCacheMax / 2; i < n; ++i) bottoms[i - kLocalCacheMax / 2] = bottoms[i];
    n -= kLocalCacheMax / 2;
  }
}

size_t stack_usable_size(int cls) { return pools()[cls].usable; }

const char* stack_guard_mode() {
  return detect_guard_mode() == GuardMode::kMadvise ? "madvise" : "mprotect";
}

bool stack_guard_hit(const void* addr, size_t* stack_size) {
  const char* p = static_cast<const char*>(addr);
  const size_t n = g_nslabs.load(std::memory_order_acquire);
  for (size_t i = 0; i < n; ++i) {
    const SlabRecord& s = g_slabs[i];
    if (p < s.base || p >= s.base + s.slot_bytes * s.nslots) continue;
    const size_t offset = static_cast<size_t>(p - s.base) % s.slot_bytes;
    if (offset < s.guard) {  // anywhere in the guard, not only its top page
      *stack_size = s.usable;
      return true;
    }
    return false;
  }
  return false;
}

}  // namespace weft::sched
