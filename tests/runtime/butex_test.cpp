// Butexes: every call of weft/butex.h from fibers and from pthreads, run once
// per worker count (1, 2 and 8; see CMakeLists), plus races in which a
// wake-up competes with a timeout or an interrupt and exactly one must win.
//
// There is no public way to ask whether a waiter is already linked into a
// butex. The tests therefore never assume one is: a wake that finds nobody
// answers 0 and the test tries again, and a waiter still on its way in is
// turned away with EWOULDBLOCK by changing the word. What they check is the
// accounting, which must be exact whatever the timing.
#include <errno.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <weft/bthread.h>
#include <weft/butex.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "base/fault_injection.h"
#include "base/time_util.h"
#include "test_util.h"

namespace {

using weft::test::kScale;
using weft::test::wait_until;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::atomic<int>* word_of(void* butex) { return static_cast<std::atomic<int>*>(butex); }

int64_t mono_ns() { return weft::base::monotonic_ns(); }

timespec realtime_after_us(int64_t us) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  const int64_t ns = ts.tv_nsec + us * 1000;
  ts.tv_sec += ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  return ts;
}

// Spins (yielding the CPU) until `cond` holds or `limit` passes.
template <typename Cond>
bool spin_until(Cond cond, std::chrono::milliseconds limit = milliseconds(20000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return cond();
    std::this_thread::yield();
  }
  return true;
}

void spin_for_ns(int64_t ns) {
  const int64_t end = mono_ns() + ns;
  while (mono_ns() < end) {
  }
}

// A butex that is not returned to the pool if a waiter may still be linked
// into it (after a failure that left one stuck).
class ButexRef {
 public:
  ButexRef() : word_(weft::butex_create()) {}
  ButexRef(const ButexRef&) = delete;
  ButexRef& operator=(const ButexRef&) = delete;
  ~ButexRef() {
    if (!leaked_) weft::butex_destroy(word_);
  }
  void* get() const { return word_; }
  std::atomic<int>* word() const { return word_of(word_); }
  void leak() { leaked_ = true; }

 private:
  void* word_;
  bool leaked_ = false;
};

// One butex_wait call made by a fiber or a pthread, and its outcome.
struct WaitProbe {
  void* butex = nullptr;
  int expected = 0;
  bool timed = false;
  timespec abstime{};
  bthread_t tid = 0;  // 0 for a pthread
  std::atomic<int> started{0};
  std::atomic<int> done{0};
  int64_t returned_ns = 0;  // CLOCK_MONOTONIC; these three are published by `done`
  int rc = 1;
  int err = 0;
};

void run_probe(WaitProbe* p) {
  p->started.store(1, std::memory_order_release);
  const int rc = weft::butex_wait(p->butex, p->expected, p->timed ? &p->abstime : nullptr);
  p->err = rc == 0 ? 0 : errno;
  p->rc = rc;
  p->returned_ns = mono_ns();
  p->done.store(1, std::memory_order_release);
}

void* probe_fiber(void* arg) {
  run_probe(static_cast<WaitProbe*>(arg));
  return nullptr;
}

// Waiters on one butex, some fibers and some pthreads. finish() joins them;
// if some never returned it forces them out (changes the word, wakes all)
// and, failing that, leaks what they still use rather than free it under
// them.
class Waiters {
 public:
  explicit Waiters(ButexRef* butex) : butex_(butex) {}
  Waiters(const Waiters&) = delete;
  Waiters& operator=(const Waiters&) = delete;
  ~Waiters() { finish(); }

  // Butexes a stuck waiter may have been moved to (requeue).
  void also_wake(ButexRef* other) { others_.push_back(other); }

