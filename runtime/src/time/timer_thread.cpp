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
// A bucket holding this many timers asks the thread to drain it, so a
// stream of add+del pairs with far deadlines recycles its slots promptly.
constexpr size_t kDrainThreshold = 1024;

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
};

using TimerPool = base::SlotPool<TimerTask>;

struct alignas(64) Bucket {
  base::SpinLock lock;
  TimerTask* head = nullptr;  // guarded by lock
  size_t count = 0;           // guarded by lock: timers since the last drain
  int64_t nearest = base::kNoDeadline;  // guarded by lock
  // For timers_pending(): adds and successful dels by the threads that use
  // this bucket. Kept here, not in one shared word, so adders on different
  // buckets never share a cache line.
  int64_t added = 0;                 // guarded by lock
  std::atomic<int64_t> deleted{0};   // relaxed
};

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
    TimerPool& pool = TimerPool::instance();
    const uint32_t slot = pool.alloc();
    if (slot == TimerPool::kInvalid) return ENOMEM;
    TimerTask* task = pool.at(slot);
    task->slot = slot;
    task->deadline = deadline;
    task->fn = fn;
    task->arg = arg;
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
    bucket.lock.lock();
    task->next = bucket.head;
    bucket.head = task;
    if (deadline < bucket.nearest) {
      bucket.nearest = deadline;
      earliest_in_bucket = true;
    }
    ++bucket.added;
    // Ask once per kDrainThreshold adds, not on every add until the thread
    // has caught up.
    drain = ++bucket.count % kDrainThreshold == 0;
    bucket.lock.unlock();

    if (earliest_in_bucket || drain) {
      std::lock_guard<std::mutex> guard(mu_);
      if (deadline < nearest_ || drain) {
        if (deadline < nearest_) nearest_ = deadline;
        if (deadline < hint_.load(std::memory_order_relaxed)) {
          hint_.store(deadline, std::memory_order_relaxed);
        }
        wake_seq_.fetch_add(1, std::memory_order_release);
        base::futex_wake(&wake_seq_, 1);
      }
    }
    return 0;
  }

  int del(uint64_t id) {
    const uint32_t slot = static_cast<uint32_t>(id);
    const uint32_t version = static_cast<uint32_t>(id >> 32);
    if (version == 0 || version % kStates != 0) return EINVAL;
    TimerTask* task = TimerPool::instance().at(slot);
    if (task == nullptr || slot >= TimerPool::instance().allocated()) return EINVAL;
    uint32_t current = task->version.load(std::memory_order_acquire);
    if (current == version + kPending) {
      if (task->version.compare_exchange_strong(current, version + kDeleted,
                                                std::memory_order_acq_rel)) {
        buckets_[bucket_index()].deleted.fetch_add(1, std::memory_order_relaxed);
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

  static int bucket_index() {
    static std::atomic<int> next{0};
    static thread_local int index = next.fetch_add(1, std::memory_order_relaxed) % kBuckets;
    return index;
  }

  static void recycle(TimerTask* task) { TimerPool::instance().free(task->slot); }

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
    for (Bucket& bucket : buckets_) {
      bucket.lock.lock();
      TimerTask* list = bucket.head;
      bucket.head = nullptr;
      bucket.count = 0;
      bucket.nearest = base::kNoDeadline;
      bucket.lock.unlock();
      while (list != nullptr) {
        TimerTask* task = list;
        list = list->next;
        const uint32_t v = task->version.load(std::memory_order_acquire);
        const uint32_t base_version = v - v % kStates;
        if (v % kStates == kDeleted) {
          recycle(task);
          continue;
        }
        heap_.push_back(HeapEntry{task->deadline, seq_++, task, base_version});
        std::push_heap(heap_.begin(), heap_.end(), std::greater<HeapEntry>());
      }
    }
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
  std::vector<HeapEntry> heap_;  // timer thread only
  uint64_t seq_ = 0;
  std::atomic<uint64_t> fired_{0};
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

}  // namespace weft::timer
