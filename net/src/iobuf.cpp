// IOBuf: references into shared, refcounted 8 KiB blocks.
//
// Ownership model. Every block carries an atomic count of its holders. A
// holder is either one BlockRef inside some IOBuf, or the thread that owns
// the block as its "current" block (the one append(data, n) copies into), or
// a function that just took the block from the cache or malloc and has not
// handed it on yet. A block whose count drops to zero has no holder left; it
// goes to the releasing thread's cache of free blocks (count 0, exclusively
// owned by that thread) or back to malloc when the cache is full.
//
// Immutability. Bytes [0, size) of a block are never written again: refs
// only ever point below `size`. Only the thread holding the block as its
// current block (or the function that just took a fresh block) writes at or
// above `size` and advances `size`; nobody else reads `size` or those bytes.
// Hence a block shared by IOBufs on many threads needs no lock: readers and
// the one writer touch disjoint bytes, and a reader learns of the bytes it
// refers to through whatever synchronisation handed it the IOBuf.
//
// Fibers. Callers may be fibers that move between pthreads, but never in the
// middle of one IOBuf call, so each call sees one thread's thread-local state
// from start to end. The thread-local state is touched only from this file
// (no inline header code), so the compiler cannot keep a thread-local
// address alive across a fiber switch in the caller. (Link-time inlining of
// these functions into fiber code would break that; weft is not built with
// LTO.)
#include "weft/net/iobuf.h"

#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <new>

#include "base/compiler.h"
#include "iobuf_block.h"

