// Socket: pool, references, failure and recycling, input events.
// The write path is in socket_write.cpp, connecting in socket_connect.cpp.
#include "weft/net/socket.h"

#include <errno.h>
#include <fcntl.h>
#include <gflags/gflags.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/time_util.h"
#include "net_log.h"
#include "net_metrics.h"
#include "socket_internal.h"
#include "socket_pool.h"
#include "weft/butex.h"
#include "weft/errno.h"
#include "weft/net/event_dispatcher.h"
#include "written_id_set.h"

DEFINE_int32(weft_socket_send_buffer_size, 0,
             "SO_SNDBUF of every socket weft sets up; <= 0 keeps the system's");
DEFINE_int32(weft_socket_close_flush_ms, 2000,
             "A graceful close (EOF, a stopping server, an idle timeout) flushes the writes "
             "already accepted for at most this long before the connection closes anyway; "
             "<= 0: close at once, dropping them");
DEFINE_int32(weft_socket_recv_buffer_size, 0,
             "SO_RCVBUF of every socket weft sets up; <= 0 keeps the system's");

namespace weft {

using net_internal::make_socket_id;
using net_internal::make_vref;
using net_internal::nref_of_vref;
using net_internal::slot_of_id;
using net_internal::socket_pool;
using net_internal::version_of_id;
using net_internal::version_of_vref;

namespace {
std::atomic<int64_t> g_live_sockets{0};
}  // namespace

void SocketDeleter::operator()(Socket* s) const { s->Dereference(); }

Socket::Socket()
    : epollout_butex_(butex_create_checked<std::atomic<int>>()),
      written_ids_(new net_internal::WrittenIdSet) {}

// Never runs: pool objects live for the whole process.
Socket::~Socket() {
  butex_destroy(epollout_butex_);
}

int64_t Socket::live_count() { return g_live_sockets.load(std::memory_order_relaxed); }

int Socket::Create(const SocketOptions& options, SocketId* id) {
  const uint32_t slot = socket_pool().alloc();
  Socket* const m = slot == net_internal::SocketPool::kInvalid ? nullptr : socket_pool().at(slot);
  if (m != nullptr && m->epollout_butex_ == nullptr) {
    // The pool built this slot when butex_create failed: try again.
    m->epollout_butex_ = butex_create_checked<std::atomic<int>>();
  }
  if (m == nullptr || m->epollout_butex_ == nullptr) {
    if (m != nullptr) socket_pool().free(slot);
    if (options.fd >= 0) close(options.fd);
    *id = INVALID_SOCKET_ID;
    errno = ENOMEM;
    return -1;
  }
  // The slot is free: its version is even and its reference count is 0,
  // except for a stale Address() that is about to undo its increment, which
  // is why the reference below is added, not stored.
  const uint32_t version = version_of_vref(m->versioned_ref_.load(std::memory_order_relaxed));
  m->this_id_ = make_socket_id(version, slot);
  m->remote_side_ = options.remote_side;
  m->local_side_ = EndPoint();
  m->user_ = options.user;
  m->on_edge_triggered_events_ = options.on_edge_triggered_events;
  m->app_connect_ = options.app_connect;
  m->keytable_pool_ = options.keytable_pool;
  m->connect_timeout_ms_ = options.connect_timeout_ms;
  m->connect_id_.store(INVALID_SOCKET_ID, std::memory_order_relaxed);
  m->app_connect_id_.store(0, std::memory_order_relaxed);
  m->nevent_.store(0, std::memory_order_relaxed);
  m->hup_seen_.store(false, std::memory_order_relaxed);
  m->error_code_.store(0, std::memory_order_relaxed);
  m->close_error_code_.store(0, std::memory_order_relaxed);
  m->close_timer_ = 0;
  m->written_ids_->Reset();
  {
    std::lock_guard<std::mutex> guard(m->error_mu_);
    m->error_text_.clear();
  }
  m->in_bytes_.store(0, std::memory_order_relaxed);
  m->out_bytes_.store(0, std::memory_order_relaxed);
  const int64_t now_us = base::coarse_monotonic_ns() / 1000;
  m->last_read_us_.store(now_us, std::memory_order_relaxed);
  m->last_write_us_.store(now_us, std::memory_order_relaxed);
  g_live_sockets.fetch_add(1, std::memory_order_relaxed);
  // The reference Create holds until SetFailed. Release publishes the fields
  // above to whoever addresses the new id (acquire in Address).
  m->versioned_ref_.fetch_add(1, std::memory_order_release);
  *id = m->this_id_;
  // Only now may epoll report events for this id.
  if (m->ResetFileDescriptor(options.fd, options.fd_nonblocking_cloexec) != 0) {
    const int saved_errno = errno;
    m->SetFailed(saved_errno, "fail to set up fd=%d: %s", options.fd, strerror(saved_errno));
    // ResetFileDescriptor left fd_ at -1, so recycling will not close it.
    close(options.fd);
    errno = saved_errno;
    return -1;
  }
  return 0;
}

int Socket::ResetFileDescriptor(int fd, bool flags_set) {
  if (fd < 0) {
    fd_.store(-1, std::memory_order_release);
    return 0;
  }
  if (SetUpFileDescriptor(fd, flags_set) != 0) {
    const int saved_errno = errno;
    // The caller keeps ownership of fd on failure.
    fd_.store(-1, std::memory_order_release);
    errno = saved_errno;
    return -1;
  }
  return 0;
}

int Socket::SetUpFileDescriptor(int fd, bool flags_set) {
  local_side_ = get_local_side(fd);
  if (remote_side_.is_set() == false) remote_side_ = get_remote_side(fd);
  // Release: whoever sees fd() >= 0 (acquire) also sees the sides above.
  // Stored before the fd enters epoll: the reading fiber reads it.
  // seq_cst, not just release: the connect path stores the fd here and then
  // loads Failed() (seq_cst), while SetFailed moves the version (seq_cst)
  // and then loads fd_ (seq_cst). In the single total order of these four,
  // at least one side sees the other's store, so a socket failed while
  // adopting its fd either finds the fd in SetFailed (and shuts it down) or
  // is seen failed by the connect path (which shuts it down). With
  // release/acquire both loads could miss (store-buffering).
  fd_.store(fd, std::memory_order_seq_cst);
  // Four syscalls per connection that accept4's flags make unnecessary.
  if (!flags_set) {
    const int fd_flags = fcntl(fd, F_GETFD);
    if (fd_flags < 0 || fcntl(fd, F_SETFD, fd_flags | FD_CLOEXEC) != 0) return -1;
    const int fl_flags = fcntl(fd, F_GETFL);
    if (fl_flags < 0 || fcntl(fd, F_SETFL, fl_flags | O_NONBLOCK) != 0) return -1;
  }
  // Fails harmlessly on non-TCP fds (unix sockets, pipes, listeners).
  const int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  if (FLAGS_weft_socket_send_buffer_size > 0) {
    const int size = FLAGS_weft_socket_send_buffer_size;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)) != 0) {
      WEFT_NET_WARN("fail to set SO_SNDBUF of fd=%d to %d: %s", fd, size, strerror(errno));
    }
  }
  if (FLAGS_weft_socket_recv_buffer_size > 0) {
    const int size = FLAGS_weft_socket_recv_buffer_size;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) != 0) {
      WEFT_NET_WARN("fail to set SO_RCVBUF of fd=%d to %d: %s", fd, size, strerror(errno));
    }
  }
  if (on_edge_triggered_events_ != nullptr) {
    if (GetGlobalEventDispatcher(fd).AddConsumer(id(), fd) != 0) {
      return -1;
    }
  }
  return 0;
}

