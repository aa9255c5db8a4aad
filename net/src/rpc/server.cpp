#include "weft/rpc/server.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "base/time_util.h"
#include "rpc/method_status.h"
#include "weft/bthread.h"
#include "weft/rpc/protocol.h"

namespace weft::rpc {

using internal::MethodStatus;

Server::Server() { bthread_mutex_init(&join_mutex_, nullptr); }

Server::~Server() {
  Stop();
  Join();
  bthread_mutex_destroy(&join_mutex_);
}

int Server::AddMethod(std::string name, MethodHandler handler) {
  if (name.empty() || name.size() > 255 || !handler) {
    errno = EINVAL;
    return -1;
  }
  if (status_.load(std::memory_order_acquire) != READY) {
    errno = EBUSY;
    return -1;
  }
  if (methods_.count(name) != 0) {
    errno = EEXIST;
    return -1;
  }
  auto m = std::make_unique<MethodStatus>(name, std::move(handler));
  methods_.emplace(std::move(name), std::move(m));
  return 0;
}

int Server::Start(const char* ip_port, const ServerOptions* options) {
  EndPoint ep;
  if (ip_port == nullptr || !EndPoint::parse(ip_port, &ep)) {
    errno = EINVAL;
    return -1;
  }
  return Start(ep, options);
}

int Server::Start(const EndPoint& ep, const ServerOptions* options) {
  if (status_.load(std::memory_order_acquire) != READY) {
    errno = EBUSY;
    return -1;
  }
  const ServerOptions opt = options != nullptr ? *options : ServerOptions();
  // The protocols first: nothing is listened on if one is wrong.
  std::vector<const Protocol*> protocols;
  if (opt.protocols.empty()) {
    for (const Protocol* p : ListProtocols()) {
      if (p->process_request != nullptr) protocols.push_back(p);
    }
  } else {
    for (const std::string& name : opt.protocols) {
      const Protocol* p = FindProtocol(name);
      if (p == nullptr || p->process_request == nullptr) {
        errno = EINVAL;
        return -1;
      }
      protocols.push_back(p);
    }
  }
  if (protocols.empty()) {
    errno = EINVAL;
    return -1;
  }
  auto acceptor = std::make_unique<Acceptor>();
  for (const Protocol* p : protocols) {
    InputMessageHandler h;
    h.parse = p->parse;
    h.process = p->process_request;
    h.verify = p->verify;
    // Protocols find the Server through the handler arg (protocol.h).
    h.arg = this;
    h.name = p->name;
    if (acceptor->AddHandler(h) != 0) return -1;
  }
  if (opt.num_threads > 0 && opt.num_threads > bthread_getconcurrency()) {
    bthread_setconcurrency(opt.num_threads);
  }
  const int fd = tcp_listen(ep);
  if (fd < 0) return -1;
  const EndPoint bound = get_local_side(fd);
  options_ = opt;
  listen_address_ = bound;
  for (auto& entry : methods_) entry.second->ExposeMetrics(bound.port());
  if (opt.max_connections > 0)
    acceptor->set_max_connections(static_cast<size_t>(opt.max_connections));
  // RUNNING before the first connection can deliver a call (ProcessCall
  // refuses calls unless RUNNING). Pairs with ProcessCall's acquire RMW: a
  // call that sees RUNNING sees options_, methods_ and their metrics.
  acceptor_ = std::move(acceptor);
  status_.store(RUNNING, std::memory_order_seq_cst);
  if (acceptor_->StartAccept(fd, opt.idle_timeout_sec > 0 ? opt.idle_timeout_sec : 0) != 0) {
    const int saved = errno;
    status_.store(STOPPED, std::memory_order_seq_cst);
    errno = saved;
    return -1;
  }
  return 0;
}

size_t Server::connection_count() const {
  return acceptor_ != nullptr ? acceptor_->ConnectionCount() : 0;
}

void Server::Stop() {
  int64_t never = INT64_MAX;
  stop_us_.compare_exchange_strong(never, base::monotonic_ns() / 1000, std::memory_order_release,
                                   std::memory_order_relaxed);
  int s = RUNNING;
  // acq_rel RMW: pairs with ProcessCall's fetch_or (see there).
  if (!status_.compare_exchange_strong(s, STOPPING, std::memory_order_acq_rel)) return;
  // Failing the listener stops accepting; connections stay until Join.
  Socket::SetFailed(acceptor_->listening_id());
}

void Server::Join() {
  Stop();
  bthread_mutex_lock(&join_mutex_);
  if (status_.load(std::memory_order_acquire) != STOPPING) {
    bthread_mutex_unlock(&join_mutex_);
    return;  // never started, or already joined
  }
  // Stop's CAS ordered every call against the stop (see ProcessCall): a
  // call that saw RUNNING counted itself before, so the wait sees it.
  drained_.signal();  // the Server's own count
  drained_.wait();
  // Every call that ran a handler has queued its reply: the graceful close
  // flushes them. Calls cut meanwhile are refused (ELOGOFF) and end before
  // their connection can recycle, which StopAccept waits for.
  acceptor_->StopAccept();
  drained_.wait();
  status_.store(STOPPED, std::memory_order_release);
  bthread_mutex_unlock(&join_mutex_);
}

void Server::ProcessCall(std::string_view method, Controller* cntl, const IOBuf& request,
                         IOBuf* response, int64_t received_us, Closure done) {
  drained_.add_count(1);
  // The status is read with an RMW (acq_rel), not a load: Stop's CAS and
  // this RMW are then ordered in status_'s modification order. If this one
  // comes first it reads RUNNING, and Stop's CAS (acquire) reads a value
  // whose release sequence holds this release RMW, so the add_count above
  // happens before Stop, hence before Join's wait, which counts the call.
  // If Stop's CAS comes first this reads STOPPING and runs no handler.
  // (A load plus a fence would do too, but TSan does not model fences.)
  MethodStatus* m = nullptr;
  if (status_.fetch_or(0, std::memory_order_acq_rel) != RUNNING) {
    cntl->SetFailed(ELOGOFF, "the server is stopping");
  } else {
    m = FindMethod(method);
    if (m == nullptr) {
      cntl->SetFailed(ENOMETHOD, "no method named '%.*s'", static_cast<int>(method.size()),
                      method.data());
    } else if (TakeConcurrencySlot(cntl)) {
      m->OnStart();
      // The handler's done ends the call; the handler may call it from
      // any fiber or pthread, now or later.
      m->handler()(cntl, request, response,
                   Closure([this, m, cntl, received_us, done = std::move(done)]() mutable {
                     EndCall(m, cntl, received_us, true, &done);
                   }));
      return;
    }
  }
  EndCall(m, cntl, received_us, false, &done);
}

bool Server::TakeConcurrencySlot(Controller* cntl) {
  // Relaxed: a bound, not a synchronization.
  const int64_t limit = options_.max_concurrency;
  const int64_t running = calls_in_flight_.fetch_add(1, std::memory_order_relaxed);
  if (limit > 0 && running >= limit) {
    calls_in_flight_.fetch_sub(1, std::memory_order_relaxed);
    cntl->SetFailed(ELIMIT, "the server reached max_concurrency=%lld",
                    static_cast<long long>(limit));
    return false;
  }
  return true;
}

MethodStatus* Server::FindMethod(std::string_view name) const {
  auto it = methods_.find(name);
  return it == methods_.end() ? nullptr : it->second.get();
}

void Server::EndCall(MethodStatus* m, Controller* cntl, int64_t received_us,
                     bool counted_concurrency, Closure* done) {
  const int64_t latency_us = base::monotonic_ns() / 1000 - received_us;
  cntl->set_latency_us(latency_us);
  if (m != nullptr) m->OnEnd(cntl->ErrorCode(), latency_us, counted_concurrency);
  if (counted_concurrency) calls_in_flight_.fetch_sub(1, std::memory_order_relaxed);
  // Copied before done: done may free cntl, and after signal the Server
  // may be gone (Join returned).
  CountdownEvent* const drained = &drained_;
  (*done)();
  drained->signal();
}

// ---- batches (see CallBatch) ----

void Server::BeginBatch(CallBatch* b, int64_t received_us) {
  if (b->active_) {
    // The next message of the same run: its calls join the batch, unless
    // it was read after a Stop (see CallBatch): then the batch ends, which
    // may let Join in, and this one begins afresh.
    if (status_.load(std::memory_order_acquire) == RUNNING ||
        received_us <= stop_us_.load(std::memory_order_acquire)) {
      RecordBatch(b);
      b->received_us_ = received_us;
      return;
    }
    // The add_count below follows a signal that may let Join past its
    // first wait; the Server still lives: the caller's connection holds
    // off StopAccept, hence Join's return.
    EndBatch(b);
  }
  b->server_ = this;
  b->active_ = true;
  b->received_us_ = received_us;
  b->holds_slot_ = false;
  b->current_ = -1;
  drained_.add_count(1);
  // The RMW that orders this batch against Stop, as in ProcessCall: if it
  // reads RUNNING, the add_count above happens before Stop's CAS, so Join
  // waits for EndBatch. Its value is not kept: each call loads the status
  // again (below), and a batch that read STOPPING here will load it there.
  (void)status_.fetch_or(0, std::memory_order_acq_rel);
}

void Server::ProcessBatchedCall(CallBatch* b, std::string_view method, Controller* cntl,
                                const IOBuf& request, IOBuf* response, Closure done) {
  b->current_ = -1;
  // A plain load is enough per call: the batch holds a drain count since
  // BeginBatch's RMW, so a call that still sees RUNNING is waited for by
  // Join (and the status never goes back to RUNNING once it left it).
  if (status_.load(std::memory_order_acquire) != RUNNING) {
    cntl->SetFailed(ELOGOFF, "the server is stopping");
    done();
    return;
  }
  int t = b->last_;
  if (t < 0 || b->tallies_[static_cast<size_t>(t)].method->name() != method) {
    t = -1;
    for (size_t i = 0; i < b->tallies_.size(); ++i) {
      if (b->tallies_[i].method->name() == method) {
        t = static_cast<int>(i);
        break;
      }
    }
    if (t < 0) {
      MethodStatus* const m = FindMethod(method);
      if (m == nullptr) {
        cntl->SetFailed(ENOMETHOD, "no method named '%.*s'", static_cast<int>(method.size()),
                        method.data());
        done();
        return;
      }
      b->tallies_.push_back(CallBatch::Tally{m, 0, 0, false});
      t = static_cast<int>(b->tallies_.size() - 1);
    }
    b->last_ = t;
  }
  b->current_ = t;
  CallBatch::Tally& tally = b->tallies_[static_cast<size_t>(t)];
  if (!b->holds_slot_) {
    if (!TakeConcurrencySlot(cntl)) {
      done();
      return;
    }
    b->holds_slot_ = true;
  }
  if (!tally.started) {
    tally.method->OnStart();
    tally.started = true;
  }
  // The handler's done is the protocol's, which calls EndBatchedCall.
  tally.method->handler()(cntl, request, response, std::move(done));
}

void Server::EndBatchedCall(CallBatch* b, const Controller& cntl) {
  if (b->current_ < 0) return;  // refused before a method was found
  CallBatch::Tally& tally = b->tallies_[static_cast<size_t>(b->current_)];
  ++tally.calls;
  if (cntl.ErrorCode() != 0) ++tally.errors;
  b->pending_ = true;
}

void Server::RecordBatch(CallBatch* b) {
  if (!b->pending_) return;
  b->pending_ = false;
  // One clock read for every call ended since the last record (CallBatch).
  const int64_t latency_us = base::monotonic_ns() / 1000 - b->received_us_;
  for (CallBatch::Tally& tally : b->tallies_) {
    if (tally.calls == 0) continue;
    tally.method->Record(tally.calls, tally.errors, latency_us);
    tally.calls = 0;
    tally.errors = 0;
  }
}

void Server::EndBatch(CallBatch* b) {
  RecordBatch(b);
  for (CallBatch::Tally& tally : b->tallies_) {
    if (tally.started) tally.method->OnLeave();
  }
  // The methods are kept out of the next batch's tallies: their OnStart is
  // per batch. The vector keeps its capacity.
  b->tallies_.clear();
  b->last_ = -1;
  b->current_ = -1;
  if (b->holds_slot_) calls_in_flight_.fetch_sub(1, std::memory_order_relaxed);
  b->holds_slot_ = false;
  b->active_ = false;
  // Last: after it Join may return and the Server be destroyed.
  drained_.signal();
}

}  // namespace weft::rpc
