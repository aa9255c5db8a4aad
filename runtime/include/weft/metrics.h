// weft/metrics.h: process-wide metrics, cheap to bump from any thread.
//
// Each metric is named at construction and appears in the registry until it
// is destroyed; dump_metrics() writes "name : value" lines sorted by name,
// dump_metrics_prometheus() the Prometheus text exposition format. Names
// should be [a-zA-Z_][a-zA-Z0-9_]*; a second live metric with the same name
// is not listed. All methods may be called from any fiber or pthread and
// never suspend.
#ifndef WEFT_METRICS_H_
#define WEFT_METRICS_H_

#include <stdint.h>

#include <atomic>
#include <ostream>
#include <string>

namespace weft {

class Metric {
 public:
  explicit Metric(std::string name);
  virtual ~Metric();
  Metric(const Metric&) = delete;
  Metric& operator=(const Metric&) = delete;

  const std::string& name() const { return name_; }
  // The value as text for dump_metrics.
  virtual std::string text() const = 0;
  // Prometheus lines for this metric, with their # TYPE line.
  virtual void prometheus(std::ostream& os) const = 0;

 private:
  std::string name_;
};

// A sum that many threads add to. add() writes a cell owned by the calling
// thread (no shared cache line, no atomic read-modify-write); value() adds
// up every thread's cell.
class Counter : public Metric {
 public:
  explicit Counter(std::string name);
  ~Counter() override;

  void add(int64_t v);
  Counter& operator<<(int64_t v) {
    add(v);
    return *this;
  }
  int64_t value() const;

  std::string text() const override;
  void prometheus(std::ostream& os) const override;

 private:
  uint32_t id_;
};

// A value set from anywhere; the last set wins.
class Gauge : public Metric {
 public:
  explicit Gauge(std::string name) : Metric(std::move(name)) {}
  void set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

  std::string text() const override;
  void prometheus(std::ostream& os) const override;

 private:
  std::atomic<int64_t> value_{0};
};

// Latencies in microseconds over a sliding window of about 10 seconds:
// count, average, max and percentiles (from a log-linear histogram, within
// ~12% of the true value).
class LatencyRecorder : public Metric {
 public:
  explicit LatencyRecorder(std::string name);
  ~LatencyRecorder() override;

  void record(int64_t us) { record(us, 1); }
  // Records `n` samples of `us` at once (n > 0): count, sum and the
  // percentiles weigh them as n calls of record(us), for one shared clock
  // read and one set of updates (a batch of calls that ended together).
  void record(int64_t us, int64_t n);
  int64_t count() const;
  int64_t average() const;
  int64_t max() const;
  // `ratio` in (0, 1), e.g. 0.99. 0 when nothing was recorded.
  int64_t percentile(double ratio) const;

  std::string text() const override;
  void prometheus(std::ostream& os) const override;

 private:
  struct Window;
  Window* window_;
};

// Writes "name : value" lines for every metric (the runtime's own included),
// sorted by name.
void dump_metrics(std::ostream& os);
// Writes every metric in the Prometheus text exposition format.
void dump_metrics_prometheus(std::ostream& os);

}  // namespace weft

#endif  // WEFT_METRICS_H_
