// Metrics: the registry, per-thread counter cells, the latency window, and
// the runtime's own metrics.
#include "weft/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <new>
#include <sstream>
#include <vector>

#include "base/time_util.h"
#include "sched/fiber_lifecycle.h"
#include "sched/task_control.h"
#include "sched/task_group.h"
#include "sched/worker_monitor.h"
#include "time/timer_thread.h"

namespace weft {
namespace {

// ---- registry ----

std::mutex& registry_mu() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::multimap<std::string, Metric*>& registry() {
  static auto* r = new std::multimap<std::string, Metric*>;  // guarded by registry_mu
  return *r;
}

// ---- per-thread counter cells ----
//
// A thread's cells live in chunks it allocates itself; only the owner
// writes a cell (relaxed load + relaxed store: no lock prefix), readers
// load them. A thread that exits folds its cells into each counter's
// `retired` sum.

constexpr uint32_t kCellsPerChunk = 512;
constexpr uint32_t kMaxChunks = 256;
constexpr uint32_t kMaxCounters = kCellsPerChunk * kMaxChunks;

struct alignas(64) CellChunk {
  std::atomic<int64_t> cells[kCellsPerChunk] = {};
};

struct ThreadCells;

struct CounterTable {
  std::mutex mu;  // guards threads, free_ids, next_id and the chunk pointers' creation
  std::vector<ThreadCells*> threads;
  std::vector<uint32_t> free_ids;
  uint32_t next_id = 0;
  std::atomic<int64_t> retired[kMaxCounters] = {};
};

CounterTable& counters() {
  static auto* t = new CounterTable;
  return *t;
}

struct ThreadCells {
  std::atomic<CellChunk*> chunks[kMaxChunks] = {};
  ThreadCells() {
    std::lock_guard<std::mutex> guard(counters().mu);
    counters().threads.push_back(this);
  }
  ~ThreadCells() {
    CounterTable& t = counters();
    std::lock_guard<std::mutex> guard(t.mu);
    for (uint32_t c = 0; c < kMaxChunks; ++c) {
      CellChunk* chunk = chunks[c].load(std::memory_order_relaxed);
      if (chunk == nullptr) continue;
      for (uint32_t i = 0; i < kCellsPerChunk; ++i) {
        const int64_t v = chunk->cells[i].load(std::memory_order_relaxed);
        if (v != 0) t.retired[c * kCellsPerChunk + i].fetch_add(v, std::memory_order_relaxed);
      }
      delete chunk;
    }
    t.threads.erase(std::find(t.threads.begin(), t.threads.end(), this));
  }
};

ThreadCells& thread_cells() {
  static thread_local ThreadCells cells;
  return cells;
}

std::atomic<int64_t>* cell_for(uint32_t id) {
  ThreadCells& tc = thread_cells();
  std::atomic<CellChunk*>& slot = tc.chunks[id / kCellsPerChunk];
  CellChunk* chunk = slot.load(std::memory_order_relaxed);
  if (chunk == nullptr) {
    chunk = new CellChunk;
    // Release pairs with the acquire load in Counter::value.
    std::lock_guard<std::mutex> guard(counters().mu);
    slot.store(chunk, std::memory_order_release);
  }
  return &chunk->cells[id % kCellsPerChunk];
}

std::string prometheus_name(const std::string& name) {
  std::string out = name;
  for (char& c : out) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':')) c = '_';
  }
  return out;
}

// ---- callback gauges for the runtime's own numbers ----

class FunctionGauge : public Metric {
 public:
  FunctionGauge(std::string name, int64_t (*fn)(), const char* type)
      : Metric(std::move(name)), fn_(fn), type_(type) {}
  std::string text() const override { return std::to_string(fn_()); }
  void prometheus(std::ostream& os) const override {
    const std::string n = prometheus_name(name());
    os << "# TYPE " << n << ' ' << type_ << '\n' << n << ' ' << fn_() << '\n';
  }

 private:
  int64_t (*fn_)();
  const char* type_;
};

int64_t sum_groups(uint64_t (*pick)(sched::TaskControl*)) {
  sched::TaskControl* c = sched::TaskControl::get_if_started();
  return c == nullptr ? 0 : static_cast<int64_t>(pick(c));
}

void register_runtime_metrics() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Leaked on purpose: they live as long as the process.
    new FunctionGauge("weft_workers", [] {
      sched::TaskControl* c = sched::TaskControl::get_if_started();
      return static_cast<int64_t>(c == nullptr ? 0 : c->concurrency());
    }, "gauge");
    new FunctionGauge("weft_fibers_alive", [] { return sched::fibers_alive(); }, "gauge");
    new FunctionGauge("weft_fibers_created",
                      [] { return static_cast<int64_t>(sched::fibers_created()); }, "counter");
    new FunctionGauge("weft_context_switches", [] {
      return sum_groups([](sched::TaskControl* c) { return c->total_switches(); });
    }, "counter");
    new FunctionGauge("weft_steals", [] {
      return sum_groups([](sched::TaskControl* c) { return c->nsteals.load(std::memory_order_relaxed); });
    }, "counter");
    new FunctionGauge("weft_worker_parks", [] {
      return sum_groups([](sched::TaskControl* c) { return c->nparks.load(std::memory_order_relaxed); });
    }, "counter");
    new FunctionGauge("weft_worker_stalls",
                      [] { return static_cast<int64_t>(sched::worker_stalls()); }, "counter");
    new FunctionGauge("weft_timers_pending", [] { return timer::timers_pending(); }, "gauge");
    new FunctionGauge("weft_timers_fired",
                      [] { return static_cast<int64_t>(timer::timers_fired()); }, "counter");
  });
}

}  // namespace

