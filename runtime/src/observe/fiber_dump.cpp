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
#include "sched/fiber_lifecycle.h"
#include "sched/task_meta.h"
#include "wait/butex_internal.h"

DEFINE_int32(weft_fiber_dump_signal, 0,
             "When non-zero (e.g. 12 for SIGUSR2), this signal makes any weft program write "
             "dump_fibers() to stderr");

namespace weft {
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

__attribute__((no_sanitize("address", "thread"))) void dump_stack(std::ostream& os,
                                                                  const sched::TaskMeta* m) {
  const uintptr_t lo = reinterpret_cast<uintptr_t>(m->stack.bottom);
  const uintptr_t hi = lo + m->stack.size;
  const uintptr_t ctx = reinterpret_cast<uintptr_t>(m->ctx);
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

__attribute__((no_sanitize("thread"))) void dump_one(std::ostream& os, const sched::TaskMeta* m,
                                                     bthread_t tid, int64_t now) {
  const int state = m->state.load(std::memory_order_relaxed);
  os << "fiber " << tid << ' ' << (m->in_pthread ? "running" : state_name(state));
  if (m->in_pthread) {
    os << " (on its own pthread)\n";
    return;
  }
  const int64_t since = m->state_since.load(std::memory_order_relaxed);
  char buf[96];
  if (since > 0) {
    std::snprintf(buf, sizeof(buf), " for %.3f s", static_cast<double>(now - since) / 1e9);
    os << buf << (state == sched::TaskMeta::kRunning ? " (ready or running)" : "");
  }
  os << '\n';
  if (state != sched::TaskMeta::kSuspended) return;
  const void* word = m->wait_butex.load(std::memory_order_relaxed);
  const int fd = m->wait_fd.load(std::memory_order_relaxed);
  const int64_t deadline = m->wait_deadline.load(std::memory_order_relaxed);
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
  dump_stack(os, m);
}

int g_dump_pipe[2] = {-1, -1};

void on_dump_signal(int) {
  const char c = 'd';
  ssize_t unused = write(g_dump_pipe[1], &c, 1);
  (void)unused;
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
    ++live;
    dump_one(os, m, sched::make_tid(version, slot), now);
  }
  os << live << " live fibers\n";
}

namespace observe {

// Installs the dump signal if --weft_fiber_dump_signal asks for it. The
// handler only writes a byte to a pipe; a small thread does the dump.
void install_fiber_dump_signal() {
  static std::once_flag once;
  if (FLAGS_weft_fiber_dump_signal <= 0) return;
  std::call_once(once, [] {
    if (pipe2(g_dump_pipe, O_CLOEXEC) != 0) return;
    std::thread([] {
      char c;
      while (read(g_dump_pipe[0], &c, 1) == 1) dump_fibers(std::cerr);
    }).detach();
    struct sigaction sa {};
    sa.sa_handler = on_dump_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(FLAGS_weft_fiber_dump_signal, &sa, nullptr);
  });
}

}  // namespace observe
}  // namespace weft