int Socket::AddressImpl(SocketId id, bool failed_too, SocketUniquePtr* ptr) {
  Socket* const m = socket_pool().at(slot_of_id(id));
  if (m == nullptr) return -1;
  // Acquire pairs with the release in Create: a matching version means the
  // fields were set up for this id.
  const uint64_t vref1 = m->versioned_ref_.fetch_add(1, std::memory_order_acquire);
  const uint32_t ver1 = version_of_vref(vref1);
  if (ver1 == version_of_id(id)) {
    ptr->reset(m);
    return 0;
  }
  if (failed_too && ver1 == version_of_id(id) + 1) {
    ptr->reset(m);
    return 1;
  }
  m->UndoAddress(ver1);
  return -1;
}

int Socket::Address(SocketId id, SocketUniquePtr* ptr) { return AddressImpl(id, false, ptr); }

int Socket::AddressFailedAsWell(SocketId id, SocketUniquePtr* ptr) {
  return AddressImpl(id, true, ptr);
}

void Socket::UndoAddress(uint32_t ver1) {
  // The slot's version did not match: drop the reference we added. If it
  // was the last reference to a failed socket (odd version, the one we saw
  // or the one right after it), recycling falls to us.
  const uint64_t vref2 = versioned_ref_.fetch_sub(1, std::memory_order_acq_rel);
  if (nref_of_vref(vref2) != 1) return;
  const uint32_t ver2 = version_of_vref(vref2);
  if ((ver2 & 1) != 0 && (ver1 == ver2 || ver1 + 1 == ver2)) {
    uint64_t expected = vref2 - 1;
    if (versioned_ref_.compare_exchange_strong(expected, make_vref(ver2 + 1, 0),
                                               std::memory_order_acquire)) {
      OnRecycle();
    }
  }
}

