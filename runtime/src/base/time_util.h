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
// slewing (<= 500 ppm) moves it by at most 50 us in that time.
//
// The offset and the time it was computed are published together under a
// sequence lock: a reader must never pair a fresh timestamp with a stale
// (or never written) offset. One writer at a time (it claims the odd
// sequence with a CAS); readers that see an odd or moved sequence simply
// compute the offset themselves.
struct RealtimeOffset {
  std::atomic<uint64_t> seq{0};          // odd while a writer updates
  std::atomic<int64_t> offset{0};        // guarded by seq
  std::atomic<int64_t> computed_at{-1};  // coarse monotonic ns; -1: never
};

inline RealtimeOffset& realtime_offset_cell() {
  static RealtimeOffset cell;
  return cell;
}

inline int64_t realtime_minus_monotonic() {
  RealtimeOffset& cell = realtime_offset_cell();
  const int64_t now = coarse_monotonic_ns();
  // Acquire pairs with the writer's release store of the even sequence:
  // the fields read below are at least that writer's. The fields are read
  // with acquire too, which keeps the re-read of the sequence after them and
  // pairs with the writer's release stores of the fields: a reader that sees
  // a field written after the writer claimed the odd sequence also sees the
  // odd sequence (or a later one) in its re-read, and discards what it read.
  // (No fences: ThreadSanitizer does not model them.)
  uint64_t s1 = cell.seq.load(std::memory_order_acquire);
  if ((s1 & 1) == 0) {
    const int64_t at = cell.computed_at.load(std::memory_order_acquire);
    const int64_t offset = cell.offset.load(std::memory_order_acquire);
    const uint64_t s2 = cell.seq.load(std::memory_order_relaxed);
    if (s1 == s2 && at >= 0 && now - at <= 100 * 1000 * 1000) return offset;
  }
  const int64_t fresh = realtime_ns() - monotonic_ns();
  if ((s1 & 1) == 0 && cell.seq.compare_exchange_strong(s1, s1 + 1, std::memory_order_relaxed,
                                                        std::memory_order_relaxed)) {
    // Release: the odd sequence is visible to whoever reads these fields.
    cell.offset.store(fresh, std::memory_order_release);
    cell.computed_at.store(now, std::memory_order_release);
    // Release: a reader that sees the new even sequence sees both fields.
    cell.seq.store(s1 + 2, std::memory_order_release);
  }
  return fresh;
}

// Converts a CLOCK_REALTIME abstime into a CLOCK_MONOTONIC deadline.
inline int64_t realtime_to_monotonic_deadline(const timespec& abstime) {
  return timespec_to_ns(abstime) - realtime_minus_monotonic();
}

}  // namespace weft::base

#endif  // WEFT_BASE_TIME_UTIL_H_
