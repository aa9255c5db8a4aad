// A fiber that runs off the end of its stack lands in the guard below
// it. Instead of an anonymous SIGSEGV (or, in brpc's case, sometimes a hang),
// weft prints which stack overflowed and how to fix it, then lets the default
// action crash the process with a core dump. The handler runs on an
// alternate signal stack because the faulting stack is, by definition, full.
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mutex>

#include "sched/stack_pool.h"

namespace weft::sched {
namespace {

struct sigaction g_previous_action;
constexpr size_t kAltStackBytes = 64 * 1024;

void write_str(const char* s) {
  ssize_t unused = write(STDERR_FILENO, s, strlen(s));
  (void)unused;
}

void write_num(size_t v) {
  char buf[32];
  int i = sizeof(buf);
  buf[--i] = '\0';
  do {
    buf[--i] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && i > 0);
  write_str(buf + i);
}

void on_segv(int sig, siginfo_t* info, void* uctx) {
  size_t stack_size = 0;
  if (info != nullptr && stack_guard_hit(info->si_addr, &stack_size)) {
    write_str("weft: fiber stack overflow: a fiber ran past the end of its ");
    write_num(stack_size / 1024);
    write_str(" KiB stack into its guard. Start it with a larger attr (BTHREAD_ATTR_NORMAL "
              "or BTHREAD_ATTR_LARGE) or raise --weft_stack_size_small/normal/large.\n");
    signal(SIGSEGV, SIG_DFL);
    return;  // the faulting instruction re-runs and the default action ends the process
  }
  // Not ours: hand the fault to whoever was installed before us.
  if (g_previous_action.sa_flags & SA_SIGINFO) {
    if (g_previous_action.sa_sigaction != nullptr) {
      g_previous_action.sa_sigaction(sig, info, uctx);
      return;
    }
  } else if (g_previous_action.sa_handler != SIG_DFL && g_previous_action.sa_handler != SIG_IGN) {
    g_previous_action.sa_handler(sig);
    return;
  }
  signal(SIGSEGV, SIG_DFL);
}

}  // namespace

void stack_overflow_protect_thread() {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_previous_action);
  });
  stack_t current;
  if (sigaltstack(nullptr, &current) == 0 && !(current.ss_flags & SS_DISABLE) &&
      current.ss_size >= kAltStackBytes) {
    return;  // the thread already has a large enough one (a sanitizer's, say)
  }
  void* mem = mmap(nullptr, kAltStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  if (mem == MAP_FAILED) return;
  stack_t ss;
  ss.ss_sp = mem;
  ss.ss_size = kAltStackBytes;
  ss.ss_flags = 0;
  sigaltstack(&ss, nullptr);
}

}  // namespace weft::sched