void Socket::ReAddress(SocketUniquePtr* ptr) {
  // The caller holds a reference, so the socket cannot recycle meanwhile.
  versioned_ref_.fetch_add(1, std::memory_order_relaxed);
  ptr->reset(this);
}

int Socket::Dereference() {
  // Read before dropping our reference: afterwards the slot may be reused.
  const SocketId id = this_id_;
  // Release: our writes to the socket happen before whoever recycles it.
  const uint64_t vref = versioned_ref_.fetch_sub(1, std::memory_order_acq_rel);
  const uint32_t nref = nref_of_vref(vref);
  if (nref > 1) return 0;
  if (nref == 1) {
    const uint32_t ver = version_of_vref(vref);
    const uint32_t id_ver = version_of_id(id);
    if (ver == id_ver || ver == id_ver + 1) {
      // Fails if someone addressed the socket in between; their release will
      // see the count reach zero and recycle instead.
      uint64_t expected = vref - 1;
      if (versioned_ref_.compare_exchange_strong(expected, make_vref(id_ver + 2, 0),
                                                 std::memory_order_acquire)) {
        OnRecycle();
        return 1;
      }
      return 0;
    }
    fprintf(stderr, "weft net: dereferenced SocketId %llu of another version\n",
            static_cast<unsigned long long>(id));
    abort();
  }
  fprintf(stderr, "weft net: SocketId %llu dereferenced more than referenced\n",
          static_cast<unsigned long long>(id));
  abort();
}

void Socket::OnRecycle() {
  if (app_connect_) app_connect_->StopConnect(this);
  app_connect_.reset();
  const int prev_fd = fd_.exchange(-1, std::memory_order_relaxed);
  if (prev_fd >= 0) {
    if (on_edge_triggered_events_ != nullptr)
      GetGlobalEventDispatcher(prev_fd).RemoveConsumer(prev_fd);
    close(prev_fd);
  }
  // Before the user hears of the recycle: a context may refer to it.
  DestroyContexts();
  read_buf_.clear();
  nevent_.store(0, std::memory_order_relaxed);
  on_edge_triggered_events_ = nullptr;
  keytable_pool_ = nullptr;
  // Every accepted write was either written or failed before the last
  // reference went (KeepWrite and the writers hold references).
  if (write_head_.load(std::memory_order_relaxed) != nullptr) {
    fprintf(stderr, "weft net: socket recycled with queued writes\n");
    abort();
  }
  unwritten_bytes_.store(0, std::memory_order_relaxed);
  // The flush bound may still be armed (the flush ended first): its
  // callback addresses the socket by id, so a late one finds nothing, but
  // there is no need to keep it.
  if (close_timer_ != 0) {
    bthread_timer_del(close_timer_);
    close_timer_ = 0;
  }
  // Nobody adds any more: the last writer's reference is gone.
  written_ids_->Reset();
  SocketUser* const user = user_;
  user_ = nullptr;
  const uint32_t slot = slot_of_id(this_id_);
  g_live_sockets.fetch_sub(1, std::memory_order_relaxed);
  if (user != nullptr) user->BeforeRecycle(this);
  socket_pool().free(slot);
}

