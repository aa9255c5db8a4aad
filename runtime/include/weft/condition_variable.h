// weft/condition_variable.h: weft::ConditionVariable, a fiber-aware
// condition variable for weft::Mutex. Usable from fibers and pthreads.
#ifndef WEFT_CONDITION_VARIABLE_H_
#define WEFT_CONDITION_VARIABLE_H_

#include <errno.h>
#include <time.h>

#include <mutex>
#include <system_error>

#include "weft/mutex.h"

namespace weft {

class ConditionVariable {
 public:
  ConditionVariable() {
    const int rc = bthread_cond_init(&cond_, nullptr);
    if (rc != 0) throw std::system_error(rc, std::generic_category(), "bthread_cond_init");
  }
  ~ConditionVariable() { bthread_cond_destroy(&cond_); }
  ConditionVariable(const ConditionVariable&) = delete;
  ConditionVariable& operator=(const ConditionVariable&) = delete;

  // Waits for a notification (spurious wake-ups are possible). May suspend.
  void wait(std::unique_lock<Mutex>& lock) {
    bthread_cond_wait(&cond_, lock.mutex()->native_handle());
  }

  template <typename Predicate>
  void wait(std::unique_lock<Mutex>& lock, Predicate pred) {
    while (!pred()) wait(lock);
  }

  // Returns ETIMEDOUT when `abstime` (CLOCK_REALTIME) passed, else 0.
  int wait_until(std::unique_lock<Mutex>& lock, const timespec& abstime) {
    return bthread_cond_timedwait(&cond_, lock.mutex()->native_handle(), &abstime);
  }

  void notify_one() { bthread_cond_signal(&cond_); }
  void notify_all() { bthread_cond_broadcast(&cond_); }
  bthread_cond_t* native_handle() { return &cond_; }

 private:
  bthread_cond_t cond_;
};

}  // namespace weft

#endif  // WEFT_CONDITION_VARIABLE_H_
