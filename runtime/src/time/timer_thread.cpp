#include "time/timer_thread.h"

#include <errno.h>
#include <sys/prctl.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "base/compiler.h"
#include "base/futex.h"
#include "base/slot_pool.h"
#include "base/spinlock.h"
#include "base/time_util.h"

namespace weft::timer {
namespace {

constexpr uint32_t kPending = 0, kRunning = 1, kRan = 2, kDeleted = 3, kStates = 4;
constexpr int kBuckets = 13;
// A bucket holding this many timers asks the thread to drain it, so
// deleted timers stuck behind live ones in a bucket are reclaimed promptly.
constexpr size_t kDrainThreshold = 1024;
// Every this many deletions of timers already in the heap (per bucket of
// deleters) the thread is woken to consider compacting its heap.
constexpr int64_t kCompactCheck = 1024;

struct TimerTask {
  // version - (version % kStates) is the id's version; the remainder is the
  // state. Every transition is a CAS or a store by the only party allowed
  // to make it (see the header).
  std::atomic<uint32_t> version{0};
  int64_t deadline = 0;
  void (*fn)(void*) = nullptr;
  void* arg = nullptr;
  uint32_t slot = 0;
  TimerTask* next = nullptr;  // bucket list link
  // Set by the timer thread when it takes the task out of its bucket (false
  // from the add until then). Read by a successful del to learn whether the
  // task may be in the heap, which is what heap compaction counts.
  std::atomic<bool> in_heap{false};
};

using TimerPool = base::SlotPool<TimerTask>;

struct alignas(64) Bucket {
  base::SpinLock lock;
  TimerTask* head = nullptr;            // guarded by lock
  size_t count = 0;                     // guarded by lock: timers in the list
  bool drain_asked = false;             // guarded by lock: since the last drain
  int64_t nearest = base::kNoDeadline;  // guarded by lock
  // For timers_pending(): adds and successful dels by the threads that use
  // this bucket. Kept here, not in one shared word, so adders on different
  // buckets never share a cache line.
  int64_t added = 0;                // guarded by lock
  std::atomic<int64_t> deleted{0};  // relaxed
  // Successful dels that found the task taken by the timer thread (so
  // possibly in its heap). The release increment pairs with the acquire
  // load in maybe_compact(): a counted deletion's CAS is visible to it.
  std::atomic<int64_t> heap_deleted{0};
};

// The calling thread's bucket, picked on first use. A trivial thread-local
// defined here, so reading it is one TLS load (no init-guard call).
thread_local int tls_bucket = -1;
std::atomic<int> g_next_bucket{0};

int bucket_index() {
  int i = tls_bucket;
  if (WEFT_UNLIKELY(i < 0)) {
    i = g_next_bucket.fetch_add(1, std::memory_order_relaxed) % kBuckets;
    tls_bucket = i;
  }
  return i;
}

uint32_t state_of(uint32_t version) { return version % kStates; }

uint64_t make_id(uint32_t version, uint32_t slot) {
  return (static_cast<uint64_t>(version) << 32) | slot;
}

class TimerThread {
 public:
  static TimerThread& instance() {
    static TimerThread* t = new TimerThread;  // leaked: runs until exit
    return *t;
  }