// ---- Metric ----

Metric::Metric(std::string name) : name_(std::move(name)) {
  std::lock_guard<std::mutex> guard(registry_mu());
  registry().emplace(name_, this);
}

Metric::~Metric() {
  std::lock_guard<std::mutex> guard(registry_mu());
  auto range = registry().equal_range(name_);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second == this) {
      registry().erase(it);
      break;
    }
  }
}

// ---- Counter ----

Counter::Counter(std::string name) : Metric(std::move(name)) {
  CounterTable& t = counters();
  std::lock_guard<std::mutex> guard(t.mu);
  if (!t.free_ids.empty()) {
    id_ = t.free_ids.back();
    t.free_ids.pop_back();
  } else if (t.next_id < kMaxCounters) {
    id_ = t.next_id++;
  } else {
    throw std::bad_alloc();
  }
}

Counter::~Counter() {
  CounterTable& t = counters();
  std::lock_guard<std::mutex> guard(t.mu);
  // Zero every thread's cell so the id starts clean when reused. No thread
  // may still be adding to a counter being destroyed.
  for (ThreadCells* tc : t.threads) {
    CellChunk* chunk = tc->chunks[id_ / kCellsPerChunk].load(std::memory_order_acquire);
    if (chunk != nullptr) chunk->cells[id_ % kCellsPerChunk].store(0, std::memory_order_relaxed);
  }
  t.retired[id_].store(0, std::memory_order_relaxed);
  t.free_ids.push_back(id_);
}

