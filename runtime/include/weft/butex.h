// weft/butex.h: the futex of fibers.
//
// A butex is a 32-bit word that fibers and pthreads can wait on. A fiber
// that waits is suspended (its worker runs other fibers); a pthread that
// waits blocks in the kernel. Every function may be called from any fiber
// or pthread.
#ifndef WEFT_BUTEX_H_
#define WEFT_BUTEX_H_

#include <time.h>

#include "weft/bthread.h"

namespace weft {

// Allocates a butex whose word is 0. The returned pointer is the word
// itself. Butexes live in a type-stable pool: touching one after
// butex_destroy (as a late waker might) is harmless. NULL when out of memory.
void* butex_create();

template <typename T>
T* butex_create_checked() {
  static_assert(sizeof(T) == sizeof(int), "a butex word is 32 bits");
  return static_cast<T*>(butex_create());
}

// Returns the butex to its pool. No waiter may remain.
void butex_destroy(void* butex);

// If *butex != expected, returns -1 / EWOULDBLOCK at once. Otherwise waits
// until woken (0), `abstime` (CLOCK_REALTIME; NULL = forever) passes
// (-1 / ETIMEDOUT), or the fiber is interrupted or stopped (-1 / EINTR;
// callers tell the two apart with bthread_stopped). May suspend.
int butex_wait(void* butex, int expected, const timespec* abstime);

// Wakes at most one waiter; returns how many were woken.
int butex_wake(void* butex);

// Wakes every waiter; returns how many.
int butex_wake_all(void* butex);

// Wakes every waiter but fiber `excluded`; returns how many.
int butex_wake_except(void* butex, bthread_t excluded);

// Wakes one waiter of `src` and moves the rest to wait on `dst`; returns how
// many were woken (0 or 1).
int butex_requeue(void* src, void* dst);

}  // namespace weft

#endif  // WEFT_BUTEX_H_
