// dump_fibers and the signal that triggers it (--weft_fiber_dump_signal).
//
// Stacks are walked through frame pointers starting from the registers that
// jump_fcontext saved (x86-64 SysV layout of Boost.Context's fcontext: rbp
// at +0x30, the return address at +0x38). glibc's backtrace() only walks the
// calling thread, and libunwind would need a full register context that
// fcontext does not keep, so a bounded frame-pointer walk plus dladdr for
// names is the robust choice; weft itself is built with frame pointers.
#include "weft/fiber_dump.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <gflags/gflags.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <mutex>
#include <thread>

#include "base/time_util.h"
#include "observe/fiber_dump_hooks.h"
#include "sched/fiber_lifecycle.h"
#include "sched/task_meta.h"
#include "wait/butex_internal.h"

DEFINE_int32(weft_fiber_dump_signal, 0,
             "When non-zero (e.g. 12 for SIGUSR2), this signal makes any weft program write "
             "dump_fibers() to stderr");

namespace weft {

namespace observe {
void (*g_dump_after_version_read)(uint32_t slot) = nullptr;
}  // namespace observe

namespace {

constexpr int kMaxFrames = 32;

const char* state_name(int s) {
  switch (s) {
    case sched::TaskMeta::kRunning:
      return "running";
    case sched::TaskMeta::kSuspended:
      return "suspended";
    default:
      return "ready";
  }
}

std::string symbolize(uintptr_t pc) {
  Dl_info info;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "0x%016lx", static_cast<unsigned long>(pc));
  std::string out = buf;
  // pc is a return address: look up pc - 1 so a call at the end of a
  // function is attributed to it.
  if (dladdr(reinterpret_cast<void*>(pc - 1), &info) != 0) {
    if (info.dli_sname != nullptr) {
      int status = 0;
      char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
      out += ' ';
      out += status == 0 && demangled != nullptr ? demangled : info.dli_sname;
      free(demangled);
      std::snprintf(buf, sizeof(buf), "+0x%lx",
                    static_cast<unsigned long>(pc - reinterpret_cast<uintptr_t>(info.dli_saddr)));
      out += buf;
    }
    if (info.dli_fname != nullptr) {
      out += " (";
      out += info.dli_fname;
      out += ')';
    }
  }
  return out;
}

// Reads a word of another fiber's stack only if it lies inside that stack:
// the memory is pooled and never unmapped, but the guard page below it is
// not readable. Racy by design (the fiber may run meanwhile), hence exempt
// from the sanitizers.
__attribute__((no_sanitize("address", "thread"))) bool read_stack_word(uintptr_t lo, uintptr_t hi,
                                                                       uintptr_t addr,
                                                                       uintptr_t* out) {
  if (addr < lo || addr + sizeof(uintptr_t) > hi || (addr & 7) != 0) return false;
  *out = *reinterpret_cast<const volatile uintptr_t*>(addr);
  return true;
}

// What dump_one prints of a fiber, read in one go between two reads of the
// slot's version (see snapshot()).
struct Snapshot {
  int state;
  int64_t since;
  const void* word;
  int fd;
  int64_t deadline;
  uintptr_t lo, hi, ctx;  // stack bounds and saved context
  bool in_pthread;
};

// The bounds may belong to a later tenant of the slot by the time the walk
// runs; they are still one real stack's bounds (stacks are never unmapped),
// so reading inside them cannot fault.
__attribute__((no_sanitize("address", "thread"))) void dump_stack(std::ostream& os,
                                                                  const Snapshot& snap) {
  const uintptr_t lo = snap.lo;
  const uintptr_t hi = snap.hi;
  const uintptr_t ctx = snap.ctx;
  uintptr_t rbp = 0, pc = 0;
#if defined(__x86_64__)
  if (!read_stack_word(lo, hi, ctx + 0x30, &rbp) || !read_stack_word(lo, hi, ctx + 0x38, &pc)) {
    os << "  (no saved context)\n";
    return;
  }
#else
  os << "  (stack walk not supported on this architecture)\n";
  return;
#endif
  for (int frame = 0; frame < kMaxFrames && pc != 0; ++frame) {
    os << "  #" << frame << ' ' << symbolize(pc) << '\n';
    uintptr_t next_rbp = 0, next_pc = 0;
    if (!read_stack_word(lo, hi, rbp, &next_rbp) || !read_stack_word(lo, hi, rbp + 8, &next_pc)) {
      break;
    }
    if (next_rbp <= rbp) break;  // frames must move up the stack
    rbp = next_rbp;
    pc = next_pc;
  }
}

// Reads the fields dump_one prints, then the slot's version again: false
// when the fiber `version` named ended (and the slot may hold a new fiber)
// meanwhile, so its id is not reported with another fiber's state or
// stack. A seqlock read: the fields are written only after the version
// moved to even (the fiber ended) and before it moves to the next odd
// number, and the acquire fence keeps the field reads before the second
// version read. (The stack fields are plain and written by a pthread that
// took the slot; x86-64 keeps those stores in order with the version
// stores, which is what the stack walk, x86-64 only, relies on.)
__attribute__((no_sanitize("thread"))) bool snapshot(const sched::TaskMeta* m, uint32_t version,
                                                     Snapshot* out) {
  out->in_pthread = m->in_pthread;
  out->state = m->state.load(std::memory_order_relaxed);
  out->since = m->state_since.load(std::memory_order_relaxed);
  out->word = m->wait_butex.load(std::memory_order_relaxed);
  out->fd = m->wait_fd.load(std::memory_order_relaxed);
  out->deadline = m->wait_deadline.load(std::memory_order_relaxed);
  out->lo = reinterpret_cast<uintptr_t>(m->stack.bottom);
  out->hi = out->lo + m->stack.size;
  out->ctx = reinterpret_cast<uintptr_t>(m->ctx);
  std::atomic_thread_fence(std::memory_order_acquire);
  return static_cast<uint32_t>(m->version_butex->value.load(std::memory_order_relaxed)) ==
         version;
}

__attribute__((no_sanitize("thread"))) void dump_one(std::ostream& os, const sched::TaskMeta* m,
                                                     const Snapshot& snap, bthread_t tid,
                                                     int64_t now) {
  const int state = snap.state;
  os << "fiber " << tid << ' ' << (snap.in_pthread ? "running" : state_name(state));
  if (snap.in_pthread) {
    os << " (on its own pthread)\n";
    return;
  }
  const int64_t since = snap.since;
  char buf[96];
  if (since > 0) {
    std::snprintf(buf, sizeof(buf), " for %.3f s", static_cast<double>(now - since) / 1e9);
    os << buf << (state == sched::TaskMeta::kRunning ? " (ready or running)" : "");
  }
  os << '\n';
  if (state != sched::TaskMeta::kSuspended) return;
  const void* word = snap.word;
  const int fd = snap.fd;
  const int64_t deadline = snap.deadline;
  os << "  waits on ";
  if (fd >= 0) {
    os << "fd " << fd;
  } else if (m->sleep_butex != nullptr && word == &m->sleep_butex->value) {
    os << "sleep";
  } else if (m->version_butex != nullptr && word == &m->version_butex->value) {
    os << "its own join word";
  } else {
    std::snprintf(buf, sizeof(buf), "butex %p", word);
    os << buf;
  }
  if (deadline > 0) {
    std::snprintf(buf, sizeof(buf), ", deadline in %.3f s",
                  static_cast<double>(deadline - base::monotonic_ns()) / 1e9);
    os << buf;
  }
  os << '\n';
  dump_stack(os, snap);
}

int g_dump_pipe[2] = {-1, -1};

// Async-signal-safe, and invisible to the code it interrupts: errno is put
// back (write fails with EAGAIN when the pipe is full), and the write end
// is non-blocking, so a dump thread that is stuck (stderr blocked) makes
// the handler drop the request instead of hanging whichever thread took the
// signal. Installed with SA_ONSTACK: a worker's signal lands on its
// alternate stack, not on a fiber stack that may be nearly full.
void on_dump_signal(int) {
  const int saved_errno = errno;
  const char c = 'd';
  ssize_t unused = write(g_dump_pipe[1], &c, 1);
  (void)unused;
  errno = saved_errno;
}

}  // namespace

