// weft/countdown_event.h: weft::CountdownEvent, a counter that waiters block
// on until it reaches zero. Usable from fibers and pthreads.
#ifndef WEFT_COUNTDOWN_EVENT_H_
#define WEFT_COUNTDOWN_EVENT_H_

#include <time.h>

namespace weft {

class CountdownEvent {
 public:
  explicit CountdownEvent(int initial_count = 1);
  ~CountdownEvent();
  CountdownEvent(const CountdownEvent&) = delete;
  CountdownEvent& operator=(const CountdownEvent&) = delete;

  // Subtracts `sig`; wakes every waiter when the count reaches zero or less.
  // Touches nothing of the event after the subtraction: a waiter that
  // returns may destroy the event at once, while this call is still running.
  void signal(int sig = 1);
  // Blocks until the count is zero or less; returns 0 (an int, as bthread's
  // CountdownEvent::wait does). Interrupts do not end the wait: one that
  // arrives while waiting is re-armed for the fiber's next blocking call.
  // May suspend.
  int wait();
  // 0, or ETIMEDOUT when `abstime` (CLOCK_REALTIME) passes first, or ENOMEM
  // when no timer could be set up for it (returned, not set in errno).
  // Interrupts are handled as in wait(). May suspend.
  int timed_wait(const timespec& abstime);
  // Sets the count to `n` (no waiter may be waiting).
  void reset(int n = 1);
  // Adds `v` to the count.
  void add_count(int v = 1);

 private:
  int* butex_;
};

}  // namespace weft

#endif  // WEFT_COUNTDOWN_EVENT_H_
