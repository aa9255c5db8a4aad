#include "written_id_set.h"

namespace weft::net_internal {

namespace {

// Fibonacci hashing: ids differ mostly in their low (slot) bits, which the
// multiplication spreads over the high half we take the index from.
inline uint32_t hash_of(uint64_t id) {
  return static_cast<uint32_t>((id * 0x9E3779B97F4A7C15ull) >> 32);
}

}  // namespace

WrittenIdSet::~WrittenIdSet() {
  if (slots_ != inline_) delete[] slots_;
}

uint32_t WrittenIdSet::Find(uint64_t id, bool* found) const {
  const uint32_t mask = capacity_ - 1;
  uint32_t first_tombstone = capacity_;
  // used_ < capacity_ always (Rehash keeps a quarter empty), so the probe
  // meets an empty slot and ends.
  for (uint32_t i = hash_of(id) & mask;; i = (i + 1) & mask) {
    const uint64_t v = slots_[i];
    if (v == id) {
      *found = true;
      return i;
    }
    if (v == 0) {
      *found = false;
      return first_tombstone != capacity_ ? first_tombstone : i;
    }
    if (v == kTombstone && first_tombstone == capacity_) first_tombstone = i;
  }
}

void WrittenIdSet::Rehash(uint32_t new_capacity) {
  // The inline array is rebuilt through a stack copy; a heap one is
  // replaced by a fresh array (one allocation per capacity_/4 operations at
  // least, since the previous rehash left a quarter of the array empty).
  uint64_t stack_copy[kInlineCapacity];
  uint64_t* const fresh = new_capacity == kInlineCapacity ? stack_copy : new uint64_t[new_capacity];
  for (uint32_t i = 0; i < new_capacity; ++i) fresh[i] = 0;
  const uint32_t mask = new_capacity - 1;
  for (uint32_t i = 0; i < capacity_; ++i) {
    const uint64_t v = slots_[i];
    if (v == 0 || v == kTombstone) continue;
    uint32_t j = hash_of(v) & mask;
    while (fresh[j] != 0) j = (j + 1) & mask;
    fresh[j] = v;
  }
  if (slots_ != inline_) delete[] slots_;
  if (fresh == stack_copy) {
    for (uint32_t i = 0; i < kInlineCapacity; ++i) inline_[i] = stack_copy[i];
    slots_ = inline_;
  } else {
    slots_ = fresh;
  }
  capacity_ = new_capacity;
  used_ = live_;
}

bool WrittenIdSet::Add(uint64_t id) {
  lock_.lock();
  if (closed_) {
    lock_.unlock();
    return false;
  }
  if ((used_ + 1) * 4 > capacity_ * 3) {
    Rehash((live_ + 1) * 2 > capacity_ ? capacity_ * 2 : capacity_);
  }
  bool found;
  const uint32_t i = Find(id, &found);
  if (!found) {
    if (slots_[i] == 0) ++used_;  // a reused tombstone was counted already
    slots_[i] = id;
    ++live_;
  }
  lock_.unlock();
  return true;
}

void WrittenIdSet::Remove(uint64_t id) {
  lock_.lock();
  bool found;
  const uint32_t i = Find(id, &found);
  if (found) {
    slots_[i] = kTombstone;
    --live_;
    if (live_ == 0 && capacity_ == kInlineCapacity) {
      // Cheap here (16 words): a connection with one call at a time never
      // fills up with tombstones.
      for (uint64_t& v : inline_) v = 0;
      used_ = 0;
    }
  }
  lock_.unlock();
}

void WrittenIdSet::Close(std::vector<uint64_t>* out) {
  lock_.lock();
  closed_ = true;
  for (uint32_t i = 0; i < capacity_; ++i) {
    const uint64_t v = slots_[i];
    if (v != 0 && v != kTombstone) out->push_back(v);
    slots_[i] = 0;
  }
  live_ = 0;
  used_ = 0;
  lock_.unlock();
}

void WrittenIdSet::Reset() {
  lock_.lock();
  if (slots_ != inline_) delete[] slots_;
  slots_ = inline_;
  capacity_ = kInlineCapacity;
  for (uint64_t& v : inline_) v = 0;
  live_ = 0;
  used_ = 0;
  closed_ = false;
  lock_.unlock();
}

size_t WrittenIdSet::size() const {
  lock_.lock();
  const size_t n = live_;
  lock_.unlock();
  return n;
}

}  // namespace weft::net_internal