void Socket::StoreErrorText(const char* fmt, va_list ap) {
  char text[256];
  vsnprintf(text, sizeof(text), fmt, ap);
  std::lock_guard<std::mutex> guard(error_mu_);
  error_text_ = text;
}

int Socket::SetFailed(int error_code, const char* fmt, ...) {
  if (error_code == 0) error_code = EFAILEDSOCKET;
  const uint32_t id_ver = version_of_id(this_id_);
  // Claim the failure on error_code_ first (one winner), so the code and
  // text are in place before the version says "failed": the version CAS
  // below is a release and Failed() an acquire, so whoever sees the socket
  // failed reads its real error, never the EFAILEDSOCKET placeholder.
  {
    int expected = 0;
    if (!error_code_.compare_exchange_strong(expected, error_code, std::memory_order_relaxed)) {
      return -1;
    }
  }
  if (fmt != nullptr) {
    va_list ap;
    va_start(ap, fmt);
    StoreErrorText(fmt, ap);
    va_end(ap);
  }
  uint64_t vref = versioned_ref_.load(std::memory_order_relaxed);
  for (;;) {
    if (version_of_vref(vref) != id_ver) return -1;
    // Only one caller moves the version from id_ver to id_ver + 1.
    // seq_cst (a release at least, for the error code above): pairs with
    // the fd_ store / Failed() load of the connect path, see
    // SetUpFileDescriptor.
    if (versioned_ref_.compare_exchange_strong(vref, make_vref(id_ver + 1, nref_of_vref(vref)),
                                               std::memory_order_seq_cst,
                                               std::memory_order_relaxed)) {
      break;
    }
  }
  // Let the peer see the end now, not when the last reference goes: the fd
  // number itself stays ours (no reuse) until recycling closes it. Writers
  // still inside writev get EPIPE; the reading fiber reads EOF. seq_cst:
  // see the version CAS above.
  const int fd = fd_.load(std::memory_order_seq_cst);
  if (fd >= 0) shutdown(fd, SHUT_RDWR);
  // Calls whose requests went out and are waiting for replies hear it now.
  ErrorWrittenIds(error_code);
  // A connect in flight (ConnectIfNot) is cancelled now rather than when it
  // completes or times out: failing its temporary socket runs the connect
  // callback with ECANCELED, which fails every queued request with this
  // socket's error. A no-op once the connect finished.
  const SocketId connect_id = connect_id_.exchange(INVALID_SOCKET_ID, std::memory_order_acq_rel);
  if (connect_id != INVALID_SOCKET_ID) {
    SocketUniquePtr temp;
    if (Address(connect_id, &temp) == 0) {
      EpollOutRequest* const req = net_internal::as_epollout_request(temp->user());
      if (req != nullptr) temp->HandleEpollOutRequest(ECANCELED, req);
    }
  }
  // A handshake in progress ends now too (its queued requests hear this
  // socket's error). seq_cst pairs with StartAppConnect's store and Failed()
  // check: either it sees the id here or it sees the socket failed.
  const uint64_t app_id = app_connect_id_.exchange(0, std::memory_order_seq_cst);
  if (app_id != 0) EndAppConnectInFiber(app_id, error_code);
  // Wake KeepWrite (and anyone in WaitEpollOut): it re-checks and fails its
  // queued requests. The increment makes a waiter that has read the old
  // value but not yet slept return at once.
  epollout_butex_->fetch_add(1, std::memory_order_release);
  butex_wake_all(epollout_butex_);
  // Drop the reference Create took.
  Dereference();
  return 0;
}