  WaitProbe* add(bool fiber, int expected = 0, const timespec* abstime = nullptr,
                 const bthread_attr_t* attr = &BTHREAD_ATTR_SMALL) {
    auto probe = std::make_unique<WaitProbe>();
    WaitProbe* p = probe.get();
    p->butex = butex_->get();
    p->expected = expected;
    if (abstime != nullptr) {
      p->timed = true;
      p->abstime = *abstime;
    }
    probes_.push_back(std::move(probe));
    if (fiber) {
      const int rc = bthread_start_background(&p->tid, attr, probe_fiber, p);
      EXPECT_EQ(0, rc);
      if (rc != 0) p->done.store(1);  // nothing to join
    } else {
      threads_.emplace_back(run_probe, p);
    }
    return p;
  }

  void add_many(int fibers, int pthreads) {
    for (int i = 0; i < fibers + pthreads; ++i) add(i < fibers);
  }

  int size() const { return static_cast<int>(probes_.size()); }
  int started() const { return count([](const WaitProbe& p) { return p.started.load() == 1; }); }
  int done() const { return count([](const WaitProbe& p) { return p.done.load() == 1; }); }
  int done_with(int rc, int err) const {
    return count([&](const WaitProbe& p) {
      return p.done.load(std::memory_order_acquire) == 1 && p.rc == rc && p.err == err;
    });
  }
  bool all_started() const {
    return wait_until([&] { return started() == size(); });
  }

  // True when every waiter had returned on its own.
  bool finish() {
    if (finished_) return true;
    finished_ = true;
    const bool clean = done() == size();
    if (!clean) {
      butex_->word()->store(kForced);
      wait_until(
          [&] {
            weft::butex_wake_all(butex_->get());
            for (ButexRef* o : others_) weft::butex_wake_all(o->get());
            return done() == size();
          },
          milliseconds(10000));
    }
    if (done() != size()) {
      // Stuck for good: keep everything they may touch alive.
      ADD_FAILURE() << size() - done() << " waiter(s) never returned";
      butex_->leak();
      for (ButexRef* o : others_) o->leak();
      for (auto& t : threads_) t.detach();
      for (auto& p : probes_) p.release();
      return false;
    }
    for (auto& p : probes_) {
      if (p->tid != 0) {
        EXPECT_EQ(0, bthread_join(p->tid, nullptr));
      }
    }
    for (auto& t : threads_) t.join();
    return clean;
  }

 private:
  static constexpr int kForced = 0x7ead;

  template <typename F>
  int count(F f) const {
    int n = 0;
    for (const auto& p : probes_) n += f(*p) ? 1 : 0;
    return n;
  }

  ButexRef* butex_;
  std::vector<ButexRef*> others_;
  std::vector<std::unique_ptr<WaitProbe>> probes_;
  std::vector<std::thread> threads_;
  bool finished_ = false;
};

// Calls wake(butex) until the waiters of `group` that returned add up to
// `target`, checking after every call that exactly as many returned as the
// calls said they woke. Returns the total the calls reported.
template <typename Wake>
int wake_counting(Wake wake, const Waiters& group, int target, int max_per_call) {
  int reported = 0;
  const auto end = std::chrono::steady_clock::now() + seconds(20);
  while (reported < target && std::chrono::steady_clock::now() < end) {
    const int k = wake();
    EXPECT_GE(k, 0);
    EXPECT_LE(k, max_per_call);
    reported += k;
    if (k == 0) {
      std::this_thread::yield();  // the rest are not linked in yet
      continue;
    }
    EXPECT_TRUE(wait_until([&] { return group.done() >= reported; }))
        << "a wake reported " << k << " but fewer returned";
    EXPECT_EQ(reported, group.done()) << "more waiters returned than the wakes reported";
  }
  return reported;
}

// ---- basics ----

TEST(ButexTest, CreateGivesAZeroWord) {
  ButexRef b;
  ASSERT_NE(nullptr, b.get());
  EXPECT_EQ(0, b.word()->load());
  b.word()->store(42);
  auto* checked = weft::butex_create_checked<std::atomic<int>>();
  ASSERT_NE(nullptr, checked);
  EXPECT_EQ(0, checked->load());
  EXPECT_NE(static_cast<void*>(checked), b.get());
  weft::butex_destroy(checked);
  // Nobody waits: every wake answers 0.
  EXPECT_EQ(0, weft::butex_wake(b.get()));
  EXPECT_EQ(0, weft::butex_wake_all(b.get()));
  EXPECT_EQ(0, weft::butex_wake_except(b.get(), 0));
  ButexRef dst;
  EXPECT_EQ(0, weft::butex_requeue(b.get(), dst.get()));
  EXPECT_EQ(0, weft::butex_requeue(b.get(), b.get()));
}

