// Socket's connect path: a client socket (no fd, a remote_side) connects on
// its first write.
//
// ConnectIfNot -> Connect starts a non-blocking connect and hands the fd to
// a temporary socket whose user is an EpollOutRequest; the fd is watched for
// EPOLLOUT and a timer covers the deadline. Whichever comes first, the event
// (HandleEpollOut, in the dispatcher fiber) or the timer
// (HandleEpollOutTimeout), wins SetFailed on the temporary socket and alone
// runs KeepWriteIfConnected, which only starts the connecting fiber: users'
// code never runs in the dispatcher. That fiber runs
// CheckConnectedAndKeepWrite (SO_ERROR, adopt the fd) -> StartAppConnect
// (the AppConnect hook, bounded by the same deadline) -> FinishConnect,
// which either starts KeepWrite for the queued requests, or fails the
// socket and every queued request (their id_wait handlers run there).
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

#include <gflags/gflags.h>

#include "base/time_util.h"
#include "net_log.h"
#include "socket_internal.h"
#include "weft/errno.h"
#include "weft/net/event_dispatcher.h"
#include "weft/net/socket.h"

DEFINE_int32(weft_connect_timeout_as_unreachable, 3,
             "After this many consecutive connect timeouts to one address, the next timeout "
             "is reported as ENETUNREACH");

