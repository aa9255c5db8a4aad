// Clocks. Inside the runtime every deadline is CLOCK_MONOTONIC nanoseconds;
// the C API's CLOCK_REALTIME abstimes are converted once, at the edge.
#ifndef WEFT_BASE_TIME_UTIL_H_
#define WEFT_BASE_TIME_UTIL_H_

#include <stdint.h>
#include <time.h>

#include <atomic>
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

// CLOCK_REALTIME minus CLOCK_MONOTONIC, recomputed from the precise clocks
// at most every 100 ms (two precise reads cost ~50 ns on these VMs; a coarse
// read ~3 ns). A step of the wall clock is thus noticed within 100 ms; NTP
// slewing (<= 500 ppm) moves it by at most 50 us in that time. The two
// atomics race benignly: any published offset was correct when computed.
inline int64_t realtime_minus_monotonic() {
  static std::atomic<int64_t> offset{0};
  static std::atomic<int64_t> computed_at{-1};  // -1: never
  const int64_t now = coarse_monotonic_ns();
  const int64_t at = computed_at.load(std::memory_order_relaxed);
  if (at < 0 || now - at > 100 * 1000 * 1000) {
    const int64_t fresh = realtime_ns() - monotonic_ns();
    offset.store(fresh, std::memory_order_relaxed);
    computed_at.store(now, std::memory_order_relaxed);
    return fresh;
  }
  return offset.load(std::memory_order_relaxed);
}

// Converts a CLOCK_REALTIME abstime into a CLOCK_MONOTONIC deadline.
inline int64_t realtime_to_monotonic_deadline(const timespec& abstime) {
  return timespec_to_ns(abstime) - realtime_minus_monotonic();
}

}  // namespace weft::base

#endif  // WEFT_BASE_TIME_UTIL_H_