TEST(ButexTest, WaitOnAMismatchedValueReturnsEwouldblockAtOnce) {
  ButexRef b;
  b.word()->store(5);
  // Pthread, without and with a (far) deadline.
  errno = 0;
  EXPECT_EQ(-1, weft::butex_wait(b.get(), 4, nullptr));
  EXPECT_EQ(EWOULDBLOCK, errno);
  const timespec far = weft::test::realtime_after_ms(60000);
  const auto start = std::chrono::steady_clock::now();
  errno = 0;
  EXPECT_EQ(-1, weft::butex_wait(b.get(), 6, &far));
  EXPECT_EQ(EWOULDBLOCK, errno);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  // Fibers and pthreads through the probes.
  Waiters w(&b);
  w.add(true, 4);
  w.add(true, 4, &far);
  w.add(false, -5);
  ASSERT_TRUE(wait_until([&] { return w.done() == w.size(); }, seconds(10)));
  EXPECT_EQ(3, w.done_with(-1, EWOULDBLOCK));
  EXPECT_TRUE(w.finish());
  EXPECT_EQ(5, b.word()->load());
}

TEST(ButexTest, WaitTimesOutAtARealtimeAbstimeInFibersAndPthreads) {
  ButexRef b;
  // A pthread waiting itself.
  {
    const int64_t start = mono_ns();
    const timespec abstime = weft::test::realtime_after_ms(30);
    errno = 0;
    EXPECT_EQ(-1, weft::butex_wait(b.get(), 0, &abstime));
    EXPECT_EQ(ETIMEDOUT, errno);
    EXPECT_GE(mono_ns() - start, 29 * 1000000LL);
  }
  // Fibers and pthreads with deadlines spread over 1..60 ms, all at once;
  // none may return before its deadline (1 ms of slack for the clock
  // conversion), and nobody wakes them.
  Waiters w(&b);
  std::vector<int64_t> deadline_ns;
  std::vector<WaitProbe*> probes;
  for (int i = 0; i < 40; ++i) {
    const int64_t us = 1000 + i * 1500;
    deadline_ns.push_back(mono_ns() + us * 1000);
    const timespec abstime = realtime_after_us(us);
    probes.push_back(w.add(i % 4 != 3, 0, &abstime));
  }
  ASSERT_TRUE(wait_until([&] { return w.done() == w.size(); }, seconds(30)));
  EXPECT_EQ(w.size(), w.done_with(-1, ETIMEDOUT));
  for (size_t i = 0; i < probes.size(); ++i) {
    EXPECT_GE(probes[i]->returned_ns, deadline_ns[i] - 1000000) << "waiter " << i << " woke early";
  }
  EXPECT_TRUE(w.finish());
  // A deadline already passed times out at once, in a fiber and a pthread.
  Waiters past(&b);
  const timespec gone = realtime_after_us(-1000);
  past.add(true, 0, &gone);
  past.add(false, 0, &gone);
  ASSERT_TRUE(wait_until([&] { return past.done() == 2; }, seconds(10)));
  EXPECT_EQ(2, past.done_with(-1, ETIMEDOUT));
  EXPECT_TRUE(past.finish());
}

TEST(ButexTest, AWakeBeforeTheDeadlineWins) {
  ButexRef b;
  Waiters w(&b);
  const timespec later = weft::test::realtime_after_ms(60000);
  w.add(true, 0, &later);
  w.add(false, 0, &later);
  ASSERT_TRUE(w.all_started());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(2, wake_counting([&] { return weft::butex_wake_all(b.get()); }, w, 2, 2));
  EXPECT_EQ(2, w.done_with(0, 0));
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(20));
  EXPECT_TRUE(w.finish());
}