void Counter::add(int64_t v) {
  std::atomic<int64_t>* cell = cell_for(id_);
  // Single writer: a plain load and store, no lock prefix.
  cell->store(cell->load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
}

int64_t Counter::value() const {
  CounterTable& t = counters();
  std::lock_guard<std::mutex> guard(t.mu);
  int64_t sum = t.retired[id_].load(std::memory_order_relaxed);
  for (ThreadCells* tc : t.threads) {
    CellChunk* chunk = tc->chunks[id_ / kCellsPerChunk].load(std::memory_order_acquire);
    if (chunk != nullptr) sum += chunk->cells[id_ % kCellsPerChunk].load(std::memory_order_relaxed);
  }
  return sum;
}

std::string Counter::text() const { return std::to_string(value()); }

void Counter::prometheus(std::ostream& os) const {
  const std::string n = prometheus_name(name());
  os << "# TYPE " << n << " counter\n" << n << ' ' << value() << '\n';
}

// ---- Gauge ----

std::string Gauge::text() const { return std::to_string(value()); }

void Gauge::prometheus(std::ostream& os) const {
  const std::string n = prometheus_name(name());
  os << "# TYPE " << n << " gauge\n" << n << ' ' << value() << '\n';
}

// ---- LatencyRecorder ----
//
// Ten one-second slots, each sharded 8 ways (a thread sticks to a shard) so
// concurrent recorders rarely share a line. A slot is reused when its second
// comes round again: the first recorder of the new second claims it with a
// CAS on `second` and clears it (a record racing with that clear may be
// lost: these are statistics, not accounting).

namespace {
constexpr int kSlots = 10;
constexpr int kShards = 8;
constexpr int kSubBuckets = 4;  // per power of two: ~12% resolution
constexpr int kBuckets = 64 * kSubBuckets;

int bucket_of(int64_t v) {
  if (v < kSubBuckets) return static_cast<int>(v < 0 ? 0 : v);
  const int log = 63 - __builtin_clzll(static_cast<uint64_t>(v));
  const int sub = static_cast<int>((v >> (log - 2)) & (kSubBuckets - 1));
  return log * kSubBuckets + sub;
}

int64_t bucket_value(int b) {
  if (b < kSubBuckets) return b;
  const int log = b / kSubBuckets;
  const int sub = b % kSubBuckets;
  // The middle of the bucket.
  const int64_t low = (int64_t{1} << log) + (static_cast<int64_t>(sub) << (log - 2));
  const int64_t width = int64_t{1} << (log - 2);
  return low + width / 2;
}

int shard_of_thread() {
  static std::atomic<int> next{0};
  static thread_local int shard = next.fetch_add(1, std::memory_order_relaxed) % kShards;
  return shard;
}
}  // namespace

struct LatencyRecorder::Window {
  struct alignas(64) Shard {
    std::atomic<int64_t> count{0};
    std::atomic<int64_t> sum{0};
    std::atomic<int64_t> max{0};
    std::atomic<int64_t> buckets[kBuckets] = {};
  };
  struct Slot {
    std::atomic<int64_t> second{-1};
    Shard shards[kShards];
  };
  Slot slots[kSlots];

  template <typename Fn>
  void for_each_live_shard(Fn fn) const {
    const int64_t now = base::monotonic_ns() / 1000000000;
    for (const Slot& s : slots) {
      const int64_t sec = s.second.load(std::memory_order_acquire);
      if (sec < 0 || now - sec >= kSlots) continue;
      for (const Shard& sh : s.shards) fn(sh);
    }
  }
};

LatencyRecorder::LatencyRecorder(std::string name)
    : Metric(std::move(name)), window_(new Window) {}

LatencyRecorder::~LatencyRecorder() { delete window_; }

void LatencyRecorder::record(int64_t us, int64_t n) {
  if (n <= 0) return;
  if (us < 0) us = 0;
  const int64_t now = base::monotonic_ns() / 1000000000;
  Window::Slot& slot = window_->slots[now % kSlots];
  int64_t seen = slot.second.load(std::memory_order_acquire);
  if (seen != now) {
    if (slot.second.compare_exchange_strong(seen, now, std::memory_order_acq_rel)) {
      for (Window::Shard& sh : slot.shards) {
        sh.count.store(0, std::memory_order_relaxed);
        sh.sum.store(0, std::memory_order_relaxed);
        sh.max.store(0, std::memory_order_relaxed);
        for (auto& b : sh.buckets) b.store(0, std::memory_order_relaxed);
      }
    }
  }
  Window::Shard& sh = slot.shards[shard_of_thread()];
  sh.count.fetch_add(n, std::memory_order_relaxed);
  sh.sum.fetch_add(us * n, std::memory_order_relaxed);
  int64_t m = sh.max.load(std::memory_order_relaxed);
  while (us > m && !sh.max.compare_exchange_weak(m, us, std::memory_order_relaxed)) {
  }
  sh.buckets[bucket_of(us)].fetch_add(n, std::memory_order_relaxed);
}

int64_t LatencyRecorder::count() const {
  int64_t n = 0;
  window_->for_each_live_shard([&](const Window::Shard& sh) { n += sh.count.load(std::memory_order_relaxed); });
  return n;
}

int64_t LatencyRecorder::average() const {
  int64_t n = 0, sum = 0;
  window_->for_each_live_shard([&](const Window::Shard& sh) {
    n += sh.count.load(std::memory_order_relaxed);
    sum += sh.sum.load(std::memory_order_relaxed);
  });
  return n == 0 ? 0 : sum / n;
}

int64_t LatencyRecorder::max() const {
  int64_t m = 0;
  window_->for_each_live_shard(
      [&](const Window::Shard& sh) { m = std::max(m, sh.max.load(std::memory_order_relaxed)); });
  return m;
}

int64_t LatencyRecorder::percentile(double ratio) const {
  std::vector<int64_t> merged(kBuckets, 0);
  int64_t total = 0;
  window_->for_each_live_shard([&](const Window::Shard& sh) {
    for (int b = 0; b < kBuckets; ++b) {
      const int64_t c = sh.buckets[b].load(std::memory_order_relaxed);
      merged[b] += c;
      total += c;
    }
  });
  if (total == 0) return 0;
  if (ratio <= 0) ratio = 0;
  if (ratio >= 1) ratio = 1;
  const int64_t rank = static_cast<int64_t>(std::ceil(ratio * static_cast<double>(total)));
  int64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += merged[b];
    if (seen >= rank && merged[b] != 0) return std::min(bucket_value(b), max());
  }
  return max();
}

std::string LatencyRecorder::text() const {
  std::ostringstream os;
  os << "count=" << count() << " avg=" << average() << " max=" << max()
     << " p50=" << percentile(0.5) << " p90=" << percentile(0.9) << " p99=" << percentile(0.99)
     << " p999=" << percentile(0.999);
  return os.str();
}

void LatencyRecorder::prometheus(std::ostream& os) const {
  const std::string n = prometheus_name(name());
  os << "# TYPE " << n << " summary\n";
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    os << n << "{quantile=\"" << q << "\"} " << percentile(q) << '\n';
  }
  os << n << "_sum " << average() * count() << '\n' << n << "_count " << count() << '\n';
}

// ---- dumps ----

namespace {
template <typename Fn>
void for_each_metric(Fn fn) {
  register_runtime_metrics();
  std::lock_guard<std::mutex> guard(registry_mu());
  std::string last;
  bool first = true;
  for (const auto& [name, metric] : registry()) {
    if (!first && name == last) continue;  // duplicate name: the first one is listed
    first = false;
    last = name;
    fn(*metric);
  }
}
}  // namespace

void dump_metrics(std::ostream& os) {
  for_each_metric([&](const Metric& m) { os << m.name() << " : " << m.text() << '\n'; });
}

void dump_metrics_prometheus(std::ostream& os) {
  for_each_metric([&](const Metric& m) { m.prometheus(os); });
}

}  // namespace weft
