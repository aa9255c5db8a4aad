#include "rpc/method_status.h"

namespace weft::rpc::internal {

void MethodStatus::ExposeMetrics(int port) {
  std::string base = "weft_rpc_server_" + std::to_string(port) + "_";
  for (const char c : name_) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    base.push_back(ok ? c : '_');
  }
  count_ = std::make_unique<Counter>(base + "_count");
  errors_ = std::make_unique<Counter>(base + "_errors");
  latency_ = std::make_unique<LatencyRecorder>(base + "_latency");
  max_concurrency_gauge_ = std::make_unique<Gauge>(base + "_max_concurrency");
}

void MethodStatus::OnStart() {
  const int64_t now = running_.fetch_add(1, std::memory_order_relaxed) + 1;
  int64_t seen = max_concurrency_.load(std::memory_order_relaxed);
  bool raised = false;
  while (now > seen) {
    if (max_concurrency_.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
      raised = true;
      break;
    }
  }
  // Only a new maximum touches the gauge. It follows the atomic max (two
  // racing raisers may store out of order; it re-reads the max, so the
  // later store is never below what it saw).
  if (raised && max_concurrency_gauge_) {
    max_concurrency_gauge_->set(max_concurrency_.load(std::memory_order_relaxed));
  }
}

void MethodStatus::Record(int64_t calls, int64_t errors, int64_t latency_us) {
  if (count_) count_->add(calls);
  if (errors > 0 && errors_) errors_->add(errors);
  // Only successful calls have a latency worth keeping (a refusal's is
  // the time to say no).
  if (calls > errors && latency_) latency_->record(latency_us, calls - errors);
}

}  // namespace weft::rpc::internal