namespace weft {

std::atomic<void (*)()> net_internal::connect_timeout_count_hook{nullptr};

namespace {

// Consecutive connect timeouts per remote address. Sockets do not outlive a
// failed connect, so the count lives here, in a fixed table of atomic words
// indexed by a hash of the address. A word packs a fingerprint of the
// address (high 32 bits, never 0 for a used word), the count (8 bits) and
// the time of the last timeout in coarse seconds (low 24 bits, compared
// modulo 2^24). 0 means "nothing counted". A successful connect only loads
// its word (one relaxed load when the address never timed out) and clears
// it with one CAS if it holds this address: no lock on the success path.
// Two addresses sharing a slot take it from each other (the count restarts);
// a timeout long after the previous one starts a new run (the address may
// have been reused by another server).
constexpr int64_t kTimeoutRunGapSec = 60;
constexpr size_t kTimeoutSlots = 4096;
constexpr uint64_t kSecMask = (1u << 24) - 1;
std::atomic<uint64_t> g_timeout_slots[kTimeoutSlots];

uint64_t hash_endpoint(const EndPoint& ep) {
  // FNV-1a over the address bytes.
  uint64_t h = 1469598103934665603ULL;
  const unsigned char* p = reinterpret_cast<const unsigned char*>(ep.addr());
  for (socklen_t i = 0; i < ep.addr_len(); ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

struct TimeoutSlot {
  std::atomic<uint64_t>* word;
  uint64_t fingerprint;  // already shifted into the high 32 bits
};

TimeoutSlot timeout_slot(const EndPoint& ep) {
  const uint64_t h = hash_endpoint(ep);
  return TimeoutSlot{&g_timeout_slots[h % kTimeoutSlots], ((h >> 32) | 1) << 32};
}

// True when this timeout is the Nth consecutive one to `ep`.
bool count_timeout_as_unreachable(const EndPoint& ep) {
  const uint64_t now_sec = static_cast<uint64_t>(base::monotonic_ns() / 1000000000) & kSecMask;
  const TimeoutSlot slot = timeout_slot(ep);
  if (auto* hook = net_internal::connect_timeout_count_hook.load(std::memory_order_acquire)) hook();
  uint64_t old = slot.word->load(std::memory_order_relaxed);
  for (;;) {
    uint64_t count = 0;
    if ((old & ~((1ULL << 32) - 1)) == slot.fingerprint) {
      count = (old >> 24) & 0xff;
      const uint64_t last_sec = old & kSecMask;
      if (((now_sec - last_sec) & kSecMask) > static_cast<uint64_t>(kTimeoutRunGapSec)) count = 0;
    }
    ++count;
    const bool unreachable = count >= static_cast<uint64_t>(FLAGS_weft_connect_timeout_as_unreachable);
    if (count > 0xff) count = 0xff;
    // The conversion clears the word: the next timeout starts a new run.
    const uint64_t desired = unreachable ? 0 : (slot.fingerprint | (count << 24) | now_sec);
    // Relaxed: the word is the whole state; nothing else is published.
    if (slot.word->compare_exchange_weak(old, desired, std::memory_order_relaxed)) {
      return unreachable;
    }
  }
}

void reset_timeouts(const EndPoint& ep) {
  const TimeoutSlot slot = timeout_slot(ep);
  uint64_t old = slot.word->load(std::memory_order_relaxed);
  // Another address's count (or none) is left alone. A timeout counted
  // between the load and the CAS makes the CAS fail: the run goes on, as if
  // that timeout came after this success.
  if ((old & ~((1ULL << 32) - 1)) == slot.fingerprint) {
    slot.word->compare_exchange_strong(old, 0, std::memory_order_relaxed);
  }
}

}  // namespace

// One connect of ConnectIfNot, from the connect() call to FinishConnect.
struct Socket::PendingConnect {
  // The first queued request; req->socket holds the connect path's
  // reference to the socket.
  WriteRequest* req = nullptr;
  // The deadline (CLOCK_REALTIME) of the whole connect, TCP and AppConnect.
  bool has_deadline = false;
  timespec deadline{};
  // The TCP outcome, handed to the connecting fiber.
  int fd = -1;
  int err = 0;
  // The AppConnect's deadline timer (0: none) and the fiber that called
  // StartConnect (a failure reported from it needs no other fiber).
  bthread_timer_t app_timer = 0;
  bthread_t connect_fiber = 0;
};

Socket::EpollOutRequest::~EpollOutRequest() {
  // The fd is not ours here: on_epollout_event took it, or Connect closed it.
  if (timer_id != 0) {
    bthread_timer_del(timer_id);
    timer_id = 0;
  }
}

int Socket::ConnectIfNot(const timespec* abstime, WriteRequest* req) {
  if (fd() >= 0) return 0;
  // A writer can win the list just after a failed connect released it; a
  // failed socket must not connect again (it would adopt a new fd).
  if (Failed()) {
    errno = non_zero_error_code();
    return -1;
  }
  if (!remote_side_.is_set()) {
    // Neither connected nor connectable.
    errno = ENOTCONN;
    return -1;
  }
  timespec deadline;
  if (abstime == nullptr && connect_timeout_ms_ > 0) {
    deadline = base::ns_to_timespec(base::realtime_ns() + connect_timeout_ms_ * 1000000LL);
    abstime = &deadline;
  }
  // Owned by the connect path until FinishConnect.
  PendingConnect* const pc = new (std::nothrow) PendingConnect;
  if (pc == nullptr) {
    errno = ENOMEM;
    return -1;
  }
  pc->req = req;
  if (abstime != nullptr) {
    pc->has_deadline = true;
    pc->deadline = *abstime;
  }
  // The connect path holds this reference (in req->socket) until
  // KeepWrite or FinishConnect takes it.
  SocketUniquePtr s;
  ReAddress(&s);
  req->socket = s.get();
  if (Connect(abstime, KeepWriteIfConnected, pc) < 0) {
    // Connect failing means KeepWriteIfConnected never runs.
    req->socket = nullptr;
    delete pc;
    return -1;
  }
  s.release();
  return 1;
}

int Socket::Connect(const timespec* abstime, int (*on_connect)(int, int, void*), void* data) {
  const int sockfd = socket(remote_side_.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (sockfd < 0) return -1;
  if (::connect(sockfd, remote_side_.addr(), remote_side_.addr_len()) != 0 && errno != EINPROGRESS) {
    const int saved_errno = errno;
    close(sockfd);
    errno = saved_errno;
    return -1;
  }
  if (on_connect == nullptr) {
    // Synchronous: wait here (the caller's fiber) for the outcome.
    if (WaitEpollOut(sockfd, false, abstime) != 0 || CheckConnected(sockfd) != 0) {
      const int saved_errno = errno;
      close(sockfd);
      errno = saved_errno;
      return -1;
    }
    return sockfd;
  }

  EpollOutRequest* const req = new (std::nothrow) EpollOutRequest;
  if (req == nullptr) {
    close(sockfd);
    errno = ENOMEM;
    return -1;
  }
  req->fd = sockfd;
  req->on_epollout_event = on_connect;
  req->data = data;
  SocketOptions options;
  options.user = req;  // Deleted in its BeforeRecycle.
  SocketId connect_id;
  if (Socket::Create(options, &connect_id) != 0) {
    const int saved_errno = errno;
    if (connect_id == INVALID_SOCKET_ID) delete req;  // No socket took it.
    close(sockfd);
    errno = saved_errno;
    return -1;
  }
  // Keeps the temporary socket (and req) alive for the rest of this call.
  SocketUniquePtr s;
  if (Socket::Address(connect_id, &s) != 0) {
    close(sockfd);
    errno = EFAILEDSOCKET;
    return -1;
  }

  if (GetGlobalEventDispatcher(sockfd).AddEpollOut(connect_id, sockfd, false) != 0) {
    const int saved_errno = errno;
    // Not in epoll: nobody else will run on_connect, and the caller fails
    // the requests when we return -1.
    s->SetFailed(saved_errno, "fail to add fd=%d into epoll: %s", sockfd, strerror(saved_errno));
    close(sockfd);
    errno = saved_errno;
    return -1;
  }
  // From here the event may already have fired and run on_connect; only the
  // winner of SetFailed on the temporary socket runs it, so the timer is
  // harmless (its Address fails) and any failure below goes through the
  // same race instead of returning -1.
  if (abstime != nullptr) {
    const int rc = bthread_timer_add(&req->timer_id, *abstime, HandleEpollOutTimeout,
                                     reinterpret_cast<void*>(connect_id));
    if (rc != 0) s->HandleEpollOutRequest(rc, req);
  }
  // From here SetFailed on this socket cancels the connect (published only
  // now: a cancel closes sockfd, which must not happen before it is in
  // epoll). A SetFailed that came earlier found nothing to cancel, so check
  // again; the cancel, the event and the timer still race on the temporary
  // socket's SetFailed and only one runs on_connect.
  connect_id_.store(connect_id, std::memory_order_release);
  if (Failed()) s->HandleEpollOutRequest(ECANCELED, req);
  return sockfd;
}

int Socket::CheckConnected(int sockfd) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(sockfd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return -1;
  if (err != 0) {
    errno = err;
    return -1;
  }
  return 0;
}

int Socket::HandleEpollOutRequest(int error_code, EpollOutRequest* req) {
  // Called on the temporary socket by the event and by the timer; the first
  // SetFailed wins the right to run the callback. The caller holds a
  // reference, so `req` (deleted when this socket recycles) stays valid.
  if (SetFailed() != 0) return -1;
  GetGlobalEventDispatcher(req->fd).RemoveEpollOut(id(), req->fd, false);
  return req->on_epollout_event(req->fd, error_code, req->data);
}

void Socket::HandleEpollOutTimeout(void* arg) {
  // Runs on the timer thread: the failure path calls users' id_wait
  // handlers, which must not delay other timers, so move to a fiber.
  // A lambda in a member function may call the private handler.
  void* (*const run)(void*) = [](void* id_arg) -> void* {
    SocketUniquePtr s;
    if (Socket::Address(reinterpret_cast<SocketId>(id_arg), &s) != 0) return nullptr;  // Event won.
    EpollOutRequest* const req = net_internal::as_epollout_request(s->user());
    if (req != nullptr) s->HandleEpollOutRequest(ETIMEDOUT, req);
    return nullptr;
  };
  bthread_t th;
  if (bthread_start_background(&th, &BTHREAD_ATTR_NORMAL, run, arg) != 0) run(arg);
}

int Socket::KeepWriteIfConnected(int fd, int err, void* data) {
  // Called by whoever won the temporary socket's SetFailed: the dispatcher
  // fiber (HandleEpollOut), the connect timer's fiber, a SetFailed of the
  // main socket cancelling the connect (any caller), or Connect itself.
  // None of them may run what follows: the AppConnect hook (a handshake may
  // block) and, on failure, every queued request's id_wait handler (users'
  // code). One slow handshake in the dispatcher would stall every socket of
  // that dispatcher, so the rest runs in a fiber of its own.
  PendingConnect* const pc = static_cast<PendingConnect*>(data);
  pc->fd = fd;
  pc->err = err;
  // Starting the fiber publishes pc's fields to it (the run queue's
  // release/acquire hands the fiber over).
  bthread_t th;
  if (bthread_start_background(&th, &BTHREAD_ATTR_NORMAL, RunCheckConnected, pc) != 0) {
    WEFT_NET_WARN("fail to start a connecting fiber; checking the connect in the caller");
    CheckConnectedAndKeepWrite(fd, err, pc);
  }
  return 0;
}

void* Socket::RunCheckConnected(void* arg) {
  PendingConnect* const pc = static_cast<PendingConnect*>(arg);
  CheckConnectedAndKeepWrite(pc->fd, pc->err, pc);
  return nullptr;
}

void Socket::CheckConnectedAndKeepWrite(int fd, int err, void* data) {
  PendingConnect* const pc = static_cast<PendingConnect*>(data);
  Socket* const s = pc->req->socket;
  // Failed while connecting (SetFailed also cancels the connect, but may
  // lose the race with the event that brought us here): do not adopt fd.
  if (err == 0 && s->Failed()) err = s->non_zero_error_code();
  if (err == 0 && s->CheckConnected(fd) == 0 && s->ResetFileDescriptor(fd) == 0) {
    // The socket owns fd now. A SetFailed between the check above and the
    // adoption saw no fd to shut down: do it here, so KeepWrite's writes
    // fail (EPIPE) and it reports the queued requests.
    if (s->Failed()) shutdown(fd, SHUT_RDWR);
    // TCP reached the address, whatever the AppConnect makes of it.
    reset_timeouts(s->remote_side_);
    if (s->app_connect_) {
      s->StartAppConnect(pc);
    } else {
      FinishConnect(pc, 0, true);
    }
    return;
  }
  if (err == 0) err = errno != 0 ? errno : EFAILEDSOCKET;
  close(fd);
  FinishConnect(pc, err, true);
}

void Socket::StartAppConnect(PendingConnect* pc) {
  // Runs in the connecting fiber (KeepWriteIfConnected).
  // `done` (AfterAppConnected) and the deadline's timer race to end the
  // handshake; the winner is whoever locks `id` first, and it destroys the
  // id, so the other (a timer firing after done, a done arriving after the
  // deadline, a second done) finds it gone (EINVAL) and does nothing. The
  // id is a versioned name, so a late done never touches freed memory: pc
  // itself is freed by the winner. Without a deadline nothing bounds a
  // handshake that never calls done.
  pc->connect_fiber = bthread_self();
  // Ours until StartConnect returns: a winner that fails the socket drops
  // the connect path's reference meanwhile, and StartConnect must still be
  // handed a live socket. Also keeps the hook alive across the call.
  SocketUniquePtr guard;
  ReAddress(&guard);
  const std::shared_ptr<AppConnect> app = app_connect_;
  bthread_id_t id;
  if (bthread_id_create(&id, pc, nullptr) != 0) {
    FinishConnect(pc, ENOMEM, false);
    return;
  }
  if (pc->has_deadline) {
    // Held while arming the timer: the timer's fiber locks the id before it
    // touches pc, so it cannot free pc before app_timer is stored, and done
    // (only possible once StartConnect runs) reads app_timer after locking
    // the id, which orders it after this store.
    bthread_id_lock(id, nullptr);
    if (bthread_timer_add(&pc->app_timer, pc->deadline, OnAppConnectTimeout,
                          reinterpret_cast<void*>(id.value)) != 0) {
      pc->app_timer = 0;
      WEFT_NET_WARN("fail to arm the AppConnect deadline of %s; the handshake is unbounded",
                    description().c_str());
    }
    bthread_id_unlock(id);
  }
  app->StartConnect(this, AfterAppConnected, reinterpret_cast<void*>(id.value));
}

void Socket::AfterAppConnected(int err, void* data) {
  // The AppConnect's done: any thread, any time, even after the deadline
  // failed the socket (then the id is gone and this is a no-op).
  const bthread_id_t id{reinterpret_cast<uint64_t>(data)};
  void* p = nullptr;
  if (bthread_id_lock(id, &p) != 0) return;
  PendingConnect* const pc = static_cast<PendingConnect*>(p);
  bthread_id_unlock_and_destroy(id);
  // 0: removed before it ran; 1: its fiber is on the way and will find the
  // id gone. Either way pc is ours alone now.
  if (pc->app_timer != 0) bthread_timer_del(pc->app_timer);
  if (err == 0 || bthread_self() == pc->connect_fiber) {
    // Success runs no user code (KeepWrite gets a fiber of its own); a
    // failure reported from inside StartConnect is already in the
    // connecting fiber.
    FinishConnect(pc, err, false);
    return;
  }
  // Reported from the hook's own context (its reading fiber, a pthread,
  // possibly a dispatcher): the id_wait handlers run in a fiber of their
  // own instead. Starting it publishes pc->err.
  pc->err = err;
  void* (*const run)(void*) = [](void* arg) -> void* {
    PendingConnect* const pending = static_cast<PendingConnect*>(arg);
    FinishConnect(pending, pending->err, false);
    return nullptr;
  };
  bthread_t th;
  if (bthread_start_background(&th, &BTHREAD_ATTR_NORMAL, run, pc) != 0) run(pc);
}

void Socket::OnAppConnectTimeout(void* arg) {
  // Runs on the timer thread: failing the socket calls users' id_wait
  // handlers, and the id lock may wait for StartAppConnect, so move to a
  // fiber.
  void* (*const run)(void*) = [](void* id_arg) -> void* {
    const bthread_id_t id{reinterpret_cast<uint64_t>(id_arg)};
    void* p = nullptr;
    if (bthread_id_lock(id, &p) != 0) return nullptr;  // done came first.
    PendingConnect* const pc = static_cast<PendingConnect*>(p);
    bthread_id_unlock_and_destroy(id);
    FinishConnect(pc, ETIMEDOUT, false);
    return nullptr;
  };
  bthread_t th;
  if (bthread_start_background(&th, &BTHREAD_ATTR_NORMAL, run, arg) != 0) run(arg);
}

void Socket::FinishConnect(PendingConnect* pc, int err, bool tcp) {
  WriteRequest* const req = pc->req;
  delete pc;
  if (err == 0) {
    // KeepWrite takes req and the reference in req->socket.
    bthread_t th;
    if (bthread_start_background(&th, &BTHREAD_ATTR_NORMAL, KeepWrite, req) != 0) {
      WEFT_NET_WARN("fail to start KeepWrite; writing in the connecting fiber");
      KeepWrite(req);
    }
    return;
  }
  SocketUniquePtr s(req->socket);
  req->socket = nullptr;
  if (tcp) {
    // Only TCP timeouts say the address may be unreachable.
    if (err == ETIMEDOUT && count_timeout_as_unreachable(s->remote_side_)) err = ENETUNREACH;
    s->SetFailed(err, "fail to connect %s: %s", s->description().c_str(), strerror(err));
  } else {
    s->SetFailed(err, "the AppConnect of %s failed%s: %s", s->description().c_str(),
                 err == ETIMEDOUT ? " to finish before the connect deadline" : "", strerror(err));
  }
  s->ReleaseAllFailedWriteRequests(req);
}

}  // namespace weft
