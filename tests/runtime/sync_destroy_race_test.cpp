// Sync objects destroyed by their waiter the moment it gets through: the
// release call (CountdownEvent::signal, sem post, cond signal/broadcast)
// must not touch the object after the store that lets the waiter through.
// Split from sync_test.cpp, which covers the locks' semantics.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <weft/bthread.h>
#include <weft/butex.h>
#include <weft/condition_variable.h>
#include <weft/countdown_event.h>
#include <weft/mutex.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

// ---- objects destroyed by their waiter as soon as it gets through ----
//
// POSIX lets a waiter destroy a semaphore or a condition variable as soon as
// the call that released it has let it through, though that call may not
// have returned yet (and CountdownEvent promises the same). So signal/post
// must not touch the object after the store that lets a waiter through.
//
// Each round a waiter (a fiber or a pthread) makes a batch of heap objects,
// hands them to its signaller pthread, polls them with already-expired
// timed waits and deletes each the moment it gets through. Under ASan a read
// by the signaller after that is a use-after-free (reported as such, or as a
// SEGV on the word ASan's allocator writes into freed memory).
//
// The window is a few instructions wide, and the waiter is rarely running at
// the very moment it opens. So a "preempter" thread also interrupts each
// signaller with a signal while it is inside a release call, and the handler
// plays the waiter at once, on the signaller's own thread: it checks the
// object without taking any lock the signaller could hold, and destroys it
// if it got through, as if the signaller had been preempted at that
// instruction while its waiter ran. With the threads, the workers and the
// preempter there are more threads than cores.

struct EventOps {
  using Obj = weft::CountdownEvent;
  static Obj* make() { return new weft::CountdownEvent(1); }
  static void release(Obj* o) { o->signal(); }
  static bool through(Obj* o, const timespec& past) { return o->timed_wait(past) == 0; }
  // Signal-handler safe: once the count is 0 timed_wait answers from its
  // first load; before that, the signaller holds none of the object's locks.
  static bool through_now(Obj* o, const timespec& past) { return o->timed_wait(past) == 0; }
  static void destroy(Obj* o) { delete o; }
};

struct SemOps {
  using Obj = bthread_sem_t;
  static Obj* make() {
    auto* s = new bthread_sem_t;
    EXPECT_EQ(0, bthread_sem_init(s, 0));
    return s;
  }
  static void release(Obj* o) { bthread_sem_post(o); }
  static bool through(Obj* o, const timespec& past) { return bthread_sem_timedwait(o, &past) == 0; }
  static bool through_now(Obj* o, const timespec&) { return bthread_sem_trywait(o) == 0; }
  static void destroy(Obj* o) {
    bthread_sem_destroy(o);
    delete o;
  }
};

// The mutex and the condition variable die together.
struct CondPair {
  bthread_mutex_t mu;
  bthread_cond_t cond;
};

// A condition variable keeps no state but its sequence: a signal counts only
// for a wait in progress. The waiter is let through once the sequence moved
// (the signal's store); the timed wait is what it polls with.
template <bool kBroadcast>
struct CondOps {
  using Obj = CondPair;
  static Obj* make() {
    auto* p = new CondPair;
    EXPECT_EQ(0, bthread_mutex_init(&p->mu, nullptr));
    EXPECT_EQ(0, bthread_cond_init(&p->cond, nullptr));
    return p;
  }
  static void release(Obj* o) {
    if (kBroadcast) {
      bthread_cond_broadcast(&o->cond);
    } else {
      bthread_cond_signal(&o->cond);
    }
  }
  static bool through(Obj* o, const timespec& past) {
    bthread_mutex_lock(&o->mu);
    bthread_cond_timedwait(&o->cond, &o->mu, &past);
    bthread_mutex_unlock(&o->mu);
    return through_now(o, past);
  }
  static bool through_now(Obj* o, const timespec&) {
    return reinterpret_cast<std::atomic<int>*>(o->cond.seq)->load(std::memory_order_acquire) != 0;
  }
  static void destroy(Obj* o) {
    bthread_cond_destroy(&o->cond);
    bthread_mutex_destroy(&o->mu);
    delete o;
  }
};

constexpr int kBatch = 1024;

struct DestroyPairBase {
  // Set by the signaller around each release call (read by the handler).
  std::atomic<int> releasing{-1};
  virtual void finish_from_handler(int index) = 0;

 protected:
  ~DestroyPairBase() = default;
};
thread_local DestroyPairBase* tls_pair = nullptr;
std::atomic<long> g_destroyed_mid_release{0};  // by the handler

template <typename Ops>
struct DestroyPair final : DestroyPairBase {
  using Obj = typename Ops::Obj;
  // Whoever exchanges a slot's object out owns it until it puts it back.
  std::atomic<Obj*> slots[kBatch] = {};
  Obj* given[kBatch] = {};        // the signaller's copy, published by `round`
  std::atomic<int> round{0};      // rounds handed to the signaller
  std::atomic<int> remaining{0};  // objects of this round not destroyed yet
  int rounds = 0;
  timespec past{};

  DestroyPair() {
    clock_gettime(CLOCK_REALTIME, &past);
    past.tv_sec -= 1;
  }

  // Destroys slot i's object if it got through; false if it is not there or
  // not through.
  template <bool kHandler>
  bool finish(int i) {
    Obj* o = slots[i].exchange(nullptr, std::memory_order_acq_rel);
    if (o == nullptr) return false;
    if (kHandler ? Ops::through_now(o, past) : Ops::through(o, past)) {
      Ops::destroy(o);
      if (kHandler) g_destroyed_mid_release.fetch_add(1, std::memory_order_relaxed);
      remaining.fetch_sub(1, std::memory_order_release);
      return true;
    }
    slots[i].store(o, std::memory_order_release);
    return false;
  }

