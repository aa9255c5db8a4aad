// WrittenIdSet: a socket's written-but-unanswered request ids (see
// Socket::ForgetWrittenId), once per RPC call on a client connection, so it
// is on every call's path twice (the writer adds, the reply's ender
// removes).
//
// An open-addressing hash set of non-zero 64-bit ids with linear probing,
// in an array owned by the set (an inline one for the first 16 ids: a
// connection with few calls in flight never allocates), behind a
// test-and-test-and-set spinlock. It replaced a std::mutex around a
// std::unordered_set: that allocated a node per add and, contended by the
// writer and the reply fibers of one busy connection, put worker pthreads
// to sleep in futex waits. Every critical section here is a few dozen
// instructions (a probe, or a rehash that moves at most the ids in flight),
// never a system call or a suspension, so spinning is the right wait.
//
// Removed ids leave tombstones so later probes keep going. When ids and
// tombstones fill 3/4 of the array it is rehashed: in place (dropping the
// tombstones) while at most half of it is live ids, else at twice the size.
// So the array is at most four times the most ids ever held at once, and
// each operation is O(1) amortised.
//
// Close() hands every id out exactly once and makes later Add()s refuse, so
// an id is either handed out by Close or refused to its adder, never both
// and never neither (both under the lock).
#ifndef WEFT_NET_SRC_WRITTEN_ID_SET_H_
#define WEFT_NET_SRC_WRITTEN_ID_SET_H_

#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "base/spinlock.h"

namespace weft::net_internal {

class WrittenIdSet {
 public:
  WrittenIdSet() = default;
  ~WrittenIdSet();
  WrittenIdSet(const WrittenIdSet&) = delete;
  WrittenIdSet& operator=(const WrittenIdSet&) = delete;

  // Adds `id` (non-zero; adding one already present is a no-op). False,
  // and nothing kept, once Close() ran: the caller then tells the id
  // itself. Any thread, in parallel with every other method.
  bool Add(uint64_t id);
  // Drops `id` if present. Any thread, in parallel with every other method.
  void Remove(uint64_t id);
  // Closes the set and appends every id it held to *out (the set is empty
  // afterwards). Only the first Close hands out ids; later ones find it
  // empty. Any thread.
  void Close(std::vector<uint64_t>* out);
  // Empty and open again, for the socket slot's next use; frees a large
  // array. Only while no other thread uses the set (the socket is being
  // created or recycled).
  void Reset();
  // Ids held now (tests, diagnostics). Any thread.
  size_t size() const;

 private:
  static constexpr uint32_t kInlineCapacity = 16;
  // Marks a removed id's slot. Ids are bthread_id values (a version above
  // a slot index), never all ones.
  static constexpr uint64_t kTombstone = ~uint64_t{0};

  // lock_ held: the slot index `id` lives in, or the empty slot where it
  // would go (the first tombstone on its probe path when there is one).
  uint32_t Find(uint64_t id, bool* found) const;
  // lock_ held: makes room for one more id (rehash in place, or grow).
  void Rehash(uint32_t new_capacity);

  mutable base::SpinLock lock_;
  // All guarded by lock_. slots_ is inline_ or a heap array of capacity_
  // (a power of two) entries, each 0 (empty), kTombstone or an id.
  uint64_t* slots_ = inline_;
  uint32_t capacity_ = kInlineCapacity;
  uint32_t live_ = 0;  // ids held
  uint32_t used_ = 0;  // ids held + tombstones
  bool closed_ = false;
  uint64_t inline_[kInlineCapacity] = {};
};

}  // namespace weft::net_internal

#endif  // WEFT_NET_SRC_WRITTEN_ID_SET_H_
