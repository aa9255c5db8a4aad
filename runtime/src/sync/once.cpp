// bthread_once: a CAS elects the caller that runs the routine; the others
// wait on one of a few shared butexes picked by the once_t's address (a
// bthread_once_t is a plain int, statically initialised, so it cannot hold a
// butex of its own).
#include <errno.h>
#include <stdint.h>

#include <climits>

#include "sync/sync_util.h"
#include "weft/bthread.h"

namespace {

constexpr int kNotRun = 0, kRunning = 1, kDone = 2;
constexpr size_t kWaitSlots = 64;

weft::wait::Butex* wait_slot(const void* addr) {
  static weft::wait::Butex** slots = [] {
    auto** s = new weft::wait::Butex*[kWaitSlots];
    for (size_t i = 0; i < kWaitSlots; ++i) s[i] = weft::wait::butex_alloc();
    return s;
  }();
  return slots[(reinterpret_cast<uintptr_t>(addr) >> 3) % kWaitSlots];
}

}  // namespace

extern "C" int bthread_once(bthread_once_t* once, void (*init_routine)(void)) {
  auto* state = reinterpret_cast<std::atomic<int>*>(&once->state);
  // Acquire pairs with the release store of kDone: the routine's effects
  // are visible to every caller that returns.
  if (state->load(std::memory_order_acquire) == kDone) return 0;
  weft::wait::Butex* slot = wait_slot(once);
  int expected = kNotRun;
  if (state->compare_exchange_strong(expected, kRunning, std::memory_order_acquire)) {
    init_routine();
    state->store(kDone, std::memory_order_release);
    slot->value.fetch_add(1, std::memory_order_release);
    weft::wait::butex_wake_some(slot, INT_MAX, 0);
    return 0;
  }
  bool swallowed = false;
  for (;;) {
    // Read the slot's sequence before re-checking the state: a finish after
    // the check bumps the sequence and the wait returns at once.
    const int seq = slot->value.load(std::memory_order_acquire);
    if (state->load(std::memory_order_acquire) == kDone) break;
    if (weft::wait::butex_wait_until(slot, seq, weft::base::kNoDeadline) != 0 && errno == EINTR) {
      swallowed = true;
    }
  }
  if (swallowed) weft::sync::rearm_interrupt();
  return 0;
}