int Socket::SetFailed() { return SetFailed(EFAILEDSOCKET, nullptr); }

int Socket::CloseGracefully(int error_code, const char* fmt, ...) {
  if (error_code == 0) error_code = EFAILEDSOCKET;
  if (Failed()) return -1;
  {
    // One close wins; Write refuses from the moment it reads the code
    // (acquire pairs with this release).
    int expected = 0;
    if (!close_error_code_.compare_exchange_strong(expected, error_code, std::memory_order_acq_rel,
                                                   std::memory_order_relaxed)) {
      return -1;
    }
  }
  if (fmt != nullptr) {
    // The text the failure will carry (SetFailed(code, nullptr) below keeps
    // it; an abort meanwhile replaces it with its own).
    va_list ap;
    va_start(ap, fmt);
    StoreErrorText(fmt, ap);
    va_end(ap);
  }
  const int flush_ms = FLAGS_weft_socket_close_flush_ms;
  if (flush_ms <= 0) return SetFailed(error_code, nullptr) == 0 ? 0 : -1;
  // The bound: past it OnCloseFlushTimeout aborts whatever is left. Armed
  // before the close request is pushed, so the flush cannot end (and the
  // socket recycle) before close_timer_ is set: our caller's reference
  // keeps the socket alive through this call.
  const timespec due = base::ns_to_timespec(base::realtime_ns() + flush_ms * 1000000LL);
  if (bthread_timer_add(&close_timer_, due, OnCloseFlushTimeout,
                        reinterpret_cast<void*>(this_id_)) != 0) {
    close_timer_ = 0;
    WEFT_NET_WARN("fail to arm the close flush timer of %s; flushing unbounded",
                  description().c_str());
  }
  // Behind every accepted write: the writer flushes them and then, reaching
  // this request, fails the socket (FinishGracefulClose). If nobody is
  // writing, StartWrite finishes the close at once.
  WriteRequest* const req = WriteRequest::New();
  if (req == nullptr) return SetFailed(error_code, nullptr) == 0 ? 0 : -1;
  req->is_close = true;
  req->accounted = 0;
  req->id_wait = INVALID_BTHREAD_ID;
  req->socket = nullptr;
  req->next.store(WriteRequest::UNCONNECTED, std::memory_order_relaxed);
  static const WriteOptions kCloseOptions;
  StartWrite(req, kCloseOptions);
  return 0;
}

void Socket::OnCloseFlushTimeout(void* arg) {
  // Runs on the timer thread: SetFailed reports to id_wait handlers (users'
  // code), which must not delay other timers, so move to a fiber.
  void* (*const run)(void*) = [](void* id_arg) -> void* {
    SocketUniquePtr s;
    // Fails (nothing to do) once the flush ended and the socket failed.
    if (Socket::Address(reinterpret_cast<SocketId>(id_arg), &s) != 0) return nullptr;
    s->SetFailed(s->close_error_code_.load(std::memory_order_acquire),
                 "%s: queued writes not flushed within --weft_socket_close_flush_ms=%d",
                 s->description().c_str(), FLAGS_weft_socket_close_flush_ms);
    return nullptr;
  };
  bthread_t th;
  if (bthread_start_background(&th, &BTHREAD_ATTR_NORMAL, run, arg) != 0) run(arg);
}

void Socket::KeepWrittenId(bthread_id_t id) {
  if (written_ids_->Add(id.value)) return;
  // The socket failed while this request was being returned: ErrorWrittenIds
  // already closed the set, so tell the id here (the set's lock is not held:
  // the handler may call ForgetWrittenId).
  bthread_id_error(id, non_zero_error_code());
}

