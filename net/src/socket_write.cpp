// Socket's write path: Write, StartWrite, KeepWrite, DoWrite,
// IsWriteComplete and the release of failed requests.
//
// The list: write_head_ points at the newest pushed request; each pushed
// request's `next` points at the request pushed before it; the request that
// found write_head_ empty (the first) has next == nullptr and its pusher
// owns the right to write. The writer keeps a private oldest-first list
// [req .. tail] and, when it runs out, takes the newer requests with one CAS
// in IsWriteComplete and reverses them onto its tail. write_head_ returns to
// nullptr only in IsWriteComplete, by the writer, when everything is written:
// the next Write then becomes the writer again.
#include <errno.h>
#include <sched.h>
#include <string.h>

#include <mutex>
#include <vector>

#include <gflags/gflags.h>

#include "base/compiler.h"
#include "base/time_util.h"
#include "net_log.h"
#include "net_metrics.h"
#include "socket_internal.h"
#include "weft/countdown_event.h"
#include "weft/errno.h"
#include "weft/net/socket.h"

DEFINE_int64(weft_socket_max_unwritten_bytes, 64 * 1024 * 1024,
             "Write() fails with EOVERCROWDED while a socket has more than this many bytes "
             "accepted and not yet written");

namespace weft {

Socket::WriteRequest* const Socket::WriteRequest::UNCONNECTED =
    reinterpret_cast<Socket::WriteRequest*>(static_cast<intptr_t>(-1));

// WriteRequests are recycled through per-thread free lists: a writer on one
// worker allocates and KeepWrite on another frees, a pattern that sends
// every request through malloc's slow paths (about 20% of the time with 8
// writers of 16-byte messages). A thread's list that reaches kLocalMax
// moves, whole, to a global list of batches, from which empty lists refill. No call
// suspends between taking and using a list, and the list is always found
// through local_requests() (never inlined), so fibers migrating between
// threads is harmless. ASan builds use plain new/delete so use-after-free
// of a request stays detectable.
namespace {

using WriteRequest = Socket::WriteRequest;
constexpr size_t kLocalMax = 256;
constexpr size_t kMaxGlobalBatches = 64;

struct Batch {
  WriteRequest* head;
  size_t n;
};

std::mutex g_batches_mu;
std::vector<Batch>& global_batches() {
  static auto* v = new std::vector<Batch>;  // leaked: used during exit
  return *v;
}

void delete_list(WriteRequest* head) {
  while (head != nullptr) {
    WriteRequest* const next = head->pool_next;
    delete head;
    head = next;
  }
}

// Set once this thread's LocalRequests was destroyed (thread exit);
// trivially destructible, so it outlives the list.
thread_local bool tls_requests_gone = false;

struct LocalRequests {
  WriteRequest* head = nullptr;
  size_t n = 0;
  ~LocalRequests() {
    tls_requests_gone = true;
    std::lock_guard<std::mutex> guard(g_batches_mu);
    if (global_batches().size() < kMaxGlobalBatches) {
      global_batches().push_back(Batch{head, n});
    } else {
      delete_list(head);
    }
    head = nullptr;
    n = 0;
  }
};
thread_local LocalRequests tls_requests;

// The calling thread's list, or nullptr once it was destroyed (a
// thread_local destructor writing to a socket): callers then use plain
// new/delete rather than revive a list nobody would hand back. Not inlined,
// and the empty asm makes each call read the thread pointer afresh: New and
// Delete run in fibers, which may resume on another pthread after any
// suspension, and an inlined accessor lets the compiler reuse a TLS address
// computed earlier in the caller.
// maybe_unused: ASan builds (plain new/delete) never call it.
[[maybe_unused]] WEFT_NOINLINE LocalRequests* local_requests() {
  asm volatile("" ::: "memory");
  if (WEFT_UNLIKELY(tls_requests_gone)) return nullptr;
  return &tls_requests;
}

}  // namespace

Socket::WriteRequest* Socket::WriteRequest::New() {
#if defined(WEFT_ASAN)
  return new (std::nothrow) WriteRequest;
#else
  LocalRequests* const list = local_requests();
  if (WEFT_UNLIKELY(list == nullptr)) return new (std::nothrow) WriteRequest;
  LocalRequests& local = *list;
  if (local.head == nullptr) {
    std::lock_guard<std::mutex> guard(g_batches_mu);
    if (!global_batches().empty()) {
      local.head = global_batches().back().head;
      local.n = global_batches().back().n;
      global_batches().pop_back();
    }
  }
  if (local.head == nullptr) return new (std::nothrow) WriteRequest;
  WriteRequest* const req = local.head;
  local.head = req->pool_next;
  --local.n;
  return req;
#endif
}

void Socket::WriteRequest::Delete(WriteRequest* req) {
#if defined(WEFT_ASAN)
  delete req;
#else
  // Back to the state New() promises: empty data, no id, no socket.
  req->data.clear();
  req->id_wait = INVALID_BTHREAD_ID;
  req->socket = nullptr;
  req->accounted = 0;
  req->is_close = false;
  req->on_written = nullptr;
  req->on_written_arg = nullptr;
  LocalRequests* const list = local_requests();
  if (WEFT_UNLIKELY(list == nullptr)) {
    delete req;
    return;
  }
  LocalRequests& local = *list;
  req->pool_next = local.head;
  local.head = req;
  if (++local.n < kLocalMax) return;
  // Hand the whole list to the global list as one batch.
  const Batch batch{local.head, local.n};
  local.head = nullptr;
  local.n = 0;
  std::lock_guard<std::mutex> guard(g_batches_mu);
  if (global_batches().size() < kMaxGlobalBatches) {
    global_batches().push_back(batch);
  } else {
    delete_list(batch.head);
  }
#endif
}

int Socket::SetError(bthread_id_t id_wait, int error_code) {
  if (id_wait.value != 0) {
    bthread_id_error(id_wait, error_code);
    return 0;
  }
  errno = error_code;
  return -1;
}

int Socket::ConductError(bthread_id_t id_wait) { return SetError(id_wait, non_zero_error_code()); }

int Socket::RefuseWrite(const WriteOptions& opt, int error_code) {
  if (opt.on_written != nullptr) opt.on_written(this, error_code, opt.on_written_arg);
  return SetError(opt.id_wait, error_code);
}

int Socket::Write(IOBuf* data, const WriteOptions* options) {
  static const WriteOptions kDefaults;
  const WriteOptions& opt = options != nullptr ? *options : kDefaults;
  if (data == nullptr || data->empty()) return RefuseWrite(opt, EINVAL);
  return PushWrite(data, opt);
}

int Socket::PushWrite(IOBuf* data, const WriteOptions& opt) {
  if (Failed()) return RefuseWrite(opt, non_zero_error_code());
  // A graceful close refuses new writes (acquire: pairs with the release in
  // CloseGracefully). A write that read 0 just before the close may still
  // be pushed behind the close request: it is released as failed.
  const int close_code = close_error_code_.load(std::memory_order_acquire);
  if (close_code != 0) return RefuseWrite(opt, close_code);
  if (!opt.ignore_eovercrowded &&
      unwritten_bytes_.load(std::memory_order_relaxed) >= FLAGS_weft_socket_max_unwritten_bytes) {
    return RefuseWrite(opt, EOVERCROWDED);
  }
  WriteRequest* const req = WriteRequest::New();
  if (req == nullptr) return RefuseWrite(opt, ENOMEM);
  req->on_written = opt.on_written;
  req->on_written_arg = opt.on_written_arg;
  req->data.swap(*data);
  req->accounted = static_cast<int64_t>(req->data.size());
  // Counted before the request is visible to the writer, whose subtraction
  // must not come first.
  unwritten_bytes_.fetch_add(req->accounted, std::memory_order_relaxed);
  // The writer spins while next is UNCONNECTED (see StartWrite).
  req->next.store(WriteRequest::UNCONNECTED, std::memory_order_relaxed);
  req->id_wait = opt.id_wait;
  req->socket = nullptr;
  return StartWrite(req, opt);
}

int Socket::StartWrite(WriteRequest* req, const WriteOptions& opt) {
  // Release publishes *req to the writer, whose acquire CAS on write_head_ in
  // IsWriteComplete reads this exchange or a later one (all exchanges form
  // one release sequence).
  WriteRequest* const prev_head = write_head_.exchange(req, std::memory_order_acq_rel);
  if (prev_head != nullptr) {
    // Someone holds the right to write: link behind their request and go.
    // Until this store the writer sees UNCONNECTED and spins. Release pairs
    // with the writer's acquire load of `next`: our store happens before the
    // writer frees this request.
    req->next.store(prev_head, std::memory_order_release);
    return 0;
  }

  // We are the writer, alone until write_head_ goes back to nullptr.
  req->next.store(nullptr, std::memory_order_relaxed);
  if (req->is_close) {
    // A graceful close with nothing queued before it: close now (and never
    // connect just to close).
    FinishGracefulClose(req);
    return 0;
  }
  int saved_errno = 0;
  const int ret = ConnectIfNot(opt.abstime, req);
  if (ret < 0) {
    saved_errno = errno;
    SetFailed(saved_errno, "fail to connect %s: %s", description().c_str(), strerror(saved_errno));
    ReleaseAllFailedWriteRequests(req);
    // With id_wait the error was reported there (once).
    if (opt.id_wait.value != 0) return 0;
    errno = saved_errno;
    return -1;
  }
  if (ret == 1) {
    // Connecting: KeepWriteIfConnected takes over `req` (and the list).
    return 0;
  }

  // Write once in the caller: most writes finish here, with no fiber. Also
  // on sockets with an AppConnect: here the connect (and the AppConnect)
  // is done, since until KeepWrite took over after it nobody else could
  // become the writer, and KeepWrite writes the same fd the same way.
  // An empty request (EnsureConnected's probe) has nothing to write.
  ssize_t nw = 0;
  while (!req->data.empty()) {
    nw = req->data.cut_into_file_descriptor(fd());
    // A signal interrupted the call: nothing was written, try again.
    if (nw >= 0 || errno != EINTR) break;
  }
  if (nw < 0) {
    if (errno != EAGAIN) {
      saved_errno = errno;
      FailWriterAndReleaseAll(req, saved_errno, "write into");
      if (opt.id_wait.value != 0) return 0;
      errno = saved_errno;
      return -1;
    }
  } else {
    AddOutputBytes(nw);
  }
  if (IsWriteComplete(req, true, nullptr)) {
    ReturnSuccessfulWriteRequest(req);
    return 0;
  }

  // Not finished: continue in a fiber.
  StartKeepWrite(req);
  return 0;
}

void Socket::StartKeepWrite(WriteRequest* req) {
  // The fiber holds its own reference.
  SocketUniquePtr ptr_for_keep_write;
  ReAddress(&ptr_for_keep_write);
  req->socket = ptr_for_keep_write.release();
  bthread_t th;
  if (bthread_start_background(&th, &BTHREAD_ATTR_NORMAL, KeepWrite, req) != 0) {
    WEFT_NET_WARN("fail to start KeepWrite; writing in the caller");
    KeepWrite(req);
  }
}

Socket::WriteRequest* Socket::BeginWriteBatch() {
  // Cheap refusals first: a batch is an optimisation, never needed.
  if (Failed() || fd() < 0 || app_connect_ ||
      write_head_.load(std::memory_order_relaxed) != nullptr) {
    return nullptr;
  }
  WriteRequest* const req = WriteRequest::New();
  if (req == nullptr) return nullptr;
  // An empty request, accounted 0 bytes, no id, no callback: the writer
  // that holds it writes nothing for it.
  req->next.store(WriteRequest::UNCONNECTED, std::memory_order_relaxed);
  // Same publication as StartWrite's exchange (see there).
  WriteRequest* const prev_head = write_head_.exchange(req, std::memory_order_acq_rel);
  if (prev_head != nullptr) {
    // A writer came in between: the empty request rides behind its data
    // like EnsureConnected's probe, and is returned with it.
    req->next.store(prev_head, std::memory_order_release);
    return nullptr;
  }
  req->next.store(nullptr, std::memory_order_relaxed);
  return req;
}

void Socket::EndWriteBatch(WriteRequest* req) {
  if (req == nullptr) return;
  WriteRequest* tail = nullptr;
  // Nothing was queued: give the right to write back (write_head_ to
  // nullptr) and we are done.
  if (IsWriteComplete(req, true, &tail)) {
    ReturnSuccessfulWriteRequest(req);
    return;
  }
  if (Failed()) {
    ReleaseAllFailedWriteRequests(req);
    return;
  }
  // req (empty) -> ... -> tail, oldest first: everything queued during the
  // batch, in one writev (DoWrite stops at a close request).
  ssize_t nw;
  do {
    nw = DoWrite(req);
  } while (nw < 0 && errno == EINTR);
  if (nw < 0) {
    if (errno != EAGAIN) {
      FailWriterAndReleaseAll(req, errno, "write into");
      return;
    }
  } else {
    AddOutputBytes(nw);
  }
  req = ReturnWrittenExceptLast(req);
  if (req->is_close) {
    FinishGracefulClose(req);
    return;
  }
  // All written and nothing newer: done, as StartWrite's single write.
  if (req->data.empty() && req->next.load(std::memory_order_relaxed) == nullptr &&
      IsWriteComplete(req, true, nullptr)) {
    ReturnSuccessfulWriteRequest(req);
    return;
  }
  // Data left (the fd is full) or newer requests: KeepWrite goes on.
  StartKeepWrite(req);
}

Socket::WriteRequest* Socket::ReturnWrittenExceptLast(WriteRequest* r) {
  WriteRequest* next;
  while (!r->is_close && r->data.empty() &&
         (next = r->next.load(std::memory_order_relaxed)) != nullptr) {
    WriteRequest* const done = r;
    r = next;
    ReturnSuccessfulWriteRequest(done);
  }
  return r;
}

void* Socket::KeepWrite(void* arg) {
  net_internal::net_metrics().nkeepwrite << 1;
  WriteRequest* req = static_cast<WriteRequest*>(arg);
  SocketUniquePtr s(req->socket);
  req->socket = nullptr;
  // The last request of the private list, once known.
  WriteRequest* cur_tail = nullptr;
  const auto return_written = [&s](WriteRequest* r) { return s->ReturnWrittenExceptLast(r); };
  for (;;) {
    // The head may have been written completely by the caller.
    req = return_written(req);
    if (req->is_close) {
      // Everything before the close request is written.
      s->FinishGracefulClose(req);
      return nullptr;
    }
    // Only an empty probe (EnsureConnected) can be left with no data here
    // (return_written stops at the last request): nothing to write, and
    // it must not wait for EPOLLOUT.
    const ssize_t nw = req->data.empty() ? 1 : s->DoWrite(req);
    if (nw < 0) {
      // A signal interrupted the call (nothing was written): again.
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        s->FailWriterAndReleaseAll(req, errno, "keep-write into");
        return nullptr;
      }
    } else {
      s->AddOutputBytes(nw);
    }
    req = return_written(req);
    if (req->is_close) {
      s->FinishGracefulClose(req);
      return nullptr;
    }
    WriteRequest* next;
    if (nw <= 0) {
      // The fd is full. The timeout makes the loop come back regularly even
      // if no EPOLLOUT arrives, so new requests are linked and counted.
      net_internal::net_metrics().nwaitepollout << 1;
      const bool pollin = s->on_edge_triggered_events_ != nullptr;
      const timespec duetime =
          base::ns_to_timespec(base::realtime_ns() + WAIT_EPOLLOUT_TIMEOUT_MS * 1000000LL);
      const int rc = s->WaitEpollOut(s->fd(), pollin, &duetime);
      if (rc < 0 && errno != ETIMEDOUT) {
        s->FailWriterAndReleaseAll(req, errno, "wait EPOLLOUT of");
        return nullptr;
      }
      if (s->Failed()) break;
    }
    if (cur_tail == nullptr) {
      cur_tail = req;
      while ((next = cur_tail->next.load(std::memory_order_relaxed)) != nullptr) cur_tail = next;
    }
    if (s->IsWriteComplete(cur_tail, req == cur_tail, &cur_tail)) {
      s->ReturnSuccessfulWriteRequest(req);
      return nullptr;
    }
  }
  // Failed: fail every request, including ones still being pushed, until
  // write_head_ is nullptr again (otherwise later writes would queue behind
  // a writer that no longer exists).
  s->ReleaseAllFailedWriteRequests(req);
  return nullptr;
}

