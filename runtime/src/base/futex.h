// Thin wrappers over the futex(2) system call (process-private).
#ifndef WEFT_BASE_FUTEX_H_
#define WEFT_BASE_FUTEX_H_

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>

namespace weft::base {

// Sleeps while *word == expected, at most `relative` (NULL: forever).
// Returns 0 when woken (possibly spuriously), -1 with errno EAGAIN (the word
// differed), ETIMEDOUT or EINTR.
inline int futex_wait(std::atomic<int>* word, int expected, const timespec* relative) {
  return static_cast<int>(syscall(SYS_futex, reinterpret_cast<int*>(word), FUTEX_WAIT_PRIVATE,
                                  expected, relative, nullptr, 0));
}

// Wakes up to `count` pthreads sleeping on `word`; returns how many woke.
inline int futex_wake(std::atomic<int>* word, int count) {
  return static_cast<int>(syscall(SYS_futex, reinterpret_cast<int*>(word), FUTEX_WAKE_PRIVATE,
                                  count, nullptr, nullptr, 0));
}

}  // namespace weft::base

#endif  // WEFT_BASE_FUTEX_H_
