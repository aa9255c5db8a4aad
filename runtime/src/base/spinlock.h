// A test-and-test-and-set spinlock for critical sections of a few dozen
// instructions (butex waiter lists, timer buckets). Never held across a
// context switch or a system call.
#ifndef WEFT_BASE_SPINLOCK_H_
#define WEFT_BASE_SPINLOCK_H_

#include <sched.h>

#include <atomic>

#include "base/compiler.h"

namespace weft::base {

class SpinLock {
 public:
  void lock() {
    for (int spins = 0;; ++spins) {
      // The acquire exchange pairs with the release store in unlock().
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      while (locked_.load(std::memory_order_relaxed)) {
        if (spins++ < 64) {
          cpu_relax();
        } else {
          // The holder may have been preempted: let it run.
          sched_yield();
        }
      }
    }
  }
  bool try_lock() { return !locked_.exchange(true, std::memory_order_acquire); }
  void unlock() { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

}  // namespace weft::base

#endif  // WEFT_BASE_SPINLOCK_H_
