#include "weft/countdown_event.h"

#include <errno.h>

#include <climits>
#include <new>

#include "sync/sync_util.h"
#include "weft/butex.h"

namespace weft {

using sync::atomic_at;
using sync::butex_at;

CountdownEvent::CountdownEvent(int initial_count) : butex_(butex_create_checked<int>()) {
  if (butex_ == nullptr) throw std::bad_alloc();
  atomic_at(butex_)->store(initial_count, std::memory_order_relaxed);
}

CountdownEvent::~CountdownEvent() { butex_destroy(butex_); }

void CountdownEvent::signal(int sig) {
  // `butex_` is read before the fetch_sub: once the count reaches zero a
  // waiter may return and destroy *this. The butex itself is type-stable, so
  // a wake on it after that is at worst a spurious wake-up of its next user.
  int* const word = butex_;
  // Release pairs with the acquire load in wait: what the signaller did is
  // visible to the waiters it releases.
  const int prev = atomic_at(word)->fetch_sub(sig, std::memory_order_release);
  if (prev - sig <= 0) wait::butex_wake_some(butex_at(word), INT_MAX, 0);
}

int CountdownEvent::wait() {
  int* const word = butex_;
  bool swallowed = false;
  for (;;) {
    const int v = atomic_at(word)->load(std::memory_order_acquire);
    if (v <= 0) break;
    if (wait::butex_wait_until(butex_at(word), v, base::kNoDeadline) != 0 && errno == EINTR) {
      swallowed = true;
    }
  }
  if (swallowed) sync::rearm_interrupt();
  return 0;
}

int CountdownEvent::timed_wait(const timespec& abstime) {
  int* const word = butex_;
  const int64_t deadline = sync::deadline_of(&abstime);
  bool swallowed = false;
  int rc = 0;
  for (;;) {
    const int v = atomic_at(word)->load(std::memory_order_acquire);
    if (v <= 0) break;
    if (wait::butex_wait_until(butex_at(word), v, deadline) != 0) {
      const int err = errno;
      if (err == EINTR) {
        swallowed = true;  // interrupts do not end the wait, as in wait()
      } else if (err == ETIMEDOUT || err == ENOMEM) {
        // ENOMEM: no timer for the deadline. Retrying would spin.
        rc = atomic_at(word)->load(std::memory_order_acquire) <= 0 ? 0 : err;
        break;
      }
    }
  }
  if (swallowed) sync::rearm_interrupt();
  return rc;
}

void CountdownEvent::reset(int n) { atomic_at(butex_)->store(n, std::memory_order_release); }

void CountdownEvent::add_count(int v) { atomic_at(butex_)->fetch_add(v, std::memory_order_release); }

}  // namespace weft