// Reads slots that other threads may be initialising (the per-slot butex
// pointers are written once, aligned, before the slot's first use): racy by
// design, memory-safe, hence exempt from TSan.
__attribute__((no_sanitize("thread"))) void dump_fibers(std::ostream& os) {
  sched::TaskMetaPool& pool = sched::task_pool();
  const uint32_t n = pool.allocated();
  const int64_t now = base::coarse_monotonic_ns();
  int live = 0;
  for (uint32_t slot = 0; slot < n; ++slot) {
    const sched::TaskMeta* m = pool.at(slot);
    if (m == nullptr) continue;
    const wait::Butex* version_word = __atomic_load_n(&m->version_butex, __ATOMIC_ACQUIRE);
    if (version_word == nullptr) continue;
    const uint32_t version =
        static_cast<uint32_t>(version_word->value.load(std::memory_order_acquire));
    if ((version & 1) == 0) continue;  // even: ended (or never used)
    if (WEFT_UNLIKELY(observe::g_dump_after_version_read != nullptr)) {
      observe::g_dump_after_version_read(slot);
    }
    Snapshot snap;
    if (!snapshot(m, version, &snap)) continue;  // ended meanwhile
    ++live;
    dump_one(os, m, snap, sched::make_tid(version, slot), now);
  }
  os << live << " live fibers\n";
}

namespace observe {

// Installs the dump signal if --weft_fiber_dump_signal asks for it. The
// handler only writes a byte to a pipe (dropping it when the pipe is full:
// a dump is already pending then); a small thread does the dump.
void install_fiber_dump_signal() {
  static std::once_flag once;
  if (FLAGS_weft_fiber_dump_signal <= 0) return;
  std::call_once(once, [] {
    if (pipe2(g_dump_pipe, O_CLOEXEC) != 0) return;
    // Only the handler's end is non-blocking: the dump thread sleeps in read.
    const int flags = fcntl(g_dump_pipe[1], F_GETFL);
    if (flags < 0 || fcntl(g_dump_pipe[1], F_SETFL, flags | O_NONBLOCK) != 0) return;
    std::thread([] {
      char c;
      while (read(g_dump_pipe[0], &c, 1) == 1) dump_fibers(std::cerr);
    }).detach();
    struct sigaction sa {};
    sa.sa_handler = on_dump_signal;
    sa.sa_flags = SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(FLAGS_weft_fiber_dump_signal, &sa, nullptr);
  });
}

}  // namespace observe
}  // namespace weft
