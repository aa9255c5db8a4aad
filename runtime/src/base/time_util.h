// Clocks. Inside the runtime every deadline is CLOCK_MONOTONIC nanoseconds;
// the C API's CLOCK_REALTIME abstimes are converted once, at the edge.
#ifndef WEFT_BASE_TIME_UTIL_H_
#define WEFT_BASE_TIME_UTIL_H_

#include <stdint.h>
#include <time.h>

#include <limits>

namespace weft::base {

constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::max();

inline int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// ~3 ns (a vDSO read, no syscall), with the resolution of the scheduler tick:
// good enough for "how long has this fiber been waiting".
inline int64_t coarse_monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

inline int64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

inline int64_t timespec_to_ns(const timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

inline timespec ns_to_timespec(int64_t ns) {
  timespec ts;
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  return ts;
}

// Converts a CLOCK_REALTIME abstime into a CLOCK_MONOTONIC deadline.
inline int64_t realtime_to_monotonic_deadline(const timespec& abstime) {
  const int64_t remaining = timespec_to_ns(abstime) - realtime_ns();
  return monotonic_ns() + remaining;
}

}  // namespace weft::base

#endif  // WEFT_BASE_TIME_UTIL_H_
