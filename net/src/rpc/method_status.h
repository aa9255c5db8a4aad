// Internal: one method of a Server, with its metrics (count, errors,
// latency p50/p99/p999 through LatencyRecorder, and the most calls seen
// running at once), registered in the runtime's metrics as
// weft_rpc_server_<port>_<method>_{count,errors,latency,max_concurrency}
// (characters outside [A-Za-z0-9_] in the method name become '_').
#ifndef WEFT_NET_SRC_RPC_METHOD_STATUS_H_
#define WEFT_NET_SRC_RPC_METHOD_STATUS_H_

#include <stdint.h>

#include <atomic>
#include <memory>
#include <string>

#include "weft/metrics.h"
#include "weft/rpc/server.h"

namespace weft::rpc::internal {

class MethodStatus {
 public:
  MethodStatus(std::string name, MethodHandler handler)
      : name_(std::move(name)), handler_(std::move(handler)) {}

  // Creates the metrics (at Start, once the port is known).
  void ExposeMetrics(int port);

  const std::string& name() const { return name_; }
  const MethodHandler& handler() const { return handler_; }

  // A call of this method entered its handler. Any thread.
  void OnStart();
  // A call ended (handler's done, or refused with error_code). Any thread.
  void OnEnd(int error_code, int64_t latency_us, bool started) {
    if (started) OnLeave();
    Record(1, error_code != 0 ? 1 : 0, latency_us);
  }
  // A call that OnStart counted as running no longer is. Any thread.
  void OnLeave() { running_.fetch_sub(1, std::memory_order_relaxed); }
  // `calls` calls ended, `errors` of them failed; the others took
  // latency_us each (a batch's calls share one figure, see CallBatch).
  // Any thread.
  void Record(int64_t calls, int64_t errors, int64_t latency_us);

  int64_t count() const { return count_ ? count_->value() : 0; }
  int64_t errors() const { return errors_ ? errors_->value() : 0; }
  int64_t max_concurrency() const { return max_concurrency_.load(std::memory_order_relaxed); }

 private:
  const std::string name_;
  const MethodHandler handler_;
  // Null until ExposeMetrics; set before the server serves (Start happens
  // before any connection exists), so calls read them without a lock.
  std::unique_ptr<Counter> count_;
  std::unique_ptr<Counter> errors_;
  std::unique_ptr<LatencyRecorder> latency_;
  std::unique_ptr<Gauge> max_concurrency_gauge_;
  // Relaxed: statistics, not synchronization.
  std::atomic<int64_t> running_{0};
  std::atomic<int64_t> max_concurrency_{0};
};

}  // namespace weft::rpc::internal

#endif  // WEFT_NET_SRC_RPC_METHOD_STATUS_H_
