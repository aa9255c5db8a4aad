// WorkStealingQueue: a bounded Chase–Lev deque (D. Chase and Y. Lev,
// "Dynamic Circular Work-Stealing Deque", SPAA 2005), with the C11 memory
// orders of N. M. Lê, A. Pop, A. Cohen and F. Zappa Nardelli, "Correct and
// Efficient Work-Stealing for Weak Memory Models", PPoPP 2013. The two
// store-load fences of that paper are folded into seq_cst operations on
// bottom_/top_ so ThreadSanitizer (which ignores fences) can check it.
//
// Owner: push(), pop() and pop_oldest(), never in parallel with each other.
// Thieves: steal(), in parallel with everything. push and pop are
// wait-free; steal and pop_oldest are lock-free (a failed CAS means another
// thread made progress).
//
// The scheduler's owner takes the oldest item (pop_oldest, FIFO) so old
// fibers are not starved under saturation; locality for the freshest woken
// fiber comes from the worker's separate run-next slot (task_group.h).
#ifndef WEFT_SCHED_WORK_STEALING_QUEUE_H_
#define WEFT_SCHED_WORK_STEALING_QUEUE_H_

#include <stddef.h>
#include <stdint.h>

#include <atomic>
#include <memory>

namespace weft::sched {

template <typename T>
class WorkStealingQueue {
 public:
  // capacity must be a power of two.
  explicit WorkStealingQueue(size_t capacity)
      : mask_(capacity - 1), buffer_(new std::atomic<T>[capacity]) {}

  // Owner only. False when full.
  bool push(T item) {
    const int64_t b = bottom_.load(std::memory_order_relaxed);
    // Acquire pairs with the CAS on top_ in steal()/pop(): a slot is reused
    // only after the thief that took it has read it.
    const int64_t t = top_.load(std::memory_order_acquire);
    if (b - t > static_cast<int64_t>(mask_)) return false;
    buffer_[b & mask_].store(item, std::memory_order_relaxed);
    // Release publishes the item (and everything the owner wrote into it)
    // to thieves that acquire-load bottom_.
    bottom_.store(b + 1, std::memory_order_release);
    return true;
  }

  // Owner only. Takes the newest item (LIFO). False when empty.
  bool pop(T* out) {
    const int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
    // seq_cst store then seq_cst load of top_: the Dekker handshake with
    // steal(), which loads top_ then bottom_. At most one of us takes the
    // last item.
    bottom_.store(b, std::memory_order_seq_cst);
    int64_t t = top_.load(std::memory_order_seq_cst);
    if (t > b) {
      bottom_.store(b + 1, std::memory_order_relaxed);
      return false;
    }
    *out = buffer_[b & mask_].load(std::memory_order_relaxed);
    if (t == b) {
      // The last item: race the thieves for it.
      const bool won = top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                                    std::memory_order_relaxed);
      bottom_.store(b + 1, std::memory_order_relaxed);
      return won;
    }
    return true;
  }

  // Any thread. Takes the oldest item (FIFO). False when empty or when it
  // lost a race.
  bool steal(T* out) {
    int64_t t = top_.load(std::memory_order_seq_cst);
    // Acquire pairs with the release store in push().
    const int64_t b = bottom_.load(std::memory_order_seq_cst);
    if (t >= b) return false;
    T item = buffer_[t & mask_].load(std::memory_order_relaxed);
    if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                      std::memory_order_relaxed)) {
      return false;
    }
    *out = item;
    return true;
  }

  // Owner only. Takes the oldest item (FIFO), racing thieves for it with the
  // same CAS on top_ that steal() uses. False only when the queue is empty:
  // a failed CAS means a thief took that item, so the owner looks again.
  bool pop_oldest(T* out) {
    for (;;) {
      int64_t t = top_.load(std::memory_order_seq_cst);
      const int64_t b = bottom_.load(std::memory_order_seq_cst);
      if (t >= b) return false;
      T item = buffer_[t & mask_].load(std::memory_order_relaxed);
      if (top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                       std::memory_order_relaxed)) {
        *out = item;
        return true;
      }
    }
  }

  // A snapshot; exact only for the owner when no thief runs.
  size_t size_hint() const {
    const int64_t b = bottom_.load(std::memory_order_relaxed);
    const int64_t t = top_.load(std::memory_order_relaxed);
    return b > t ? static_cast<size_t>(b - t) : 0;
  }

  size_t capacity() const { return mask_ + 1; }

 private:
  const size_t mask_;
  std::unique_ptr<std::atomic<T>[]> buffer_;
  alignas(64) std::atomic<int64_t> top_{0};
  alignas(64) std::atomic<int64_t> bottom_{0};
};

}  // namespace weft::sched

#endif  // WEFT_SCHED_WORK_STEALING_QUEUE_H_
