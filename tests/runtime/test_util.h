// Helpers shared by the runtime tests.
#ifndef WEFT_TESTS_RUNTIME_TEST_UTIL_H_
#define WEFT_TESTS_RUNTIME_TEST_UTIL_H_

#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>

#include "base/compiler.h"

namespace weft::test {

// Sanitizer builds run the same tests with smaller counts: TSan and ASan
// cost 5-20x in time and several times the memory per fiber.
#if defined(WEFT_TSAN)
constexpr int kScale = 50;
#elif defined(WEFT_ASAN)
constexpr int kScale = 10;
#else
constexpr int kScale = 1;
#endif

// Runs `body` in a forked child and returns its exit status, or -1 when
// the child did not exit (killed by a signal, an abort among them). For
// what happens once per process: the runtime's start, the net layer's
// lazily started dispatchers.
template <typename F>
int in_child(F body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

inline timespec realtime_after_ms(int64_t ms) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ns = ts.tv_nsec + (ms % 1000) * 1000000;
  ts.tv_sec += ms / 1000 + ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  return ts;
}

// Polls `cond` until true or `limit` passes; returns the last value. Used to
// wait for an event with a generous deadline that fails loudly.
inline bool wait_until(const std::function<bool()>& cond,
                       std::chrono::milliseconds limit = std::chrono::milliseconds(20000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return cond();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

}  // namespace weft::test

#endif  // WEFT_TESTS_RUNTIME_TEST_UTIL_H_