void Socket::ForgetWrittenId(bthread_id_t id) { written_ids_->Remove(id.value); }

size_t Socket::written_id_count() const { return written_ids_->size(); }

void Socket::ErrorWrittenIds(int error_code) {
  std::vector<uint64_t> ids;
  written_ids_->Close(&ids);
  // Handlers run outside the set's lock (they may call ForgetWrittenId). An
  // id whose call already ended is destroyed: bthread_id_error answers
  // EINVAL.
  for (const uint64_t v : ids) bthread_id_error(bthread_id_t{v}, error_code);
}

int Socket::SetFailed(SocketId id) {
  SocketUniquePtr ptr;
  if (Address(id, &ptr) != 0) return -1;
  return ptr->SetFailed();
}

bool Socket::Failed() const {
  // seq_cst (acquire at least): the connect path's check after adopting the
  // fd relies on it, see SetUpFileDescriptor. Costs an acquire on x86/ARM.
  return version_of_vref(versioned_ref_.load(std::memory_order_seq_cst)) != version_of_id(this_id_);
}

int Socket::non_zero_error_code() const {
  const int ec = error_code_.load(std::memory_order_acquire);
  return ec != 0 ? ec : EFAILEDSOCKET;
}

std::string Socket::error_text() const {
  std::lock_guard<std::mutex> guard(error_mu_);
  return error_text_;
}

std::string Socket::description() const {
  std::string out = "Socket{id=" + std::to_string(this_id_) + " fd=" + std::to_string(fd());
  if (remote_side_.is_set()) out += " remote=" + remote_side_.to_string();
  out += "}";
  return out;
}

int64_t Socket::last_active_us() const {
  const int64_t r = last_read_us_.load(std::memory_order_relaxed);
  const int64_t w = last_write_us_.load(std::memory_order_relaxed);
  return r > w ? r : w;
}

// ---- input ----

int Socket::StartInputEvent(SocketId id, uint32_t events, const bthread_attr_t& thread_attr,
                            bool urgent) {
  SocketUniquePtr s;
  if (Address(id, &s) != 0) return -1;
  if (s->on_edge_triggered_events_ == nullptr) {
    // Error events of an fd registered only for EPOLLOUT (connecting).
    return 0;
  }
  if (s->fd() < 0) return -1;
  // The events themselves are not passed on: the reading fiber learns
  // everything (data, EOF, errors) from read(). acq_rel: the reading fiber's
  // last MoreReadEvents (release) happens before we see 0 here, and our
  // increment is visible to its CAS.
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    // Before the increment, whose release makes it visible to the reader
    // that acquires nevent_ (in MoreReadEvents or at its start).
    s->hup_seen_.store(true, std::memory_order_relaxed);
  }
  if (s->nevent_.fetch_add(1, std::memory_order_acq_rel) == 0) {
    net_internal::net_metrics().neventthread << 1;
    bthread_attr_t attr = thread_attr;
    attr.keytable_pool = s->keytable_pool_;
    // The reference moves to the fiber.
    Socket* const p = s.release();
    // Urgent: run the reader on this worker now, while the data is hot; the
    // dispatcher fiber waits in the run-next slot (a thief may take it).
    bthread_t tid;
    int rc;
    if (urgent) {
      rc = bthread_start_urgent(&tid, &attr, ProcessEvent, p);
    } else {
      attr.flags |= BTHREAD_NOSIGNAL;
      rc = bthread_start_background(&tid, &attr, ProcessEvent, p);
    }
    if (rc != 0) {
      WEFT_NET_WARN("fail to start a reading fiber; reading in the dispatcher");
      ProcessEvent(p);
    }
  }
  return 0;
}

void* Socket::ProcessEvent(void* arg) {
  SocketUniquePtr s(static_cast<Socket*>(arg));
  s->on_edge_triggered_events_(s.get());
  return nullptr;
}