namespace weft {

namespace {

using Block = IOBuf::Block;
using BlockRef = IOBuf::BlockRef;
using iobuf_internal::add_ref;

static_assert(sizeof(Block) == 16, "header must keep the payload 16-aligned");
constexpr uint32_t kBlockCap = static_cast<uint32_t>(IOBuf::DEFAULT_BLOCK_SIZE - sizeof(Block));
// Free blocks a thread keeps (256 KiB): enough to absorb bursts of
// allocation and release without going to malloc every time.
constexpr uint32_t kMaxCachedBlocks = 32;
// Blocks a read offered to readv but did not fill, kept beyond the cache for
// the thread's next read (512 KiB: one read of --max_count 512 KiB). Without
// them a large read that gets a few bytes returns ~33 blocks to malloc (the
// cache is full) and mallocs them again on the next read.
constexpr uint32_t kMaxReadSpares = 64;

// Live blocks in the process, cached ones included. Only a statistic (and a
// leak check for tests): relaxed, nothing is published through it.
std::atomic<int64_t> g_nblocks{0};
// Blocks ever taken from malloc (statistic, relaxed like g_nblocks).
std::atomic<int64_t> g_nallocs{0};

// Per-thread block state. Trivially constructible and destructible so that
// the append fast path reaches it with a plain TLS access (no guard, no
// wrapper call). The cleanup at thread exit is a separate object below.
struct ThreadBlocks {
  // The block append() copies into; this thread holds one count on it.
  Block* cur;
  uint32_t ncached;
  // The exit hook is registered (ThreadExitHook has been constructed).
  bool hooked;
  // The exit hook has run: from now on nothing is cached or kept current,
  // since nobody would free it.
  bool exiting;
  uint32_t nspares;
  // Blocks with count 0 that only this thread may touch.
  Block* cached[kMaxCachedBlocks];
  // The same, left over by append_from_file_descriptor (see kMaxReadSpares).
  Block* spares[kMaxReadSpares];
};
thread_local ThreadBlocks tls_blocks;

void drop_thread_blocks(ThreadBlocks& t);

// Its destructor frees the thread's blocks at thread exit. Constructed on
// first use (from ensure_exit_hook, slow paths only), which also registers
// the destructor with the C++ runtime.
struct ThreadExitHook {
  // Written once so that the access, and with it the registration, cannot
  // be optimised away.
  volatile bool armed = false;
  ~ThreadExitHook() {
    ThreadBlocks& t = tls_blocks;
    t.exiting = true;
    drop_thread_blocks(t);
  }
};
thread_local ThreadExitHook tls_exit_hook;

// Called before this thread starts holding a block in its thread state.
inline void ensure_exit_hook(ThreadBlocks& t) {
  if (WEFT_UNLIKELY(!t.hooked)) {
    t.hooked = true;
    tls_exit_hook.armed = true;
  }
}

void free_block(Block* b) {
  b->~Block();
  free(b);
  g_nblocks.fetch_add(-1, std::memory_order_relaxed);
}

// A block with count 1 held by the caller: from the cache, else malloc.
// nullptr when out of memory.
Block* acquire_block(ThreadBlocks& t) {
  if (t.ncached != 0 || t.nspares != 0) {
    Block* b = t.ncached != 0 ? t.cached[--t.ncached] : t.spares[--t.nspares];
    // Cached blocks are exclusively ours (their count reached zero on this
    // thread with acquire ordering, see release_block), so plain stores do.
    b->nshared.store(1, std::memory_order_relaxed);
    b->size = 0;
    return b;
  }
  void* mem = malloc(IOBuf::DEFAULT_BLOCK_SIZE);
  if (mem == nullptr) return nullptr;
  g_nblocks.fetch_add(1, std::memory_order_relaxed);
  g_nallocs.fetch_add(1, std::memory_order_relaxed);
  return new (mem) Block(kBlockCap);
}

// One holder less; the last one recycles the block. acq_rel: the release
// half orders this holder's accesses to the block (reading its payload, or
// writing it as the block's writer) before the decrement; the acquire half
// lets whoever brings the count to zero see every other holder's accesses
// as finished before it reuses the payload or frees the memory. (release +
// an acquire fence on reaching zero would do too; ThreadSanitizer does not
// model fences, and on x86 both are the same locked instruction.)
inline void release_block(Block* b) {
  if (b->nshared.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    ThreadBlocks& t = tls_blocks;
    if (t.ncached < kMaxCachedBlocks && !t.exiting) {
      ensure_exit_hook(t);
      t.cached[t.ncached++] = b;
    } else {
      free_block(b);
    }
  }
}

// Makes b (partially filled, one count held by the caller on the thread's
// behalf) the thread's current block and lets the old one go. Refuses when
// the thread is exiting (no hook is left to drop it): the caller keeps its
// count then.
bool set_current(ThreadBlocks& t, Block* b) {
  if (WEFT_UNLIKELY(t.exiting)) return false;
  ensure_exit_hook(t);
  Block* old = t.cur;
  t.cur = b;
  if (old != nullptr) release_block(old);
  return true;
}

// Lets go of the current block and frees the cache. Current first: if its
// count reaches zero it lands in the cache, which is then emptied (or, when
// exiting, it is freed directly).
void drop_thread_blocks(ThreadBlocks& t) {
  if (Block* b = t.cur) {
    t.cur = nullptr;
    release_block(b);
  }
  while (t.ncached != 0) free_block(t.cached[--t.ncached]);
  while (t.nspares != 0) free_block(t.spares[--t.nspares]);
}

}  // namespace

// ---- copy, move, swap, clear ----

IOBuf::IOBuf(const IOBuf& other) { append(other); }

IOBuf& IOBuf::operator=(const IOBuf& other) {
  if (this != &other) {
    IOBuf copy(other);
    swap(copy);
  }
  return *this;
}

IOBuf::IOBuf(IOBuf&& other) noexcept {
  // Into an empty inline object: only other's state moves (swap's general
  // case would save and restore both sides). The refs' counts move with
  // them: other is left empty, owning nothing.
  if (other.refs_ == other.inline_) {
    for (uint32_t i = 0; i < other.nref_; ++i) inline_[i] = other.ref_at(i);
  } else {
    refs_ = other.refs_;
    start_ = other.start_;
    cap_ = other.cap_;
  }
  nref_ = other.nref_;
  nbytes_ = other.nbytes_;
  other.refs_ = other.inline_;
  other.start_ = 0;
  other.nref_ = 0;
  other.cap_ = kInlineRefs;
  other.nbytes_ = 0;
}

IOBuf& IOBuf::operator=(IOBuf&& other) noexcept {
  if (this != &other) {
    clear();
    swap(other);
  }
  return *this;
}

void IOBuf::swap(IOBuf& other) noexcept {
  if (this == &other) return;
  // An inline ring lives inside its object, so its contents move and the
  // pointer is re-aimed at the receiving object's own inline_; only
  // in-use slots are copied (the rest may be uninitialised), rebased to 0.
  BlockRef mine[kInlineRefs];
  BlockRef theirs[kInlineRefs];
  const bool mine_inline = refs_ == inline_;
  const bool theirs_inline = other.refs_ == other.inline_;
  if (mine_inline) {
    for (uint32_t i = 0; i < nref_; ++i) mine[i] = ref_at(i);
  }
  if (theirs_inline) {
    for (uint32_t i = 0; i < other.nref_; ++i) theirs[i] = other.ref_at(i);
  }
  std::swap(refs_, other.refs_);
  std::swap(start_, other.start_);
  std::swap(nref_, other.nref_);
  std::swap(cap_, other.cap_);
  std::swap(nbytes_, other.nbytes_);
  if (theirs_inline) {
    for (uint32_t i = 0; i < nref_; ++i) inline_[i] = theirs[i];
    refs_ = inline_;
    start_ = 0;
  }
  if (mine_inline) {
    for (uint32_t i = 0; i < other.nref_; ++i) other.inline_[i] = mine[i];
    other.refs_ = other.inline_;
    other.start_ = 0;
  }
}

void IOBuf::clear() {
  for (uint32_t i = 0; i < nref_; ++i) release_block(ref_at(i).block);
  if (refs_ != inline_) {
    free(refs_);
    refs_ = inline_;
    cap_ = kInlineRefs;
  }
  start_ = 0;
  nref_ = 0;
  nbytes_ = 0;
}

// ---- the ring ----

bool IOBuf::grow() {
  const uint32_t new_cap = cap_ * 2;
  auto* fresh = static_cast<BlockRef*>(malloc(sizeof(BlockRef) * new_cap));
  if (fresh == nullptr) return false;
  for (uint32_t i = 0; i < nref_; ++i) fresh[i] = ref_at(i);
  if (refs_ != inline_) free(refs_);
  refs_ = fresh;
  start_ = 0;
  cap_ = new_cap;
  return true;
}

bool IOBuf::reserve_refs(size_t n) {
  while (cap_ < n) {
    if (!grow()) return false;
  }
  return true;
}

// On false (no memory for the ring) the caller still owns its count.
bool IOBuf::push_ref(const BlockRef& r) {
  if (nref_ != 0) {
    BlockRef& last = ref_at(nref_ - 1);
    if (last.block == r.block && last.offset + last.length == r.offset) {
      last.length += r.length;
      nbytes_ += r.length;
      // `last` already holds a count; the caller's is surplus. Never the
      // last one, so this only decrements.
      release_block(r.block);
      return true;
    }
  }
  if (nref_ == cap_ && !grow()) return false;
  refs_[(start_ + nref_) & (cap_ - 1)] = r;
  ++nref_;
  nbytes_ += r.length;
  return true;
}

// ---- appending ----

int IOBuf::append(const void* data, size_t n) {
  // Fast path: the bytes fit the thread's current block. Touches only the
  // thread state, the block's tail and this IOBuf; the only atomic is the
  // count increment for a new ref, and none when the bytes extend the last
  // ref (the common case of many small appends to one IOBuf).
  ThreadBlocks& t = tls_blocks;
  Block* b = t.cur;
  if (WEFT_LIKELY(b != nullptr && n <= b->cap - b->size && n != 0)) {
    const uint32_t off = b->size;
    const auto len = static_cast<uint32_t>(n);
    if (nref_ != 0) {
      BlockRef& last = ref_at(nref_ - 1);
      // The last ref ending exactly at `size` means nothing was written
      // after it: extend it in place.
      if (last.block == b && last.offset + last.length == off) {
        memcpy(b->data() + off, data, n);
        b->size = off + len;
        last.length += len;
        nbytes_ += n;
        return 0;
      }
    }
    if (nref_ < cap_) {
      memcpy(b->data() + off, data, n);
      b->size = off + len;
      add_ref(b);
      refs_[(start_ + nref_) & (cap_ - 1)] = BlockRef{off, len, b};
      ++nref_;
      nbytes_ += n;
      return 0;
    }
  }
  return append_slow(data, n);
}

WEFT_NOINLINE int IOBuf::append_slow(const void* data, size_t n) {
  if (n == 0) return 0;
  ThreadBlocks& t = tls_blocks;
  const size_t old_nbytes = nbytes_;
  const char* p = static_cast<const char*>(data);
  size_t left = n;
  while (left != 0) {
    Block* b = t.cur;
    // Set when b is a fresh block the thread could not keep (exiting): our
    // count on it is dropped once the ref holds its own.
    bool temporary = false;
    if (b == nullptr || b->size == b->cap) {
      b = acquire_block(t);
      if (b == nullptr) break;
      temporary = !set_current(t, b);
    }
    const uint32_t off = b->size;
    const auto k = static_cast<uint32_t>(std::min<size_t>(left, b->cap - off));
    memcpy(b->data() + off, p, k);
    add_ref(b);
    const bool pushed = push_ref(BlockRef{off, k, b});
    if (!pushed) release_block(b);
    // Advance only once referenced; after a failed push the bytes stay
    // unreferenced and are overwritten later.
    if (pushed) b->size = off + k;
    if (temporary) release_block(b);
    if (!pushed) break;
    p += k;
    left -= k;
  }
  if (left != 0) {
    // Out of memory: undo what this call added (blocks that filled go back
    // to the cache) so the caller sees nothing appended.
    pop_back(nbytes_ - old_nbytes);
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

void IOBuf::append(const IOBuf& other) {
  if (&other == this) {
    // Pushing our own refs could merge into one we have yet to read.
    IOBuf copy(other);
    append(std::move(copy));
    return;
  }
  if (!reserve_refs(static_cast<size_t>(nref_) + other.nref_)) throw std::bad_alloc();
  for (uint32_t i = 0; i < other.nref_; ++i) {
    const BlockRef& r = other.ref_at(i);
    add_ref(r.block);
    push_ref(r);  // cannot fail: capacity reserved above
  }
}

void IOBuf::append(IOBuf&& other) {
  if (&other == this) return;
  if (nref_ == 0) {
    // Take the whole ring; `other` gets our empty one and frees it below.
    swap(other);
    other.clear();
    return;
  }
  if (!reserve_refs(static_cast<size_t>(nref_) + other.nref_)) throw std::bad_alloc();
  for (uint32_t i = 0; i < other.nref_; ++i) push_ref(other.ref_at(i));  // counts move
  other.nref_ = 0;  // its counts are ours now: clear() must not drop them
  other.clear();
}

// ---- removing ----

size_t IOBuf::pop_front(size_t n) {
  const size_t want = std::min(n, nbytes_);
  size_t left = want;
  while (left != 0) {
    BlockRef& r = ref_at(0);
    if (r.length <= left) {
      left -= r.length;
      nbytes_ -= r.length;
      Block* b = r.block;
      start_ = (start_ + 1) & (cap_ - 1);
      --nref_;
      release_block(b);
    } else {
      r.offset += static_cast<uint32_t>(left);
      r.length -= static_cast<uint32_t>(left);
      nbytes_ -= left;
      left = 0;
    }
  }
  if (nref_ == 0) start_ = 0;
  return want;
}

size_t IOBuf::pop_back(size_t n) {
  const size_t want = std::min(n, nbytes_);
  size_t left = want;
  while (left != 0) {
    BlockRef& r = ref_at(nref_ - 1);
    if (r.length <= left) {
      left -= r.length;
      nbytes_ -= r.length;
      Block* b = r.block;
      --nref_;
      release_block(b);
    } else {
      r.length -= static_cast<uint32_t>(left);
      nbytes_ -= left;
      left = 0;
    }
  }
  if (nref_ == 0) start_ = 0;
  return want;
}

size_t IOBuf::cutn(IOBuf* out, size_t n) {
  if (out == this) {
    // Moving a prefix to our own end rotates the bytes.
    IOBuf front;
    const size_t k = cutn(&front, n);
    append(std::move(front));
    return k;
  }
  const size_t want = std::min(n, nbytes_);
  // Count the refs that move and make room for them first, so a failure
  // leaves both IOBufs as they were.
  size_t nmove = 0;
  for (size_t covered = 0; covered < want; ++nmove) covered += ref_at(nmove).length;
  if (!out->reserve_refs(static_cast<size_t>(out->nref_) + nmove)) throw std::bad_alloc();
  size_t left = want;
  while (left != 0) {
    BlockRef& r = ref_at(0);
    if (r.length <= left) {
      // The whole ref moves with its count.
      left -= r.length;
      nbytes_ -= r.length;
      out->push_ref(r);
      start_ = (start_ + 1) & (cap_ - 1);
      --nref_;
    } else {
      // Split: `out` gets a new ref on the same block.
      const auto k = static_cast<uint32_t>(left);
      add_ref(r.block);
      out->push_ref(BlockRef{r.offset, k, r.block});
      r.offset += k;
      r.length -= k;
      nbytes_ -= k;
      left = 0;
    }
  }
  if (nref_ == 0) start_ = 0;
  return want;
}

size_t IOBuf::cutn(void* out, size_t n) {
  const size_t k = copy_to(out, n, 0);
  pop_front(k);
  return k;
}

size_t IOBuf::cutn(std::string* out, size_t n) {
  const size_t k = std::min(n, nbytes_);
  const size_t old = out->size();
  out->resize(old + k);
  copy_to(&(*out)[old], k, 0);
  pop_front(k);
  return k;
}

bool IOBuf::cut1(char* c) {
  if (nbytes_ == 0) return false;
  const BlockRef& r = ref_at(0);
  *c = r.block->data()[r.offset];
  pop_front(1);
  return true;
}

// ---- reading ----

size_t IOBuf::copy_to(void* buf, size_t n, size_t pos) const {
  if (pos >= nbytes_) return 0;
  const size_t want = std::min(n, nbytes_ - pos);
  char* out = static_cast<char*>(buf);
  size_t left = want;
  for (uint32_t i = 0; i < nref_ && left != 0; ++i) {
    const BlockRef& r = ref_at(i);
    if (pos >= r.length) {
      pos -= r.length;
      continue;
    }
    const size_t k = std::min<size_t>(left, r.length - pos);
    memcpy(out, r.block->data() + r.offset + pos, k);
    out += k;
    left -= k;
    pos = 0;
  }
  return want;
}

size_t IOBuf::copy_to(std::string* s, size_t n, size_t pos) const {
  const size_t k = pos >= nbytes_ ? 0 : std::min(n, nbytes_ - pos);
  s->resize(k);
  return copy_to(&(*s)[0], k, pos);
}

std::string IOBuf::to_string() const {
  std::string s;
  copy_to(&s);
  return s;
}

bool IOBuf::equals(std::string_view s) const {
  if (s.size() != nbytes_) return false;
  const char* p = s.data();
  for (uint32_t i = 0; i < nref_; ++i) {
    const BlockRef& r = ref_at(i);
    if (memcmp(p, r.block->data() + r.offset, r.length) != 0) return false;
    p += r.length;
  }
  return true;
}

const void* IOBuf::fetch(void* aux, size_t n) const {
  if (n > nbytes_) return nullptr;
  if (nref_ != 0 && ref_at(0).length >= n) {
    const BlockRef& r = ref_at(0);
    return r.block->data() + r.offset;
  }
  copy_to(aux, n, 0);
  return aux;
}

char IOBuf::byte_at(size_t pos) const {
  for (uint32_t i = 0; i < nref_; ++i) {
    const BlockRef& r = ref_at(i);
    if (pos < r.length) return r.block->data()[r.offset + pos];
    pos -= r.length;
  }
  return '\0';  // pos >= size(): outside the contract
}

std::string_view IOBuf::backing_block(size_t i) const {
  if (i >= nref_) return {};
  const BlockRef& r = ref_at(i);
  return std::string_view(r.block->data() + r.offset, r.length);
}

// ---- the block operations of the fd I/O (iobuf_block.h) ----

namespace iobuf_internal {

Block* current_block_with_room() {
  ThreadBlocks& t = tls_blocks;
  Block* cur = t.cur;
  if (cur != nullptr && cur->size == cur->cap) {
    t.cur = nullptr;
    release_block(cur);
    cur = nullptr;
  }
  return cur;
}

Block* acquire_block() { return weft::acquire_block(tls_blocks); }

// Gives back a block a read took fresh (count 1, ours alone, never shared)
// and did not fill: to the cache, else to the read spares, else to malloc.
// No atomic decrement is needed: nobody else ever saw the block.
void return_unread_block(Block* b) {
  ThreadBlocks& t = tls_blocks;
  if (!t.exiting && (t.ncached < kMaxCachedBlocks || t.nspares < kMaxReadSpares)) {
    ensure_exit_hook(t);
    b->nshared.store(0, std::memory_order_relaxed);
    if (t.ncached < kMaxCachedBlocks) {
      t.cached[t.ncached++] = b;
    } else {
      t.spares[t.nspares++] = b;
    }
  } else {
    free_block(b);
  }
}

void keep_as_current_if_roomier(Block* b) {
  ThreadBlocks& t = tls_blocks;
  const uint32_t room = b->cap - b->size;
  const uint32_t cur_room = t.cur == nullptr ? 0 : t.cur->cap - t.cur->size;
  if (room > cur_room && !t.exiting) {
    add_ref(b);  // the thread's count
    set_current(t, b);
  }
}

}  // namespace iobuf_internal

// ---- statistics and thread state ----

int64_t IOBuf::block_count() { return g_nblocks.load(std::memory_order_relaxed); }

int64_t IOBuf::block_allocations() { return g_nallocs.load(std::memory_order_relaxed); }

void IOBuf::release_thread_cache() { drop_thread_blocks(tls_blocks); }

}  // namespace weft
