#include "redis_store.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include <algorithm>
#include <functional>
#include <mutex>

namespace weft::redis_tool {

namespace {

// The integer a Redis string holds, as Redis reads it (strict: no spaces,
// no '+', no leading zeros beyond "0", fits in int64).
bool StringToInt64(std::string_view s, int64_t* v) {
  if (s.empty() || s.size() > 20) return false;
  if (s.size() > 1 && s[0] == '0') return false;
  if (s[0] == '-' && (s.size() == 1 || s[1] == '0')) return false;
  char buf[24];
  s.copy(buf, s.size());
  buf[s.size()] = '\0';
  for (size_t i = s[0] == '-' ? 1 : 0; i < s.size(); ++i) {
    if (buf[i] < '0' || buf[i] > '9') return false;
  }
  errno = 0;
  char* end = nullptr;
  const long long r = strtoll(buf, &end, 10);
  if (errno == ERANGE || end != buf + s.size()) return false;
  *v = r;
  return true;
}

}  // namespace

RedisStore::RedisStore(size_t shards) {
  if (shards == 0) shards = 1;
  for (size_t i = 0; i < shards; ++i) shards_.push_back(std::make_unique<Shard>());
}

size_t RedisStore::ShardIndex(std::string_view key) const {
  return std::hash<std::string_view>()(key) % shards_.size();
}

RedisStore::Shard& RedisStore::ShardOf(std::string_view key, size_t* hash) {
  *hash = std::hash<std::string_view>()(key);
  return *shards_[*hash % shards_.size()];
}

int64_t MonotonicMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

RedisStore::Entry* RedisStore::FindLive(Shard& s, std::string_view key, size_t hash,
                                        const NowMs& now) {
  s.Aim(key, hash);
  auto it = s.map.find(s.scratch);
  if (it == s.map.end()) return nullptr;
  if (it->second.expire_at_ms != kNoExpiry && it->second.expire_at_ms <= now.get()) {
    EraseLocked(s, it);
    return nullptr;
  }
  return &it->second;
}

void RedisStore::EraseLocked(Shard& s, Map::iterator it) {
  if (it->second.expire_at_ms != kNoExpiry) --s.expiring;
  s.map.erase(it);
}

bool RedisStore::Get(std::string_view key, const NowMs& now, std::string* value) {
  return Read(key, now, [value](std::string_view v) { value->assign(v.data(), v.size()); });
}

bool RedisStore::Set(std::string_view key, std::string_view value, int64_t expire_at_ms,
                     SetCondition cond, const NowMs& now) {
  size_t hash = 0;
  Shard& s = ShardOf(key, &hash);
  std::lock_guard<Mutex> guard(s.mu);
  Entry* e = FindLive(s, key, hash, now);
  if ((cond == SetCondition::kIfMissing && e != nullptr) ||
      (cond == SetCondition::kIfPresent && e == nullptr)) {
    return false;
  }
  if (e == nullptr) e = &s.map.try_emplace(s.scratch).first->second;
  if (e->expire_at_ms != kNoExpiry) --s.expiring;
  e->value.assign(value.data(), value.size());
  e->expire_at_ms = expire_at_ms;
  if (expire_at_ms != kNoExpiry) ++s.expiring;
  return true;
}

void RedisStore::MultiSet(const std::vector<std::pair<std::string_view, std::string_view>>& pairs) {
  std::vector<size_t> idx;
  idx.reserve(pairs.size());
  for (const auto& p : pairs) idx.push_back(ShardIndex(p.first));
  std::vector<size_t> order(idx);
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());
  // Locked in index order: two MultiSets cannot deadlock.
  for (size_t i : order) shards_[i]->mu.lock();
  for (size_t k = 0; k < pairs.size(); ++k) {
    Shard& s = *shards_[idx[k]];
    Entry& e = s.map[std::string(pairs[k].first)];
    if (e.expire_at_ms != kNoExpiry) --s.expiring;
    e.value.assign(pairs[k].second.data(), pairs[k].second.size());
    e.expire_at_ms = kNoExpiry;  // MSET clears any expiry, as SET does
  }
  for (auto it = order.rbegin(); it != order.rend(); ++it) shards_[*it]->mu.unlock();
}

