// weft/mutex.h: weft::Mutex, a fiber-aware mutex that satisfies the
// standard Lockable requirements, so std::lock_guard, std::unique_lock and
// std::condition_variable_any work with it. Usable from fibers and pthreads.
#ifndef WEFT_MUTEX_H_
#define WEFT_MUTEX_H_

#include <system_error>

#include "weft/bthread.h"

namespace weft {

class Mutex {
 public:
  using native_handle_type = bthread_mutex_t*;

  Mutex() {
    const int rc = bthread_mutex_init(&mutex_, nullptr);
    if (rc != 0) throw std::system_error(rc, std::generic_category(), "bthread_mutex_init");
  }
  ~Mutex() { bthread_mutex_destroy(&mutex_); }
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  // May suspend the calling fiber.
  void lock() { bthread_mutex_lock(&mutex_); }
  bool try_lock() { return bthread_mutex_trylock(&mutex_) == 0; }
  void unlock() { bthread_mutex_unlock(&mutex_); }
  bthread_mutex_t* native_handle() { return &mutex_; }

 private:
  bthread_mutex_t mutex_;
};

}  // namespace weft

#endif  // WEFT_MUTEX_H_
