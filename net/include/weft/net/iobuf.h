// weft/net/iobuf.h: a byte sequence made of shared, refcounted blocks.
//
// An IOBuf is a list of references (block, offset, length) into 8 KiB blocks.
// Appending another IOBuf, cutting a prefix into another IOBuf and copying an
// IOBuf share the blocks and copy only the references, never the payload.
// Appending raw bytes copies them into the tail of the calling thread's
// current block, so many small messages built on one thread pack into one
// block; a block that fills is released and a fresh one taken from a small
// thread-local cache of free blocks.
//
// Thread safety: one IOBuf is used by one thread (or fiber) at a time, like a
// std::string. Different IOBufs that share blocks may be used concurrently:
// a block's reference count is atomic and the bytes an IOBuf refers to are
// never written again once referenced.
#ifndef WEFT_NET_IOBUF_H_
#define WEFT_NET_IOBUF_H_

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <string>
#include <string_view>

namespace weft {

// At most this many iovecs go into one readv/writev.
inline constexpr size_t IOBUF_IOV_MAX = 256;

class IOBuf {
 public:
  // Bytes in one block including its header.
  static constexpr size_t DEFAULT_BLOCK_SIZE = 8192;
  static constexpr size_t npos = static_cast<size_t>(-1);

  struct Block;
  // A run of bytes inside one block.
  struct BlockRef {
    uint32_t offset;
    uint32_t length;
    Block* block;
  };

  IOBuf() = default;
  ~IOBuf() { clear(); }
  // Copies share the blocks.
  IOBuf(const IOBuf& other);
  IOBuf& operator=(const IOBuf& other);
  IOBuf(IOBuf&& other) noexcept;
  IOBuf& operator=(IOBuf&& other) noexcept;

  void swap(IOBuf& other) noexcept;
  // Drops every reference (blocks whose count reaches zero are freed).
  void clear();

  bool empty() const { return nbytes_ == 0; }
  size_t size() const { return nbytes_; }
  size_t length() const { return nbytes_; }

  // The references, in order. backing_block(i) views the bytes of the i-th.
  size_t backing_block_num() const { return nref_; }
  std::string_view backing_block(size_t i) const;

  // Copies bytes in. Returns 0, or -1 (errno ENOMEM) with nothing appended.
  int append(const void* data, size_t n);
  int append(std::string_view s) { return append(s.data(), s.size()); }
  int push_back(char c) { return append(&c, 1); }
  // Shares `other`'s blocks (no payload copy).
  void append(const IOBuf& other);
  // Takes `other`'s references; `other` ends empty.
  void append(IOBuf&& other);

  // Remove up to n bytes from the front / back; return how many went.
  size_t pop_front(size_t n);
  size_t pop_back(size_t n);
  // Move up to n bytes from the front into `out` (appended); return count.
  size_t cutn(IOBuf* out, size_t n);
  size_t cutn(void* out, size_t n);
  size_t cutn(std::string* out, size_t n);
  // Remove the first byte into *c. False when empty.
  bool cut1(char* c);

  // Copy up to n bytes starting at `pos` without removing them.
  size_t copy_to(void* buf, size_t n = npos, size_t pos = 0) const;
  size_t copy_to(std::string* s, size_t n = npos, size_t pos = 0) const;
  std::string to_string() const;
  bool equals(std::string_view s) const;
  // A pointer to the first n bytes: into the first block when they lie in
  // it, else copied to `aux` (which holds n bytes). nullptr if size() < n.
  const void* fetch(void* aux, size_t n) const;
  // The byte at `pos`; pos < size().
  char byte_at(size_t pos) const;

  // Reads at most max_count bytes from fd with one readv, appending them.
  // Returns bytes read, 0 at end of file, -1 with errno (EAGAIN included).
  ssize_t append_from_file_descriptor(int fd, size_t max_count);
  // The same; *drained tells whether the read returned less than the room
  // it offered (a stream socket then had no more bytes at that moment).
  ssize_t append_from_file_descriptor(int fd, size_t max_count, bool* drained);
  // The cut_* calls write sockets with sendmsg(MSG_NOSIGNAL): a peer that
  // went away gives EPIPE, never SIGPIPE. Other fds use writev.
  // Writes a prefix of at least min(size(), size_hint) bytes (as the
  // iovec limit allows) with one writev and pops what was written. Returns
  // bytes written or -1 with errno. 0 when empty.
  ssize_t cut_into_file_descriptor(int fd, size_t size_hint = 1024 * 1024);
  // One writev over pieces[0..count) in order, at most IOBUF_IOV_MAX iovecs
  // and about size_hint bytes; pops what was written from each piece.
  static ssize_t cut_multiple_into_file_descriptor(int fd, IOBuf* const* pieces, size_t count,
                                                   size_t size_hint = 1024 * 1024);

  // Blocks allocated and not yet freed in the process (cached ones included).
  static int64_t block_count();
  // Blocks taken from malloc since the start (a statistic for tests).
  static int64_t block_allocations();
  // Frees the calling thread's cached free blocks. Also lets go of its
  // partly filled current block (freed if no IOBuf refers to it).
  static void release_thread_cache();

 private:
  static constexpr uint32_t kInlineRefs = 2;

  BlockRef& ref_at(size_t i) { return refs_[(start_ + i) & (cap_ - 1)]; }
  const BlockRef& ref_at(size_t i) const { return refs_[(start_ + i) & (cap_ - 1)]; }
  // Appends a reference, merging with the last one when it continues it.
  // Takes over one count on r.block (the caller already added it).
  bool push_ref(const BlockRef& r);
  bool grow();
  // Grows the ring until it holds n references; false when out of memory.
  bool reserve_refs(size_t n);
  // append(data, n) when the bytes do not fit the thread's current block.
  int append_slow(const void* data, size_t n);

  // A ring of references: refs_[(start_ + i) & (cap_ - 1)] for i < nref_.
  // refs_ points at inline_ until more than kInlineRefs are needed.
  BlockRef inline_[kInlineRefs];
  BlockRef* refs_ = inline_;
  uint32_t start_ = 0;
  uint32_t nref_ = 0;
  uint32_t cap_ = kInlineRefs;
  size_t nbytes_ = 0;
};

}  // namespace weft

#endif  // WEFT_NET_IOBUF_H_