ssize_t Socket::DoWrite(WriteRequest* req) {
  IOBuf* data_list[DATA_LIST_MAX];
  size_t ndata = 0;
  // Stops at a close request: nothing behind it may go out.
  for (WriteRequest* p = req; p != nullptr && !p->is_close && ndata < DATA_LIST_MAX;
       p = p->next.load(std::memory_order_relaxed)) {
    data_list[ndata++] = &p->data;
  }
  return IOBuf::cut_multiple_into_file_descriptor(fd(), data_list, ndata);
}

bool Socket::IsWriteComplete(WriteRequest* old_head, bool singular_node, WriteRequest** new_tail) {
  // old_head is the newest request the writer knows (its tail).
  WriteRequest* new_head = old_head;
  WriteRequest* desired = nullptr;
  bool return_when_no_more = true;
  if (!old_head->data.empty() || !singular_node) {
    // Not done: keep write_head_ as is (non-null) if nothing new came.
    desired = old_head;
    return_when_no_more = false;
  }
  // Acquire pairs with the pushers' exchange (release): the new requests'
  // fields are visible below.
  if (write_head_.compare_exchange_strong(new_head, desired, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
    if (new_tail != nullptr) *new_tail = old_head;
    return return_when_no_more;
  }
  // New requests new_head -> ... -> old_head (newest first): reverse them
  // so they follow old_head oldest first.
  WriteRequest* tail = nullptr;
  WriteRequest* p = new_head;
  do {
    WriteRequest* saved_next;
    int spins = 0;
    // The pusher is between its exchange and its store of next.
    while ((saved_next = p->next.load(std::memory_order_acquire)) == WriteRequest::UNCONNECTED) {
      if (++spins < 64) {
        base::cpu_relax();
      } else {
        sched_yield();
      }
    }
    p->next.store(tail, std::memory_order_relaxed);
    tail = p;
    p = saved_next;
  } while (p != old_head);
  old_head->next.store(tail, std::memory_order_relaxed);
  if (new_tail != nullptr) *new_tail = new_head;
  return false;
}

void Socket::ReturnSuccessfulWriteRequest(WriteRequest* req) {
  // Written: a request with id_wait now waits for its reply, and hears if
  // the connection dies first (see ForgetWrittenId).
  if (req->id_wait.value != 0) KeepWrittenId(req->id_wait);
  unwritten_bytes_.fetch_sub(req->accounted, std::memory_order_relaxed);
  if (req->on_written != nullptr) req->on_written(this, 0, req->on_written_arg);
  WriteRequest::Delete(req);
}

void Socket::FailWriterAndReleaseAll(WriteRequest* req, int error_code, const char* what) {
  if (error_code != EPIPE) {
    WEFT_NET_WARN("fail to %s %s: %s", what, description().c_str(), strerror(error_code));
  }
  SetFailed(error_code, "fail to %s %s: %s", what, description().c_str(), strerror(error_code));
  // With our error or an earlier one: whichever failed the socket first.
  ReleaseAllFailedWriteRequests(req);
}

void Socket::FinishGracefulClose(WriteRequest* req) {
  // fmt nullptr keeps the text CloseGracefully stored. Loses (harmlessly)
  // to an abort that came first: the requests then fail with its error.
  SetFailed(close_error_code_.load(std::memory_order_acquire), nullptr);
  ReleaseAllFailedWriteRequests(req);
}

void Socket::ReturnFailedWriteRequest(WriteRequest* req, int error_code) {
  // Reported before the bytes are uncounted: once unwritten_bytes() reads 0
  // after a failure, every failed writer has been told.
  if (req->id_wait.value != 0) bthread_id_error(req->id_wait, error_code);
  if (req->on_written != nullptr) req->on_written(this, error_code, req->on_written_arg);
  unwritten_bytes_.fetch_sub(req->accounted, std::memory_order_release);
  WriteRequest::Delete(req);
}

Socket::WriteRequest* Socket::ReleaseWriteRequestsExceptLast(WriteRequest* req, int error_code) {
  WriteRequest* next;
  while ((next = req->next.load(std::memory_order_relaxed)) != nullptr) {
    WriteRequest* const failed = req;
    req = next;
    ReturnFailedWriteRequest(failed, error_code);
  }
  return req;
}

void Socket::ReleaseAllFailedWriteRequests(WriteRequest* req) {
  const int error_code = non_zero_error_code();
  for (;;) {
    req = ReleaseWriteRequestsExceptLast(req, error_code);
    // Emptied so IsWriteComplete can hand write_head_ back to nullptr.
    req->data.clear();
    if (IsWriteComplete(req, true, nullptr)) {
      ReturnFailedWriteRequest(req, error_code);
      return;
    }
  }
}

void Socket::AddOutputBytes(ssize_t n) {
  if (n <= 0) return;
  out_bytes_.fetch_add(n, std::memory_order_relaxed);
  last_write_us_.store(base::coarse_monotonic_ns() / 1000, std::memory_order_relaxed);
}

}  // namespace weft

