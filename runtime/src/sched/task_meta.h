// TaskMeta: everything the runtime knows about one fiber. Lives in a
// type-stable SlotPool; a bthread_t is (version << 32) | slot, where version
// is the word of the slot's version butex. Starting a fiber in the slot moves
// the version to the next odd number and ending it to the next even one, so
// stale ids never match a later fiber, and an ended fiber's result can be
// handed to a late joiner until the slot is reused.
#ifndef WEFT_SCHED_TASK_META_H_
#define WEFT_SCHED_TASK_META_H_

#include <stdint.h>

#include <atomic>
#include <boost/context/detail/fcontext.hpp>

#include "base/slot_pool.h"
#include "base/spinlock.h"
#include "sched/stack_pool.h"
#include "weft/bthread.h"

namespace weft::wait {
struct Butex;
struct ButexWaiter;
}  // namespace weft::wait

namespace weft::local {
class KeyTable;
}

namespace weft::sched {

using boost::context::detail::fcontext_t;

struct TaskMeta {
  // ---- identity and join ----
  // Its word is the slot's current version (never 0). Joiners wait on it.
  wait::Butex* version_butex = nullptr;
  // Guards a version change against joiners registering (njoiners).
  base::SpinLock lock;
  int njoiners = 0;  // guarded by lock
  uint32_t slot = 0;
  bthread_t tid = 0;

  // ---- what to run ----
  void* (*fn)(void*) = nullptr;
  void* arg = nullptr;
  // Written by the fiber before it ends; read by joiners under `lock` or
  // after they observe the version change (release/acquire on the word).
  // Reset under `lock` when the slot is reused.
  void* result = nullptr;
  bthread_attr_t attr{};

  // ---- queues ----
  // Link in the remote queue's stack (task_control.cpp); written by the
  // pusher before its release CAS, read by the worker that took the stack.
  TaskMeta* remote_next = nullptr;

  // ---- execution ----
  fcontext_t ctx = nullptr;  // saved context while not running
  Stack stack;
  bool is_main = false;    // a worker's own pthread stack (its scheduling loop)
  // The fiber's errno while it is switched out (task_group.cpp saves it on
  // every switch away and restores it on every resumption).
  int saved_errno = 0;
  bool in_pthread = false;  // BTHREAD_ATTR_PTHREAD: runs on a dedicated pthread

  // ---- waiting ----
  std::atomic<bool> stop{false};
  // Set by bthread_interrupt/stop; consumed by the next blocking call.
  std::atomic<bool> interrupted{false};
  // The waiter of the fiber's current blocking call, used as a token: an
  // interrupter exchanges it to null while it touches the waiter and puts it
  // back after; the fiber exchanges it to null before its waiter goes out of
  // scope, spinning while an interrupter holds it.
  std::atomic<wait::ButexWaiter*> current_waiter{nullptr};
  wait::Butex* sleep_butex = nullptr;  // private; bthread_usleep waits on it

  // ---- observability (observe/fiber_dump.cpp; relaxed, advisory) ----
  enum State : int { kReady = 0, kRunning = 1, kSuspended = 2 };
  std::atomic<int> state{kReady};
  // CLOCK_MONOTONIC_COARSE ns of the last change to ready or suspended.
  std::atomic<int64_t> state_since{0};
  std::atomic<const void*> wait_butex{nullptr};  // the word being waited on
  std::atomic<int64_t> wait_deadline{0};         // monotonic ns; 0: none
  std::atomic<int> wait_fd{-1};                  // fd of bthread_fd_wait, or -1

  // ---- fiber-local storage (local/key_table.cpp) ----
  local::KeyTable* keytable = nullptr;  // created on the first setspecific
  // fiber_tag.h: a word for the layers above; the fiber alone touches it.
  uint64_t user_tag = 0;

  // ---- sanitizers ----
  void* tsan_fiber = nullptr;
  const void* asan_stack_bottom = nullptr;
  size_t asan_stack_size = 0;
};

using TaskMetaPool = base::SlotPool<TaskMeta>;

inline bthread_t make_tid(uint32_t version, uint32_t slot) {
  return (static_cast<uint64_t>(version) << 32) | slot;
}
inline uint32_t tid_slot(bthread_t tid) { return static_cast<uint32_t>(tid); }
inline uint32_t tid_version(bthread_t tid) { return static_cast<uint32_t>(tid >> 32); }

}  // namespace weft::sched

#endif  // WEFT_SCHED_TASK_META_H_
