// weft-echo's latency histogram: log-linear buckets (16 per power of two,
// so a bucket's bound is within ~6% of any value in it), bumped by many
// fibers at once with relaxed atomic adds, read by the reporter.
#ifndef WEFT_TOOLS_WEFT_ECHO_LATENCY_HISTOGRAM_H_
#define WEFT_TOOLS_WEFT_ECHO_LATENCY_HISTOGRAM_H_

#include <stdint.h>
#include <stdio.h>

#include <array>
#include <atomic>

namespace weft_echo {

class LatencyHistogram {
 public:
  static constexpr int kSubBuckets = 16;
  // Values up to 2^kMaxLog2 µs (about 18 minutes) are bucketed; larger
  // ones go to the last, unbounded bucket.
  static constexpr int kMaxLog2 = 30;
  static constexpr int kBuckets = (kMaxLog2 + 1) * kSubBuckets + 1;

  void add(int64_t us) { counts_[index_of(us)].fetch_add(1, std::memory_order_relaxed); }

  // A consistent-enough copy (each bucket read once, relaxed: the counts
  // only grow).
  std::array<uint64_t, kBuckets> snapshot() const {
    std::array<uint64_t, kBuckets> s;
    for (int i = 0; i < kBuckets; ++i) s[i] = counts_[i].load(std::memory_order_relaxed);
    return s;
  }

  // Upper bound (µs) of bucket i; -1 for the last (unbounded) one.
  static int64_t upper_bound(int i) {
    if (i == kBuckets - 1) return -1;
    if (i < kSubBuckets) return i + 1;  // 0..15 µs: exact
    const int log2 = i / kSubBuckets;   // values in [2^log2 ... 2^(log2+1))
    const int sub = i % kSubBuckets;
    const int64_t base = int64_t{1} << log2;
    return base + ((sub + 1) * base) / kSubBuckets;
  }

  // The value below which fraction q of `counts` falls (a bucket's upper
  // bound), or 0 with no samples.
  static int64_t percentile(const std::array<uint64_t, kBuckets>& counts, double q) {
    uint64_t total = 0;
    for (uint64_t c : counts) total += c;
    if (total == 0) return 0;
    const uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(total - 1)) + 1;
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts[i];
      if (seen >= rank) {
        const int64_t b = upper_bound(i);
        return b < 0 ? upper_bound(kBuckets - 2) : b;
      }
    }
    return upper_bound(kBuckets - 2);
  }

 private:
  static int index_of(int64_t us) {
    if (us < 0) us = 0;
    if (us < kSubBuckets) return static_cast<int>(us);
    const int log2 = 63 - __builtin_clzll(static_cast<uint64_t>(us));
    if (log2 > kMaxLog2) return kBuckets - 1;
    const int64_t base = int64_t{1} << log2;
    // log2 >= 4 here, so the sub-bucket is (us - base) / (base / 16).
    const int sub = static_cast<int>(((us - base) * kSubBuckets) / base);
    return log2 * kSubBuckets + sub;
  }

  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
};

}  // namespace weft_echo

#endif  // WEFT_TOOLS_WEFT_ECHO_LATENCY_HISTOGRAM_H_