  void finish_from_handler(int index) override { finish<true>(index); }

  void waiter() {
    for (int r = 0; r < rounds; ++r) {
      remaining.store(kBatch, std::memory_order_relaxed);
      for (int i = 0; i < kBatch; ++i) {
        given[i] = Ops::make();
        slots[i].store(given[i], std::memory_order_relaxed);
      }
      round.store(r + 1, std::memory_order_release);
      for (long polls = 1; remaining.load(std::memory_order_acquire) > 0; ++polls) {
        for (int i = 0; i < kBatch; ++i) finish<false>(i);
        if (polls % 64 == 0) bthread_yield();  // a fiber: let others on its worker run
      }
    }
  }

  void signaller() {
    // The handler frees on this thread: set up its slot cache outside it.
    weft::butex_destroy(weft::butex_create());
    tls_pair = this;
    for (int r = 0; r < rounds; ++r) {
      while (round.load(std::memory_order_acquire) != r + 1) std::this_thread::yield();
      Obj* batch[kBatch];
      for (int i = 0; i < kBatch; ++i) batch[i] = given[i];
      for (int i = 0; i < kBatch; ++i) {
        releasing.store(i, std::memory_order_relaxed);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        Ops::release(batch[i]);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        releasing.store(-1, std::memory_order_relaxed);
      }
    }
    tls_pair = nullptr;
  }
};

// Interrupts signallers with a signal while they are inside a release call
// (it watches their `releasing`); the handler destroys the object being
// released if it already got through. Freeing memory in a signal handler is
// safe here only because the code it interrupts (a release call) never
// allocates. Not under TSan, which defers handlers to its own safe points
// (so they could not land in the window) and reports the frees.
class Preempter {
 public:
  struct Target {
    pthread_t thread;
    DestroyPairBase* pair;
  };
  explicit Preempter(std::vector<Target> targets) : targets_(std::move(targets)) {
    struct sigaction sa {};
    sa.sa_handler = [](int) {
      const int saved_errno = errno;
      DestroyPairBase* p = tls_pair;
      if (p != nullptr) {
        const int i = p->releasing.load(std::memory_order_relaxed);
        if (i >= 0) p->finish_from_handler(i);
      }
      errno = saved_errno;
    };
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(kSignal, &sa, &old_);
    thread_ = std::thread([this] {
      for (size_t i = 0; !stop_.load(std::memory_order_relaxed); ++i) {
        const Target& t = targets_[i % targets_.size()];
        if (t.pair->releasing.load(std::memory_order_relaxed) >= 0) pthread_kill(t.thread, kSignal);
        if (i % 256 == 0) std::this_thread::yield();
      }
    });
  }
  ~Preempter() { stop(); }
  // Before the targets are joined.
  void stop() {
    if (stop_.exchange(true)) return;
    thread_.join();
    sigaction(kSignal, &old_, nullptr);
  }

 private:
  static constexpr int kSignal = SIGURG;
  std::vector<Target> targets_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  struct sigaction old_ {};
};

template <typename Ops>
void run_destroy_race() {
  const int fiber_pairs = 1, pthread_pairs = 1;
#if defined(WEFT_TSAN)
  const int rounds = 10;
#else
  const int rounds = 200;  // about 2 s under ASan
#endif
  std::vector<std::unique_ptr<DestroyPair<Ops>>> pairs;
  for (int i = 0; i < fiber_pairs + pthread_pairs; ++i) {
    pairs.push_back(std::make_unique<DestroyPair<Ops>>());
    pairs.back()->rounds = rounds;
  }
  std::vector<bthread_t> tids(fiber_pairs);
  for (int i = 0; i < fiber_pairs; ++i) {
    ASSERT_EQ(0, bthread_start_background(
                     &tids[i], nullptr,
                     [](void* a) -> void* {
                       static_cast<DestroyPair<Ops>*>(a)->waiter();
                       return nullptr;
                     },
                     pairs[i].get()));
  }
  std::vector<std::thread> waiters, signallers;
  for (int i = fiber_pairs; i < fiber_pairs + pthread_pairs; ++i) {
    waiters.emplace_back([&, i] { pairs[i]->waiter(); });
  }
  std::vector<Preempter::Target> targets;
  for (auto& p : pairs) {
    signallers.emplace_back([&p] { p->signaller(); });
    targets.push_back({signallers.back().native_handle(), p.get()});
  }
#if !defined(WEFT_TSAN)
  Preempter preempter(targets);
#endif
  for (auto& t : tids) EXPECT_EQ(0, bthread_join(t, nullptr));
  for (auto& t : waiters) t.join();
#if !defined(WEFT_TSAN)
  preempter.stop();
#endif
  for (auto& t : signallers) t.join();
  std::printf("%d objects; %ld destroyed inside their release call\n",
              rounds * kBatch * (fiber_pairs + pthread_pairs), g_destroyed_mid_release.exchange(0));
}

TEST(DestroyAfterWakeTest, CountdownEventSignal) { run_destroy_race<EventOps>(); }
TEST(DestroyAfterWakeTest, SemPost) { run_destroy_race<SemOps>(); }
TEST(DestroyAfterWakeTest, CondSignal) { run_destroy_race<CondOps<false>>(); }
TEST(DestroyAfterWakeTest, CondBroadcast) { run_destroy_race<CondOps<true>>(); }

}  // namespace