TEST(ButexTest, AnInterruptEndsAWaitWithEintrInEveryKindOfFiber) {
  // bthread.h: bthread_interrupt wakes fiber `tid` from butex_wait with
  // EINTR, or makes its next blocking call fail so if it is not blocked yet.
  // Either way the wait ends with EINTR, whatever the fiber's stack type.
  const bthread_attr_t* attrs[] = {&BTHREAD_ATTR_SMALL, &BTHREAD_ATTR_NORMAL,
                                   &BTHREAD_ATTR_PTHREAD};
  const char* names[] = {"SMALL", "NORMAL", "PTHREAD"};
  for (int i = 0; i < 3; ++i) {
    ButexRef b;
    Waiters w(&b);
    WaitProbe* p = w.add(true, 0, nullptr, attrs[i]);
    ASSERT_TRUE(w.all_started());
    ASSERT_EQ(0, bthread_interrupt(p->tid)) << names[i];
    EXPECT_TRUE(wait_until([&] { return w.done() == 1; }, milliseconds(5000)))
        << "BTHREAD_ATTR_" << names[i] << ": bthread_interrupt did not end butex_wait";
    EXPECT_EQ(1, w.done_with(-1, EINTR)) << "BTHREAD_ATTR_" << names[i];
    w.finish();  // wakes it if the interrupt did not
  }
}

TEST(ButexTest, ATimedWaitWithNoTimerFailsWithEnomemAtOnce) {
  // A fiber's timed wait needs a timer. If none can be had, butex_wait fails
  // with ENOMEM before it links anything (callers give that back rather than
  // retry). A pthread waits with a futex timeout and needs no timer.
  struct Probe {
    void* butex;
    int rc = 0, err = 0, countdown_after = -1;
    int64_t ns = 0;
  };
  ButexRef b;
  Probe p{b.get()};
  bthread_t tid;
  ASSERT_EQ(0, bthread_start_background(
                   &tid, nullptr,
                   [](void* a) -> void* {
                     auto* q = static_cast<Probe*>(a);
                     const timespec t = realtime_after_us(2 * 1000 * 1000);
                     const int64_t start = mono_ns();
                     weft::wait::g_fault_timer_add.store(1);
                     q->rc = weft::butex_wait(q->butex, 0, &t);
                     q->err = errno;
                     q->countdown_after = weft::wait::g_fault_timer_add.exchange(0);
                     q->ns = mono_ns() - start;
                     return nullptr;
                   },
                   &p));
  ASSERT_EQ(0, bthread_join(tid, nullptr));
  EXPECT_EQ(0, p.countdown_after);
  EXPECT_EQ(-1, p.rc);
  EXPECT_EQ(ENOMEM, p.err);
  EXPECT_LT(p.ns, 500 * 1000 * 1000L);
  EXPECT_EQ(0, weft::butex_wake_all(b.get())) << "the failed waiter was left linked";
  // From a pthread: no timer involved.
  weft::wait::g_fault_timer_add.store(1);
  const timespec soon = realtime_after_us(2000);
  EXPECT_EQ(-1, weft::butex_wait(b.get(), 0, &soon));
  EXPECT_EQ(ETIMEDOUT, errno);
  EXPECT_EQ(1, weft::wait::g_fault_timer_add.exchange(0));
}

// ---- wake, wake_all, wake_except, requeue ----

TEST(ButexTest, WakeWakesOneAtATimeAndReturnsHowMany) {
  ButexRef b;
  EXPECT_EQ(0, weft::butex_wake(b.get()));
  Waiters w(&b);
  w.add_many(8, 4);
  ASSERT_TRUE(w.all_started());
  const int n = w.size();
  EXPECT_EQ(n, wake_counting([&] { return weft::butex_wake(b.get()); }, w, n, 1));
  EXPECT_EQ(n, w.done_with(0, 0));
  EXPECT_EQ(0, weft::butex_wake(b.get()));
  EXPECT_TRUE(w.finish());
}

