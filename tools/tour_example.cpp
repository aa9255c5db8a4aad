// tour_example.cpp: a producer and two consumers on a butex, a sleeper
// that gets stopped, and a timer.
#include <weft/bthread.h>
#include <weft/butex.h>

#include <atomic>
#include <cerrno>
#include <cstdio>

struct Queue {
  std::atomic<int>* items = weft::butex_create_checked<std::atomic<int>>();
};

void* consumer(void* arg) {
  auto* q = static_cast<Queue*>(arg);
  long taken = 0;
  for (;;) {
    int n = q->items->load();
    if (n < 0) break;                      // closed
    if (n == 0) {                          // nothing yet: park this fiber only
      weft::butex_wait(q->items, 0, nullptr);
      continue;
    }
    if (q->items->compare_exchange_weak(n, n - 1)) ++taken;
  }
  return reinterpret_cast<void*>(taken);   // handed to bthread_join
}

void* sleeper(void*) {
  if (bthread_usleep(60 * 1000 * 1000) == -1 && errno == ESTOP) {
    std::puts("sleeper: stopped early (ESTOP)");
  }
  return nullptr;
}

void on_timer(void* arg) { std::printf("timer fired: %s\n", static_cast<const char*>(arg)); }

int main() {
  Queue q;
  bthread_t c1, c2, s;
  bthread_start_background(&c1, nullptr, consumer, &q);
  bthread_start_background(&c2, &BTHREAD_ATTR_SMALL, consumer, &q);  // 32 KiB stack
  bthread_start_background(&s, nullptr, sleeper, nullptr);

  for (int i = 0; i < 1000; ++i) {        // produce from a plain pthread
    q.items->fetch_add(1);
    weft::butex_wake(q.items);
  }
  while (q.items->load() != 0) bthread_usleep(100);  // a pthread: plain usleep
  q.items->store(-1);                      // close, wake everyone
  weft::butex_wake_all(q.items);

  void* r1;
  void* r2;
  bthread_join(c1, &r1);
  bthread_join(c2, &r2);
  std::printf("consumed %ld + %ld\n", reinterpret_cast<long>(r1), reinterpret_cast<long>(r2));

  bthread_stop(s);                         // wakes the sleeper with ESTOP
  bthread_join(s, nullptr);

  timespec when;
  clock_gettime(CLOCK_REALTIME, &when);    // timers take CLOCK_REALTIME abstimes
  when.tv_nsec += 5 * 1000 * 1000;
  if (when.tv_nsec >= 1000000000) { when.tv_sec += 1; when.tv_nsec -= 1000000000; }
  bthread_timer_t id;
  bthread_timer_add(&id, when, on_timer, const_cast<char*>("5 ms later"));
  bthread_usleep(20 * 1000);
  std::printf("timer_del after it ran: %d (1 = ran)\n", bthread_timer_del(id));
  weft::butex_destroy(q.items);
}