namespace weft {

namespace {
// EnsureConnected's wait: the probe's completion stores the outcome and
// signals (CountdownEvent::signal touches nothing after the count, so the
// waiter may return and free this at once).
struct ConnectWait {
  CountdownEvent done{1};
  std::atomic<int> error_code{0};
};
}  // namespace

int Socket::EnsureConnected(const timespec* abstime) {
  if (Failed()) {
    errno = non_zero_error_code();
    return -1;
  }
  // Connected, with no AppConnect that could still be running.
  if (fd() >= 0 && !app_connect_) return 0;
  ConnectWait wait;
  WriteOptions opt;
  opt.abstime = abstime;
  opt.ignore_eovercrowded = true;
  opt.on_written = [](Socket*, int error_code, void* arg) {
    ConnectWait* const w = static_cast<ConnectWait*>(arg);
    // Relaxed: the signal's release (and wait's acquire) order it.
    w->error_code.store(error_code, std::memory_order_relaxed);
    w->done.signal();
  };
  opt.on_written_arg = &wait;
  // An empty request goes through the write path like any other: it starts
  // the connect if nobody has, or queues behind the writes (and the
  // connect) in progress, and completes once everything before it is out.
  IOBuf nothing;
  PushWrite(&nothing, opt);
  wait.done.wait();
  const int rc = wait.error_code.load(std::memory_order_relaxed);
  if (rc != 0) {
    errno = rc;
    return -1;
  }
  return 0;
}

}  // namespace weft