TEST(ButexTest, WakeAllWakesEveryWaiterAndReturnsHowMany) {
  ButexRef b;
  Waiters w(&b);
  w.add_many(16, 4);
  ASSERT_TRUE(w.all_started());
  const int n = w.size();
  // The first call that finds anyone wakes everyone linked in so far.
  int first = 0;
  ASSERT_TRUE(wait_until([&] { return (first = weft::butex_wake_all(b.get())) > 0; }));
  ASSERT_LE(first, n);
  ASSERT_TRUE(wait_until([&] { return w.done() >= first; }));
  EXPECT_EQ(first, w.done());
  // Turn away the ones still on their way in, then wake whoever got in.
  b.word()->store(1);
  const int second = weft::butex_wake_all(b.get());
  ASSERT_TRUE(wait_until([&] { return w.done() == n; }));
  EXPECT_EQ(first + second, w.done_with(0, 0));
  EXPECT_EQ(n - first - second, w.done_with(-1, EWOULDBLOCK));
  EXPECT_EQ(0, weft::butex_wake_all(b.get()));
  std::printf("wake_all: %d of %d at once, %d late, %d turned away\n", first, n, second,
              n - first - second);
  EXPECT_TRUE(w.finish());
}

TEST(ButexTest, WakeExceptSkipsTheExcludedFiber) {
  ButexRef b;
  Waiters excluded(&b);
  WaitProbe* e = excluded.add(true);
  ASSERT_TRUE(excluded.all_started());
  Waiters others(&b);
  others.add_many(8, 3);
  ASSERT_TRUE(others.all_started());
  const int n = others.size();
  // Every call skips `e`, so the others account for all it reports.
  EXPECT_EQ(n, wake_counting([&] { return weft::butex_wake_except(b.get(), e->tid); }, others, n,
                             n));
  EXPECT_EQ(n, others.done_with(0, 0));
  EXPECT_EQ(0, weft::butex_wake_except(b.get(), e->tid));
  EXPECT_EQ(0, e->done.load()) << "the excluded fiber was woken";
  // It is still waiting, and a plain wake finds it.
  EXPECT_EQ(1, wake_counting([&] { return weft::butex_wake(b.get()); }, excluded, 1, 1));
  EXPECT_EQ(1, excluded.done_with(0, 0));
  EXPECT_TRUE(others.finish());
  EXPECT_TRUE(excluded.finish());
}

TEST(ButexTest, RequeueWakesOneAndMovesTheRestToDst) {
  ButexRef src, dst;
  Waiters w(&src);
  w.also_wake(&dst);
  w.add_many(8, 3);
  ASSERT_TRUE(w.all_started());
  const int n = w.size();
  EXPECT_EQ(0, weft::butex_wake_all(dst.get()));
  // The first requeue that finds a waiter wakes exactly one.
  int woken = 0;
  ASSERT_TRUE(wait_until([&] { return (woken = weft::butex_requeue(src.get(), dst.get())) != 0; }));
  EXPECT_EQ(1, woken);
  ASSERT_TRUE(wait_until([&] { return w.done() >= 1; }));
  EXPECT_EQ(1, w.done());
  // Waiters that reached src after the requeue: turn the rest away and wake
  // those. The moved ones are not on src any more, so this must not wake them.
  src.word()->store(1);
  const int stragglers = weft::butex_wake_all(src.get());
  ASSERT_TRUE(wait_until([&] { return w.done() >= 1 + stragglers; }));
  const int turned_away_so_far = w.done_with(-1, EWOULDBLOCK);
  EXPECT_EQ(1 + stragglers + turned_away_so_far, w.done())
      << "a waiter moved to dst returned without a wake on dst";
  // Everyone else was moved to dst, and a wake_all of dst wakes exactly them.
  const int moved = weft::butex_wake_all(dst.get());
  ASSERT_TRUE(wait_until([&] { return w.done() == n; }));
  EXPECT_EQ(1 + stragglers + moved, w.done_with(0, 0));
  EXPECT_EQ(n - 1 - stragglers - moved, w.done_with(-1, EWOULDBLOCK));
  EXPECT_GE(moved, 1) << "nothing was moved (only " << n - w.done_with(-1, EWOULDBLOCK)
                      << " waiters got in)";
  EXPECT_EQ(0, weft::butex_wake_all(dst.get()));
  EXPECT_EQ(0, weft::butex_wake_all(src.get()));
  std::printf("requeue: 1 woken, %d moved, %d late on src, %d turned away\n", moved, stragglers,
              n - 1 - stragglers - moved);
  EXPECT_TRUE(w.finish());
}

