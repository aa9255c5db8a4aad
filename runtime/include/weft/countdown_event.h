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
  void signal(int sig = 1);
  // Blocks until the count is zero or less. May suspend.
  void wait();
  // 0, or ETIMEDOUT when `abstime` (CLOCK_REALTIME) passes first (returned,
  // not set in errno). May suspend.
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