bool RedisStore::Delete(std::string_view key, const NowMs& now) {
  size_t hash = 0;
  Shard& s = ShardOf(key, &hash);
  std::lock_guard<Mutex> guard(s.mu);
  if (FindLive(s, key, hash, now) == nullptr) return false;
  EraseLocked(s, s.map.find(s.scratch));
  return true;
}

bool RedisStore::Exists(std::string_view key, const NowMs& now) {
  size_t hash = 0;
  Shard& s = ShardOf(key, &hash);
  std::lock_guard<Mutex> guard(s.mu);
  return FindLive(s, key, hash, now) != nullptr;
}

RedisStore::IncrResult RedisStore::IncrBy(std::string_view key, int64_t delta, const NowMs& now,
                                          int64_t* result) {
  size_t hash = 0;
  Shard& s = ShardOf(key, &hash);
  std::lock_guard<Mutex> guard(s.mu);
  Entry* e = FindLive(s, key, hash, now);
  int64_t cur = 0;
  if (e != nullptr && !StringToInt64(e->value, &cur)) return IncrResult::kNotInteger;
  if ((delta > 0 && cur > INT64_MAX - delta) || (delta < 0 && cur < INT64_MIN - delta)) {
    return IncrResult::kOverflow;
  }
  cur += delta;
  if (e == nullptr) e = &s.map.try_emplace(s.scratch).first->second;
  e->value = std::to_string(cur);
  *result = cur;
  return IncrResult::kOk;
}

bool RedisStore::ExpireAt(std::string_view key, int64_t at_ms, const NowMs& now) {
  size_t hash = 0;
  Shard& s = ShardOf(key, &hash);
  std::lock_guard<Mutex> guard(s.mu);
  Entry* e = FindLive(s, key, hash, now);
  if (e == nullptr) return false;
  if (at_ms <= now.get()) {
    EraseLocked(s, s.map.find(s.scratch));
    return true;
  }
  if (e->expire_at_ms == kNoExpiry) ++s.expiring;
  e->expire_at_ms = at_ms;
  return true;
}

int64_t RedisStore::PttlMs(std::string_view key, const NowMs& now) {
  size_t hash = 0;
  Shard& s = ShardOf(key, &hash);
  std::lock_guard<Mutex> guard(s.mu);
  Entry* e = FindLive(s, key, hash, now);
  if (e == nullptr) return -2;
  if (e->expire_at_ms == kNoExpiry) return -1;
  return e->expire_at_ms - now.get();
}

size_t RedisStore::Size() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard<Mutex> guard(s->mu);
    n += s->map.size();
  }
  return n;
}

size_t RedisStore::ExpiringCount() const {
  size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard<Mutex> guard(s->mu);
    n += s->expiring;
  }
  return n;
}

void RedisStore::Clear() {
  for (const auto& s : shards_) {
    std::lock_guard<Mutex> guard(s->mu);
    s->map.clear();
    s->expiring = 0;
  }
}

size_t RedisStore::SweepExpired(int64_t now_ms, size_t budget) {
  size_t removed = 0;
  size_t scanned = 0;
  // Visits at most every shard once; within a shard, whole buckets from
  // where its last sweep stopped, until `budget` entries were looked at.
  for (size_t n = 0; n < shards_.size() && scanned < budget; ++n) {
    Shard& s = *shards_[sweep_shard_];
    {
      std::lock_guard<Mutex> guard(s.mu);
      if (s.expiring > 0) {
        const size_t buckets = s.map.bucket_count();
        if (s.sweep_bucket >= buckets) s.sweep_bucket = 0;
        std::vector<std::string> dead;
        while (scanned < budget) {
          for (auto it = s.map.begin(s.sweep_bucket); it != s.map.end(s.sweep_bucket); ++it) {
            ++scanned;
            const int64_t at = it->second.expire_at_ms;
            if (at != kNoExpiry && at <= now_ms) dead.push_back(it->first);
          }
          if (++s.sweep_bucket >= buckets) {
            s.sweep_bucket = 0;
            break;  // this shard is done for this round
          }
        }
        for (const std::string& k : dead) {
          auto it = s.map.find(k);
          if (it != s.map.end()) EraseLocked(s, it);
        }
        removed += dead.size();
        if (scanned >= budget && s.sweep_bucket != 0) break;  // resume in this shard
      }
    }
    sweep_shard_ = (sweep_shard_ + 1) % shards_.size();
  }
  return removed;
}

}  // namespace weft::redis_tool