// ---- a storm: a counting semaphore shared by fibers and pthreads ----

void sem_acquire(std::atomic<int>* sem, std::atomic<int64_t>* blocked) {
  for (;;) {
    int v = sem->load(std::memory_order_acquire);
    while (v > 0) {
      if (sem->compare_exchange_weak(v, v - 1, std::memory_order_acq_rel)) return;
    }
    // Returns at once unless the word is still 0.
    if (weft::butex_wait(sem, 0, nullptr) == 0) blocked->fetch_add(1, std::memory_order_relaxed);
  }
}

void sem_release(std::atomic<int>* sem) {
  sem->fetch_add(1, std::memory_order_release);
  weft::butex_wake(sem);
}

struct Storm {
  std::atomic<int>* sem = nullptr;
  int permits = 0;
  int iterations = 0;
  std::atomic<int> inside{0};
  std::atomic<int> max_inside{0};
  std::atomic<int> violations{0};
  std::atomic<int64_t> entries{0};
  std::atomic<int64_t> blocked{0};  // waits that slept and were woken
  std::atomic<int> finished{0};
};

void storm_body(Storm* s, bool fiber) {
  for (int i = 0; i < s->iterations; ++i) {
    sem_acquire(s->sem, &s->blocked);
    const int now = s->inside.fetch_add(1) + 1;
    if (now > s->permits) s->violations.fetch_add(1);
    int seen = s->max_inside.load();
    while (now > seen && !s->max_inside.compare_exchange_weak(seen, now)) {
    }
    s->entries.fetch_add(1);
    // Give up the CPU inside now and then, so others find no permit left.
    if (i % 4 == 0) {
      if (fiber) {
        bthread_yield();
      } else {
        std::this_thread::yield();
      }
    }
    s->inside.fetch_sub(1);
    sem_release(s->sem);
  }
  s->finished.fetch_add(1);
}

void* storm_fiber(void* arg) {
  storm_body(static_cast<Storm*>(arg), true);
  return nullptr;
}

TEST(ButexTest, SemaphoreStormOfFibersAndPthreadsKeepsExactCounts) {
  ButexRef b;
  auto* s = new Storm;  // leaked if a worker never finishes
  s->sem = b.word();
  s->permits = 2;
  s->iterations = 50000 / kScale;
  s->sem->store(s->permits);
  const int fibers = 8, pthreads = 4;
  std::vector<bthread_t> tids(fibers);
  for (auto& t : tids) ASSERT_EQ(0, bthread_start_background(&t, nullptr, storm_fiber, s));
  std::vector<std::thread> threads;
  for (int i = 0; i < pthreads; ++i) threads.emplace_back(storm_body, s, false);
  const bool all = wait_until([&] { return s->finished.load() == fibers + pthreads; },
                              milliseconds(120000));
  if (!all) {
    ADD_FAILURE() << "storm stuck: " << s->finished.load() << " of " << fibers + pthreads
                  << " finished, " << s->entries.load() << " entries, word "
                  << s->sem->load();
    b.leak();
    for (auto& t : threads) t.detach();
    return;
  }
  for (auto& t : tids) EXPECT_EQ(0, bthread_join(t, nullptr));
  for (auto& t : threads) t.join();
  EXPECT_EQ(int64_t{fibers + pthreads} * s->iterations, s->entries.load());
  EXPECT_EQ(0, s->violations.load());
  EXPECT_LE(s->max_inside.load(), s->permits);
  EXPECT_GE(s->max_inside.load(), 1);
  EXPECT_EQ(s->permits, s->sem->load());
  EXPECT_EQ(0, s->inside.load());
  EXPECT_EQ(0, weft::butex_wake_all(b.get())) << "a waiter was left behind";
  std::printf("storm: %lld entries, %lld waits slept\n", static_cast<long long>(s->entries.load()),
              static_cast<long long>(s->blocked.load()));
  delete s;
}

