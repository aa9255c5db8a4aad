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
  // Release pairs with the acquire load in wait: what the signaller did is
  // visible to the waiters it releases.
  const int prev = atomic_at(butex_)->fetch_sub(sig, std::memory_order_release);
  if (prev - sig <= 0) wait::butex_wake_some(butex_at(butex_), INT_MAX, 0);
}

void CountdownEvent::wait() {
  bool swallowed = false;
  for (;;) {
    const int v = atomic_at(butex_)->load(std::memory_order_acquire);
    if (v <= 0) break;
    if (wait::butex_wait_until(butex_at(butex_), v, base::kNoDeadline) != 0 && errno == EINTR) {
      swallowed = true;
    }
  }
  if (swallowed) sync::rearm_interrupt();
}

int CountdownEvent::timed_wait(const timespec& abstime) {
  const int64_t deadline = sync::deadline_of(&abstime);
  for (;;) {
    const int v = atomic_at(butex_)->load(std::memory_order_acquire);
    if (v <= 0) return 0;
    if (wait::butex_wait_until(butex_at(butex_), v, deadline) != 0 && errno == ETIMEDOUT) {
      return atomic_at(butex_)->load(std::memory_order_acquire) <= 0 ? 0 : ETIMEDOUT;
    }
  }
}

void CountdownEvent::reset(int n) { atomic_at(butex_)->store(n, std::memory_order_release); }

void CountdownEvent::add_count(int v) { atomic_at(butex_)->fetch_add(v, std::memory_order_release); }

}  // namespace weft