  int add(uint64_t* id, int64_t deadline, void (*fn)(void*), void* arg) {
    TimerPool& pool = *pool_;
    const uint32_t slot = pool.alloc();
    if (slot == TimerPool::kInvalid) return ENOMEM;
    TimerTask* task = pool.at(slot);
    task->slot = slot;
    task->deadline = deadline;
    task->fn = fn;
    task->arg = arg;
    // Published to the timer thread by the bucket lock; to a del by the
    // release store of the version below.
    task->in_heap.store(false, std::memory_order_relaxed);
    // A free slot keeps the state of its last use until now, so a late del
    // of that use still answers right; the new use gets the next version.
    const uint32_t last = task->version.load(std::memory_order_relaxed);
    uint32_t version = last - last % kStates + kStates;
    if (version == 0) version = kStates;  // wrapped
    task->version.store(version, std::memory_order_release);
    *id = make_id(version, slot);

    Bucket& bucket = buckets_[bucket_index()];
    bool earliest_in_bucket = false;
    bool drain = false;
    TimerTask* reclaimed = nullptr;
    bucket.lock.lock();
    // Deleted timers at the head of the list leave it now: the common
    // add, wait, del pattern leaves the previous timer there, deleted, and
    // so add+del pairs never reach the timer thread. Only the list's holder
    // touches a listed task's links, and a deleted task has no other user:
    // its del's last touch, the in_heap load after the CAS, may read the
    // flag of the slot's next use, which at worst over-counts heap garbage
    // (harmless: it only makes the next compaction check come earlier).
    while (bucket.head != nullptr &&
           state_of(bucket.head->version.load(std::memory_order_acquire)) == kDeleted) {
      TimerTask* dead = bucket.head;
      bucket.head = dead->next;
      dead->next = reclaimed;
      reclaimed = dead;
      --bucket.count;
    }
    task->next = bucket.head;
    bucket.head = task;
    if (deadline < bucket.nearest) {
      bucket.nearest = deadline;
      earliest_in_bucket = true;
    }
    ++bucket.added;
    // Ask once until the thread has drained the bucket, not on every add.
    if (++bucket.count >= kDrainThreshold && !bucket.drain_asked) {
      bucket.drain_asked = true;
      drain = true;
    }
    bucket.lock.unlock();
    while (reclaimed != nullptr) {
      TimerTask* dead = reclaimed;
      reclaimed = dead->next;
      recycle(dead);
    }

    if (earliest_in_bucket || drain) {
      std::lock_guard<std::mutex> guard(mu_);
      if (deadline < nearest_ || drain) {
        if (deadline < nearest_) nearest_ = deadline;
        if (deadline < hint_.load(std::memory_order_relaxed)) {
          hint_.store(deadline, std::memory_order_relaxed);
        }
        wake_locked();
      }
    }
    return 0;
  }

  int del(uint64_t id) {
    const uint32_t slot = static_cast<uint32_t>(id);
    const uint32_t version = static_cast<uint32_t>(id >> 32);
    if (version == 0 || version % kStates != 0) return EINVAL;
    if (slot >= pool_->allocated()) return EINVAL;
    TimerTask* task = pool_->at(slot);
    if (task == nullptr) return EINVAL;
    uint32_t current = task->version.load(std::memory_order_acquire);
    if (current == version + kPending) {
      // seq_cst CAS, then the seq_cst load of in_heap: with pull_buckets()'s
      // seq_cst store of in_heap and then load of the version, either the
      // thread sees this deletion (and never heaps the task) or we see
      // in_heap and count the deletion as heap garbage. Never neither.
      if (task->version.compare_exchange_strong(current, version + kDeleted,
                                                std::memory_order_seq_cst)) {
        Bucket& bucket = buckets_[bucket_index()];
        bucket.deleted.fetch_add(1, std::memory_order_relaxed);
        if (task->in_heap.load(std::memory_order_seq_cst)) {
          const int64_t n = bucket.heap_deleted.fetch_add(1, std::memory_order_release) + 1;
          if (n % kCompactCheck == 0) {
            std::lock_guard<std::mutex> guard(mu_);
            wake_locked();
          }
        }
        return 0;
      }
    }
    if (current == version + kRunning || current == version + kRan) return 1;
    if (current == version + kDeleted) return EINVAL;
    // Reused since: the id is older than the slot's current use. Versions
    // only grow, so an id ahead of the slot was never issued.
    if (static_cast<int32_t>(current - version) > 0) return 1;
    return EINVAL;
  }