// ---- exactly one outcome when a wake races a timeout or an interrupt ----

struct TimedRound {
  void* butex = nullptr;
  int delay_us = 0;
  std::atomic<int64_t> deadline_ns{0};  // CLOCK_MONOTONIC, set just before waiting
  std::atomic<int> done{0};
  int rc = 1;
  int err = 0;
};

void run_timed_round(TimedRound* r) {
  const int64_t now = mono_ns();
  const timespec abstime = realtime_after_us(r->delay_us);
  r->deadline_ns.store(now + int64_t{r->delay_us} * 1000, std::memory_order_release);
  const int rc = weft::butex_wait(r->butex, 0, &abstime);
  r->err = rc == 0 ? 0 : errno;
  r->rc = rc;
  r->done.store(1, std::memory_order_release);
}

void* timed_round_fiber(void* arg) {
  run_timed_round(static_cast<TimedRound*>(arg));
  return nullptr;
}

TEST(ButexRaceTest, ATimeoutRacingAWakeHasExactlyOneOutcome) {
  const int rounds = std::max(200, 3000 / kScale);
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int> delay(50, 1000);   // us
  std::uniform_int_distribution<int> offset(-150, 150);  // us around the deadline
  int woken = 0, timed_out = 0, turned_away = 0;
  for (int round = 0; round < rounds; ++round) {
    ButexRef b;
    auto owned = std::make_unique<TimedRound>();  // leaked if the waiter is stuck
    TimedRound& r = *owned;
    r.butex = b.get();
    r.delay_us = delay(rng);
    const bool in_fiber = round % 2 == 0;
    const bool change_value = (round / 2) % 2 == 1;  // the usual "set, then wake"
    bthread_t tid = 0;
    std::thread thread;
    if (in_fiber) {
      ASSERT_EQ(0, bthread_start_background(&tid, nullptr, timed_round_fiber, &r));
    } else {
      thread = std::thread(run_timed_round, &r);
    }
    ASSERT_TRUE(spin_until([&] { return r.deadline_ns.load() != 0; }));
    const int64_t wake_at = r.deadline_ns.load() + int64_t{offset(rng)} * 1000;
    spin_for_ns(wake_at - mono_ns());
    if (change_value) b.word()->store(1);
    const int n = weft::butex_wake(b.get());
    const bool returned = wait_until([&] { return r.done.load() == 1; }, milliseconds(10000));
    if (!returned) {
      ADD_FAILURE() << "round " << round << ": the waiter never returned (wake answered " << n
                    << ")";
      b.leak();
      owned.release();
      if (thread.joinable()) thread.detach();
      return;
    }
    if (in_fiber) {
      ASSERT_EQ(0, bthread_join(tid, nullptr));
    }
    if (thread.joinable()) thread.join();
    if (n == 1) {
      EXPECT_EQ(0, r.rc) << "round " << round << ": woken, yet the wait failed with " << r.err;
      ++woken;
    } else {
      EXPECT_EQ(0, n) << "round " << round;
      EXPECT_EQ(-1, r.rc) << "round " << round << ": nobody woke it, yet the wait returned 0";
      if (r.err == ETIMEDOUT) {
        ++timed_out;
      } else if (change_value && r.err == EWOULDBLOCK) {
        ++turned_away;
      } else {
        ADD_FAILURE() << "round " << round << ": unexpected errno " << r.err;
      }
    }
    if (HasFailure()) break;
  }
  std::printf("timeout race: %d woken, %d timed out, %d turned away in %d rounds\n", woken,
              timed_out, turned_away, rounds);
}

