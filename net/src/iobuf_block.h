// IOBuf's block and the block operations its file-descriptor I/O
// (iobuf_fd.cpp) needs. Internal to the net library.
//
// The ownership model and the immutability rule are at the top of
// iobuf.cpp. The thread's block state (its current block and its cache of
// free blocks) is thread-local there and is touched only by functions
// defined in iobuf.cpp, called out of line from here, so no caller keeps a
// thread-local address alive across a fiber switch.
#pragma once

#include <stdint.h>

#include <atomic>

#include "weft/net/iobuf.h"

namespace weft {

struct alignas(16) IOBuf::Block {
  // Holders (see the top of iobuf.cpp). Changed only with add_ref and the
  // functions in iobuf.cpp.
  std::atomic<int32_t> nshared;
  // Bytes written so far. Read and written only by the block's writer (the
  // thread whose current block it is, or the function filling it fresh).
  uint32_t size;
  // Payload bytes after the header.
  uint32_t cap;

  explicit Block(uint32_t capacity) : nshared(1), size(0), cap(capacity) {}
  // 16-byte header: payload addresses are 16-aligned like malloc's.
  char* data() { return reinterpret_cast<char*>(this) + sizeof(Block); }
};

namespace iobuf_internal {

using Block = IOBuf::Block;

// One more holder. Relaxed: the caller already holds a count (a ref, or the
// thread's current block), so the count cannot reach zero concurrently, and
// the increment publishes nothing; the payload reaches other threads through
// whatever hands them the IOBuf.
inline void add_ref(Block* b) { b->nshared.fetch_add(1, std::memory_order_relaxed); }

// The calling thread's current block when it has room left, else nullptr (a
// full current block is let go first). The thread keeps its count on it.
Block* current_block_with_room();

// A block with count 1 held by the caller, from the thread's cache or
// malloc; nullptr when out of memory.
Block* acquire_block();

// Gives back a block acquire_block returned and nobody else ever saw: to
// the thread's cache, else its read spares, else malloc.
void return_unread_block(Block* b);

// Makes b (partly filled by the caller, which holds a count on it) the
// thread's current block if it has more room than the current one; the
// thread then takes a count of its own. The caller's count is untouched.
void keep_as_current_if_roomier(Block* b);

}  // namespace iobuf_internal
}  // namespace weft
