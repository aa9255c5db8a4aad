// RedisStore: weft-redis' in-memory keyspace (strings only).
//
// Keys are spread over shards by hash; each shard is a hash map under its
// own fiber mutex (weft::Mutex: a command waiting for a shard suspends its
// fiber, not its worker), held only for the map operation itself. Expiry is
// lazy (a read or write of an expired key removes it first) plus a sweep
// (SweepExpired, run periodically by the server) that removes expired keys
// nobody touches, a bounded number per call so no shard is held long.
//
// Times are CLOCK_MONOTONIC milliseconds, passed in by the caller as a
// NowMs: the clock itself, read only if the call meets an expiry, or a fixed
// time (tests drive the clock that way). Every method may run in parallel
// with every other, from fibers or pthreads; each may suspend on a shard
// mutex.
#ifndef WEFT_TOOLS_WEFT_REDIS_REDIS_STORE_H_
#define WEFT_TOOLS_WEFT_REDIS_REDIS_STORE_H_

#include <stddef.h>
#include <stdint.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "weft/mutex.h"

namespace weft::redis_tool {

// CLOCK_MONOTONIC milliseconds (the store's clock).
int64_t MonotonicMs();

// A call's "now": read from the clock at most once, and only when first
// asked for. Most keys have no expiry, so most calls never read it (one
// clock read per GET was about 3 % of a pipelined GET's CPU). One NowMs
// serves every key of a multi-key command, so they all see one time, as
// they did when the command read the clock up front. Not shared between
// threads: each call makes its own.
class NowMs {
 public:
  // A fixed time. Implicit, so tests pass plain milliseconds.
  NowMs(int64_t fixed_ms) : ms_(fixed_ms), read_(true) {}  // NOLINT(runtime/explicit)
  static NowMs Clock() { return NowMs(); }

  int64_t get() const {
    if (!read_) {
      ms_ = MonotonicMs();
      read_ = true;
    }
    return ms_;
  }
  // Whether get() read the clock (or the time was fixed): for tests.
  bool was_read() const { return read_; }

 private:
  NowMs() = default;
  // Filled in by the first get() through a const reference: store calls take
  // `const NowMs&` so a temporary binds.
  mutable int64_t ms_ = 0;
  mutable bool read_ = false;
};

class RedisStore {
 public:
  static constexpr size_t kDefaultShards = 64;
  // No expiry.
  static constexpr int64_t kNoExpiry = 0;

  explicit RedisStore(size_t shards = kDefaultShards);

  // The value, or false when the key is missing (or expired).
  bool Get(std::string_view key, const NowMs& now, std::string* value);
  // Calls visit(std::string_view value) in place of a copy (a GET's reply
  // is built straight from the entry: a value past 15 bytes cost a malloc
  // and a free per GET), or returns false when the key is missing (or
  // expired). visit runs under the key's shard mutex, so it must not call
  // the store, and the view is dead once it returns.
  template <typename Visit>
  bool Read(std::string_view key, const NowMs& now, Visit&& visit) {
    size_t hash = 0;
    Shard& s = ShardOf(key, &hash);
    std::lock_guard<Mutex> guard(s.mu);
    const Entry* e = FindLive(s, key, hash, now);
    if (e == nullptr) return false;
    visit(std::string_view(e->value));
    return true;
  }

  enum class SetCondition { kAlways, kIfMissing, kIfPresent };
  // Sets key to value with an absolute expiry (kNoExpiry: none). False
  // (nothing changed) when the condition does not hold.
  bool Set(std::string_view key, std::string_view value, int64_t expire_at_ms, SetCondition cond,
           const NowMs& now);
  // Sets every pair at once: no reader sees some set and not others (the
  // shards involved are locked together, in index order).
  void MultiSet(const std::vector<std::pair<std::string_view, std::string_view>>& pairs);

  bool Delete(std::string_view key, const NowMs& now);
  bool Exists(std::string_view key, const NowMs& now);

  enum class IncrResult { kOk, kNotInteger, kOverflow };
  // Adds delta to the integer in key (a missing key counts as 0), keeping
  // its expiry; *result is the new value.
  IncrResult IncrBy(std::string_view key, int64_t delta, const NowMs& now, int64_t* result);

  // Sets an absolute expiry on an existing key (one at or before now
  // deletes it). False when the key is missing.
  bool ExpireAt(std::string_view key, int64_t at_ms, const NowMs& now);
  // Milliseconds left: -2 when missing, -1 when it has no expiry.
  int64_t PttlMs(std::string_view key, const NowMs& now);

  // Keys held (expired ones not yet removed included, as Redis' DBSIZE),
  // and how many of them have an expiry.
  size_t Size() const;
  size_t ExpiringCount() const;
  void Clear();

  // Removes up to `budget` expired keys, scanning on from where the last
  // call stopped. Returns how many were removed.
  size_t SweepExpired(int64_t now_ms, size_t budget);

 private:
  struct Entry {
    std::string value;
    int64_t expire_at_ms = kNoExpiry;
  };
  // The map's hash: std::hash, except for the shard's scratch key, whose
  // hash was already taken to choose the shard (one hash per lookup, not
  // two: each was about 2.5 % of a pipelined GET's instructions). Same
  // value either way, so the map's buckets do not depend on which path
  // hashed a key.
  struct KeyHash {
    const std::string* scratch;
    const size_t* scratch_hash;
    size_t operator()(const std::string& key) const {
      return &key == scratch ? *scratch_hash : std::hash<std::string>()(key);
    }
  };
  using Map = std::unordered_map<std::string, Entry, KeyHash>;
  struct Shard {
    mutable Mutex mu;
    // Guarded by mu. A key copied into scratch for lookups (C++17 maps have
    // no string_view find); it keeps its capacity, so a lookup allocates
    // nothing. scratch_hash is always scratch's std::hash (Aim sets both).
    std::string scratch;
    size_t scratch_hash = 0;
    Map map{0, KeyHash{&scratch, &scratch_hash}};
    size_t expiring = 0;
    size_t sweep_bucket = 0;

    void Aim(std::string_view key, size_t hash) {
      // clear + append: cheaper than assign (which must allow an
      // overlapping source), and the capacity is kept either way.
      scratch.clear();
      scratch.append(key.data(), key.size());
      scratch_hash = hash;
    }
  };

  // key's shard, and key's hash (for FindLive).
  Shard& ShardOf(std::string_view key, size_t* hash);
  size_t ShardIndex(std::string_view key) const;
  // The live entry of key (hash: its std::hash), removing it if expired;
  // mu held. Leaves s aimed at key, so s.map.find(s.scratch) and
  // s.map.try_emplace(s.scratch) reuse the hash.
  static Entry* FindLive(Shard& s, std::string_view key, size_t hash, const NowMs& now);
  static void EraseLocked(Shard& s, Map::iterator it);

  std::vector<std::unique_ptr<Shard>> shards_;
  // The shard SweepExpired resumes at; touched only by the sweeping fiber
  // (one at a time, by the server's contract).
  size_t sweep_shard_ = 0;
};

}  // namespace weft::redis_tool

#endif  // WEFT_TOOLS_WEFT_REDIS_REDIS_STORE_H_