struct InterruptRound {
  void* butex = nullptr;
  std::atomic<int> started{0};
  std::atomic<int> done{0};
  int rc = 1;
  int err = 0;
};

void* interrupt_round_fiber(void* arg) {
  auto* r = static_cast<InterruptRound*>(arg);
  r->started.store(1);
  const int rc = weft::butex_wait(r->butex, 0, nullptr);
  r->err = rc == 0 ? 0 : errno;
  r->rc = rc;
  r->done.store(1, std::memory_order_release);
  return nullptr;
}

TEST(ButexRaceTest, AnInterruptRacingAWakeHasExactlyOneOutcome) {
  const int rounds = std::max(500, 10000 / kScale);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> pause(0, 20000);  // ns
  int by_wake = 0, by_interrupt = 0;
  for (int round = 0; round < rounds; ++round) {
    ButexRef b;
    auto owned = std::make_unique<InterruptRound>();  // leaked if the waiter is stuck
    InterruptRound& r = *owned;
    r.butex = b.get();
    bthread_t tid;
    ASSERT_EQ(0, bthread_start_background(&tid, nullptr, interrupt_round_fiber, &r));
    // Two pthreads, one waking and one interrupting, released together; the
    // roles swap every round.
    const bool helper_wakes = round % 2 == 0;
    const int helper_pause = pause(rng), main_pause = pause(rng), pre_pause = pause(rng);
    std::atomic<int> ready{0}, go{0};
    int helper_rc = -2;
    std::thread helper([&] {
      ready.store(1);
      while (go.load() == 0) std::this_thread::yield();
      spin_for_ns(helper_pause);
      helper_rc = helper_wakes ? weft::butex_wake(b.get()) : bthread_interrupt(tid);
    });
    ASSERT_TRUE(spin_until([&] { return r.started.load() == 1 && ready.load() == 1; }));
    spin_for_ns(pre_pause);  // sometimes before the waiter is linked in, sometimes after
    go.store(1);
    spin_for_ns(main_pause);
    const int main_rc = helper_wakes ? bthread_interrupt(tid) : weft::butex_wake(b.get());
    helper.join();
    const int wake_rc = helper_wakes ? helper_rc : main_rc;
    const int interrupt_rc = helper_wakes ? main_rc : helper_rc;
    const bool returned = wait_until([&] { return r.done.load() == 1; }, milliseconds(10000));
    if (!returned) {
      ADD_FAILURE() << "round " << round << ": neither the wake (" << wake_rc
                    << ") nor the interrupt (" << interrupt_rc << ") ended the wait";
      b.leak();
      owned.release();
      return;
    }
    ASSERT_EQ(0, bthread_join(tid, nullptr));
    if (wake_rc == 1) {
      EXPECT_EQ(0, r.rc) << "round " << round << ": woken, yet the wait failed with " << r.err;
      // The interrupt either found the fiber (and stays pending) or came
      // after it ended.
      EXPECT_TRUE(interrupt_rc == 0 || interrupt_rc == EINVAL) << interrupt_rc;
      ++by_wake;
    } else {
      EXPECT_EQ(0, wake_rc) << "round " << round;
      EXPECT_EQ(0, interrupt_rc) << "round " << round << ": the fiber was not woken yet ended";
      EXPECT_EQ(-1, r.rc) << "round " << round << ": not woken, yet the wait returned 0";
      EXPECT_EQ(EINTR, r.err) << "round " << round;
      ++by_interrupt;
    }
    if (HasFailure()) break;
  }
  std::printf("interrupt race: %d by wake, %d by interrupt in %d rounds\n", by_wake, by_interrupt,
              rounds);
}

}  // namespace