bool Socket::MoreReadEvents(int* progress) {
  // Fails (true) when events arrived since *progress was read: the caller
  // must read again. On success the count is 0 and the next event starts a
  // new reading fiber. Release: our reads of the fd happen before that
  // fiber's (acquire in StartInputEvent's fetch_add).
  return !nevent_.compare_exchange_strong(*progress, 0, std::memory_order_release,
                                          std::memory_order_acquire);
}

ssize_t Socket::DoRead(size_t size_hint, bool bytes_are_activity) {
  bool drained;
  return DoRead(size_hint, bytes_are_activity, &drained);
}

ssize_t Socket::DoRead(size_t size_hint, bool bytes_are_activity, bool* drained) {
  const ssize_t nr = read_buf_.append_from_file_descriptor(fd(), size_hint, drained);
  // Acquire: an event's store before its nevent_ increment that this
  // reader has synchronised with (see hup_seen_) is seen here; one it has
  // not yet synchronised with makes its next MoreReadEvents fail, so it
  // reads again anyway.
  if (*drained && hup_seen_.load(std::memory_order_acquire)) *drained = false;
  if (nr > 0) {
    in_bytes_.fetch_add(nr, std::memory_order_relaxed);
    if (bytes_are_activity) {
      last_read_us_.store(base::coarse_monotonic_ns() / 1000, std::memory_order_relaxed);
    }
  }
  return nr;
}

SocketContext* Socket::InitContext(SocketContext* ctx, SocketContextSlot slot) {
  SocketContext* expected = nullptr;
  // Release publishes the constructed context to context()'s acquire; the
  // loser's acquire reads the winner's.
  if (contexts_[static_cast<int>(slot)].compare_exchange_strong(
          expected, ctx, std::memory_order_acq_rel, std::memory_order_acquire)) {
    return ctx;
  }
  delete ctx;
  return expected;
}

void Socket::DestroyContexts() {
  // After the last reference: nobody else can reach the slots (relaxed).
  for (int slot : {static_cast<int>(SocketContextSlot::kProtocol),
                   static_cast<int>(SocketContextSlot::kMessenger)}) {
    delete contexts_[slot].exchange(nullptr, std::memory_order_relaxed);
  }
}

int Socket::HandleEpollOut(SocketId id) {
  SocketUniquePtr s;
  // A socket may fail before its EPOLLOUT registration lands; it must still
  // be handled (and its waiter woken), hence FailedAsWell.
  if (AddressFailedAsWell(id, &s) < 0) return -1;
  EpollOutRequest* const req = net_internal::as_epollout_request(s->user());
  // A connect's outcome. This runs in the dispatcher fiber: the callback
  // (KeepWriteIfConnected) only starts the connecting fiber, which runs the
  // AppConnect and the id_wait handlers (socket_connect.cpp).
  if (req != nullptr) return s->HandleEpollOutRequest(0, req);
  s->epollout_butex_->fetch_add(1, std::memory_order_release);
  butex_wake_except(s->epollout_butex_, 0);
  return 0;
}

int Socket::WaitEpollOut(int fd, bool pollin, const timespec* abstime) {
  if (fd < 0) {
    errno = EINVAL;
    return -1;
  }
  // Read before registering: an event after this point bumps the word and
  // the wait below returns at once.
  const int expected = epollout_butex_->load(std::memory_order_acquire);
  EventDispatcher& edisp = GetGlobalEventDispatcher(fd);
  if (edisp.AddEpollOut(id(), fd, pollin) != 0) return -1;
  int rc = butex_wait(epollout_butex_, expected, abstime);
  const int saved_errno = errno;
  if (rc < 0 && (saved_errno == EWOULDBLOCK || saved_errno == EINTR)) rc = 0;
  // May fail (the fd left epoll with its consumer at recycling, or the
  // registration was replaced): harmless.
  edisp.RemoveEpollOut(id(), fd, pollin);
  errno = saved_errno;
  return rc;
}

}  // namespace weft