  uint64_t fired() const { return fired_.load(std::memory_order_relaxed); }
  TimerStats stats() const {
    return TimerStats{heap_entries_.load(std::memory_order_relaxed),
                      pulled_.load(std::memory_order_relaxed), pool_->allocated()};
  }
  int64_t hint() const { return hint_.load(std::memory_order_relaxed); }
  int64_t pending() {
    int64_t n = -static_cast<int64_t>(fired());
    for (Bucket& b : buckets_) {
      b.lock.lock();
      n += b.added;
      b.lock.unlock();
      n -= b.deleted.load(std::memory_order_relaxed);
    }
    return n;
  }

 private:
  TimerThread() {
    thread_ = std::thread([this] { run(); });
    thread_.detach();
  }

  // Wakes the thread. mu_ held: the thread resets nearest_ under it before
  // it looks at the buckets, so a wake-up is never lost.
  void wake_locked() {
    wake_seq_.fetch_add(1, std::memory_order_release);
    base::futex_wake(&wake_seq_, 1);
  }

  // Any thread that owns the task: an adder that unlinked it deleted, or the
  // timer thread.
  void recycle(TimerTask* task) { pool_->free(task->slot); }

  struct HeapEntry {
    int64_t deadline;
    uint64_t seq;  // ties fire in insertion order
    TimerTask* task;
    uint32_t version;
    bool operator>(const HeapEntry& o) const {
      return deadline != o.deadline ? deadline > o.deadline : seq > o.seq;
    }
  };

  void pull_buckets() {
    uint64_t pulled = 0;
    for (Bucket& bucket : buckets_) {
      bucket.lock.lock();
      TimerTask* list = bucket.head;
      bucket.head = nullptr;
      bucket.count = 0;
      bucket.drain_asked = false;
      bucket.nearest = base::kNoDeadline;
      bucket.lock.unlock();
      while (list != nullptr) {
        TimerTask* task = list;
        list = list->next;
        // See del(): the store, then the load, both seq_cst.
        task->in_heap.store(true, std::memory_order_seq_cst);
        const uint32_t v = task->version.load(std::memory_order_seq_cst);
        const uint32_t base_version = v - v % kStates;
        if (v % kStates == kDeleted) {
          // Its del may have counted it as heap garbage: an over-count,
          // undone by the next compaction.
          recycle(task);
          continue;
        }
        heap_.push_back(HeapEntry{task->deadline, seq_++, task, base_version});
        std::push_heap(heap_.begin(), heap_.end(), std::greater<HeapEntry>());
        ++pulled;
      }
    }
    pulled_.store(pulled_.load(std::memory_order_relaxed) + pulled, std::memory_order_relaxed);
  }

  // Deleted entries stay in the heap until their deadline or a compaction.
  // Compacting when they are more than half of it keeps the heap (and the
  // slots it holds) within twice the live timers, plus the deletions not yet
  // reported (fewer than kCompactCheck per bucket); each compaction is O(n)
  // and follows at least n/2 deletions, so O(1) per deletion.
  void maybe_compact() {
    int64_t counted = 0;
    for (const Bucket& b : buckets_) counted += b.heap_deleted.load(std::memory_order_acquire);
    const int64_t garbage = counted - heap_garbage_seen_;
    if (garbage <= 0 || static_cast<size_t>(garbage) * 2 <= heap_.size()) return;
    size_t kept = 0;
    for (const HeapEntry& e : heap_) {
      // Only this thread recycles heaped tasks, so the slot still holds the
      // entry's use: deleted is final for it.
      if (e.task->version.load(std::memory_order_acquire) == e.version + kDeleted) {
        recycle(e.task);
        continue;
      }
      heap_[kept++] = e;
    }
    heap_.resize(kept);
    std::make_heap(heap_.begin(), heap_.end(), std::greater<HeapEntry>());
    // Every deletion counted so far had made its CAS (release/acquire on
    // the counters), so the pass above removed it.
    heap_garbage_seen_ = counted;
    if (heap_.capacity() > 4 * kept + 1024) heap_.shrink_to_fit();
  }

  void run_expired() {
    const int64_t now = base::monotonic_ns();
    while (!heap_.empty() && heap_.front().deadline <= now) {
      std::pop_heap(heap_.begin(), heap_.end(), std::greater<HeapEntry>());
      HeapEntry e = heap_.back();
      heap_.pop_back();
      uint32_t expected = e.version + kPending;
      // The CAS decides between us and a concurrent del.
      if (e.task->version.compare_exchange_strong(expected, e.version + kRunning,
                                                  std::memory_order_acq_rel)) {
        e.task->fn(e.task->arg);
        // Single writer: a plain increment, published relaxed.
        fired_.store(fired_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        // "ran" until the slot is reused, so del keeps answering 1.
        e.task->version.store(e.version + kRan, std::memory_order_release);
        recycle(e.task);
      } else {
        // Deleted while heaped: its del counted it (see del()).
        ++heap_garbage_seen_;
        recycle(e.task);
      }
    }
  }

  void run() {
    prctl(PR_SET_NAME, "weft_timer");
    // The default 50 us timer slack would dominate bthread_usleep latency.
    prctl(PR_SET_TIMERSLACK, 1UL);
    for (;;) {
      {
        // From here until we publish a new nearest_, every add signals us:
        // nothing added while we work can be missed.
        std::lock_guard<std::mutex> guard(mu_);
        nearest_ = base::kNoDeadline;
      }
      const int seen = wake_seq_.load(std::memory_order_acquire);
      pull_buckets();
      run_expired();
      maybe_compact();
      heap_entries_.store(static_cast<int64_t>(heap_.size()), std::memory_order_relaxed);
      int64_t next = heap_.empty() ? base::kNoDeadline : heap_.front().deadline;
      {
        std::lock_guard<std::mutex> guard(mu_);
        nearest_ = next;
        hint_.store(next, std::memory_order_relaxed);
      }
      if (wake_seq_.load(std::memory_order_acquire) != seen) continue;
      const timespec* prel = nullptr;
      timespec rel;
      if (next != base::kNoDeadline) {
        const int64_t left = next - base::monotonic_ns();
        if (left <= 0) continue;
        rel = base::ns_to_timespec(left);
        prel = &rel;
      }
      base::futex_wait(&wake_seq_, seen, prel);
    }
  }

  Bucket buckets_[kBuckets];
  std::mutex mu_;
  int64_t nearest_ = base::kNoDeadline;  // guarded by mu_
  std::atomic<int> wake_seq_{0};
  std::atomic<int64_t> hint_{base::kNoDeadline};
  TimerPool* const pool_ = &TimerPool::instance();
  std::vector<HeapEntry> heap_;  // timer thread only
  uint64_t seq_ = 0;
  // Heap deletions accounted for: reclaimed at their deadline, or up to the
  // count the last compaction saw. Timer thread only.
  int64_t heap_garbage_seen_ = 0;
  std::atomic<uint64_t> fired_{0};
  // For timer_stats(); single writer (the timer thread), relaxed.
  std::atomic<int64_t> heap_entries_{0};
  std::atomic<uint64_t> pulled_{0};
  std::thread thread_;
};

}  // namespace

int timer_add(uint64_t* id, int64_t deadline, void (*fn)(void*), void* arg) {
  return TimerThread::instance().add(id, deadline, fn, arg);
}

int timer_del(uint64_t id) { return TimerThread::instance().del(id); }

uint64_t timers_fired() { return TimerThread::instance().fired(); }
int64_t next_deadline_hint() { return TimerThread::instance().hint(); }
int64_t timers_pending() { return TimerThread::instance().pending(); }
TimerStats timer_stats() { return TimerThread::instance().stats(); }

}  // namespace weft::timer
