#include "weft/net/acceptor.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/time_util.h"
#include "net_log.h"
#include "serving_connection.h"
#include "weft/errno.h"

namespace weft {

namespace {
// Backoff while accept() fails for lack of fds or memory: the pending
// connections stay in the kernel's backlog (nothing is dropped) and the
// accepting fiber retries at most this often, so the CPU stays idle.
constexpr int64_t kMinAcceptBackoffUs = 1000;
constexpr int64_t kMaxAcceptBackoffUs = 100 * 1000;
}  // namespace

Acceptor::Acceptor(void (*on_new_messages)(Socket*), void* arg,
                   bthread_keytable_pool_t* keytable_pool)
    : on_new_messages_(on_new_messages), arg_(arg), keytable_pool_(keytable_pool) {
  bthread_mutex_init(&map_mutex_, nullptr);
  bthread_cond_init(&empty_cond_, nullptr);
  listener_user_.owner = this;
}

Acceptor::~Acceptor() {
  // Everything, the caller's connection included: the connections point at
  // this object.
  Stop(/*wait_for_callers_connection=*/true);
  bthread_cond_destroy(&empty_cond_);
  bthread_mutex_destroy(&map_mutex_);
}

int Acceptor::StartAccept(int listened_fd, int idle_timeout_sec) {
  if (listened_fd < 0 || on_new_messages_ == nullptr) {
    if (listened_fd >= 0) close(listened_fd);
    errno = EINVAL;
    return -1;
  }
  bthread_mutex_lock(&map_mutex_);
  if (status_ == RUNNING || status_ == STOPPING) {
    bthread_mutex_unlock(&map_mutex_);
    close(listened_fd);
    errno = EBUSY;
    return -1;
  }
  status_ = RUNNING;
  // Until cleared below, StopAccept waits: the listener's id and the idle
  // closer are not known yet.
  starting_ = true;
  listener_recycled_ = false;
  idle_timeout_sec_ = idle_timeout_sec;
  bthread_mutex_unlock(&map_mutex_);

  SocketOptions options;
  options.fd = listened_fd;
  options.user = &listener_user_;
  options.on_edge_triggered_events = OnNewConnections;
  SocketId id;
  if (Socket::Create(options, &id) != 0) {
    const int saved_errno = errno;
    bthread_mutex_lock(&map_mutex_);
    status_ = STOPPED;
    starting_ = false;
    // Without a socket nobody will report the listener's recycling.
    if (id == INVALID_SOCKET_ID) listener_recycled_ = true;
    bthread_cond_broadcast(&empty_cond_);
    bthread_mutex_unlock(&map_mutex_);
    errno = saved_errno;
    return -1;
  }
  bthread_t idle_tid = 0;
  // The closer also enforces --weft_read_timeout_ms on connections that
  // stopped sending in the middle of a message (no read will notice).
  if ((idle_timeout_sec > 0 || read_timeout_ms() > 0) &&
      bthread_start_background(&idle_tid, &BTHREAD_ATTR_NORMAL, CloseIdleConnections, this) != 0) {
    idle_tid = 0;
    WEFT_NET_WARN("fail to start the idle-connection closer; idle connections stay open");
  }
  bthread_mutex_lock(&map_mutex_);
  acception_id_ = id;
  close_idle_tid_ = idle_tid;
  starting_ = false;
  bthread_cond_broadcast(&empty_cond_);
  bthread_mutex_unlock(&map_mutex_);
  return 0;
}

void Acceptor::StopAccept() { Stop(/*wait_for_callers_connection=*/false); }

void Acceptor::Stop(bool wait_for_callers_connection) {
  bthread_mutex_lock(&map_mutex_);
  while (starting_) bthread_cond_wait(&empty_cond_, &map_mutex_);
  if (status_ == RUNNING) {
    // From now on OnNewConnectionsUntilEAGAIN fails what it accepts.
    status_ = STOPPING;
    stop_issued_ = false;
    const SocketId listener = acception_id_;
    const bthread_t idle_tid = close_idle_tid_;
    close_idle_tid_ = 0;
    bthread_mutex_unlock(&map_mutex_);

    // Shuts the listening fd down: a fiber inside accept() gets an error
    // and returns; the fd closes when the listener recycles.
    Socket::SetFailed(listener);
    std::vector<SocketId> ids;
    ListConnections(&ids);
    for (const SocketId id : ids) {
      SocketUniquePtr s;
      // Graceful: replies already accepted for writing are flushed (bounded
      // by --weft_socket_close_flush_ms) before the connection closes. The
      // caller's own connection too.
      if (Socket::Address(id, &s) == 0) s->CloseGracefully(ELOGOFF, "the acceptor is stopping");
    }
    if (idle_tid != 0) {
      bthread_stop(idle_tid);
      bthread_join(idle_tid, nullptr);
    }
    bthread_mutex_lock(&map_mutex_);
    stop_issued_ = true;
    MaybeFinishStopLocked();
    bthread_cond_broadcast(&empty_cond_);
  } else if (status_ != STOPPING) {
    // Never started, or stopped already.
    bthread_mutex_unlock(&map_mutex_);
    return;
  }
  // STOPPING: this stop or another caller's (possibly one that returned
  // from a handler, leaving its own connection behind). A handler of one of
  // our connections runs in a fiber that keeps that connection alive, so
  // waiting for it would never end: such a caller waits for every other
  // connection. Callers' connections are counted together, so two handlers
  // stopping at once do not wait for each other.
  const SocketId own =
      wait_for_callers_connection ? INVALID_SOCKET_ID : net_internal::serving_connection();
  const bool own_is_ours = own != INVALID_SOCKET_ID && socket_map_.count(own) != 0;
  if (own_is_ours) callers_in_stop_.push_back(own);
  while (!StopWaitOverLocked()) bthread_cond_wait(&empty_cond_, &map_mutex_);
  if (own_is_ours) {
    for (size_t i = 0; i < callers_in_stop_.size(); ++i) {
      if (callers_in_stop_[i] == own) {
        callers_in_stop_[i] = callers_in_stop_.back();
        callers_in_stop_.pop_back();
        break;
      }
    }
  }
  bthread_mutex_unlock(&map_mutex_);
}

bool Acceptor::StopWaitOverLocked() const {
  if (status_ != STOPPING) return true;  // Finished (MaybeFinishStopLocked).
  if (!stop_issued_ || !listener_recycled_) return false;
  // Every connection left must be one whose handler is waiting here.
  size_t callers_left = 0;
  for (size_t i = 0; i < callers_in_stop_.size(); ++i) {
    bool seen = false;
    for (size_t j = 0; j < i; ++j) seen = seen || callers_in_stop_[j] == callers_in_stop_[i];
    if (!seen && socket_map_.count(callers_in_stop_[i]) != 0) ++callers_left;
  }
  return socket_map_.size() == callers_left;
}

void Acceptor::MaybeFinishStopLocked() {
  if (status_ == STOPPING && stop_issued_ && listener_recycled_ && socket_map_.empty()) {
    status_ = STOPPED;
    acception_id_ = INVALID_SOCKET_ID;
  }
}

SocketId Acceptor::listening_id() const {
  bthread_mutex_lock(&map_mutex_);
  const SocketId id = acception_id_;
  bthread_mutex_unlock(&map_mutex_);
  return id;
}

size_t Acceptor::ConnectionCount() const {
  bthread_mutex_lock(&map_mutex_);
  const size_t n = socket_map_.size();
  bthread_mutex_unlock(&map_mutex_);
  return n;
}

void Acceptor::ListConnections(std::vector<SocketId>* ids) const {
  ids->clear();
  bthread_mutex_lock(&map_mutex_);
  ids->reserve(socket_map_.size());
  for (const auto& entry : socket_map_) ids->push_back(entry.first);
  bthread_mutex_unlock(&map_mutex_);
}

void Acceptor::OnNewConnections(Socket* acception) {
  int progress = Socket::PROGRESS_INIT;
  do {
    OnNewConnectionsUntilEAGAIN(acception);
    if (acception->Failed()) return;
  } while (acception->MoreReadEvents(&progress));
}

void Acceptor::OnNewConnectionsUntilEAGAIN(Socket* acception) {
  Acceptor* const am = static_cast<ListenerUser*>(acception->user())->owner;
  int64_t backoff_us = 0;
  for (;;) {
    sockaddr_storage addr{};
    socklen_t addr_len = sizeof(addr);
    const int in_fd = accept4(acception->fd(), reinterpret_cast<sockaddr*>(&addr), &addr_len,
                              SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (in_fd < 0) {
      const int err = errno;
      if (err == EAGAIN) return;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // The connection waits in the backlog; retrying at once would spin
        // (the listener stays readable) and returning would lose the edge.
        WEFT_NET_WARN("accept on fd=%d: %s; retrying with backoff", acception->fd(), strerror(err));
        if (acception->Failed()) return;
        backoff_us = backoff_us == 0 ? kMinAcceptBackoffUs : backoff_us * 2;
        if (backoff_us > kMaxAcceptBackoffUs) backoff_us = kMaxAcceptBackoffUs;
        bthread_usleep(backoff_us);
        continue;
      }
      // EBADF/EINVAL: the listener was shut down (StopAccept).
      if (!acception->Failed()) {
        WEFT_NET_WARN("accept on fd=%d failed: %s", acception->fd(), strerror(err));
        acception->SetFailed(err, "accept failed: %s", strerror(err));
      }
      return;
    }
    backoff_us = 0;
    const size_t max_connections = am->max_connections_.load(std::memory_order_relaxed);
    if (max_connections > 0 && am->ConnectionCount() >= max_connections) {
      // Accepted (so the peer is not left in the backlog) and closed at once.
      close(in_fd);
      continue;
    }
    SocketOptions options;
    options.fd = in_fd;
    options.fd_nonblocking_cloexec = true;  // accept4's flags above
    options.remote_side = EndPoint(reinterpret_cast<const sockaddr*>(&addr), addr_len);
    options.user = am;
    options.on_edge_triggered_events = OnConnectionEvents;
    options.keytable_pool = am->keytable_pool_;
    SocketId socket_id;
    if (Socket::Create(options, &socket_id) != 0) {
      WEFT_NET_WARN("fail to create a socket for an accepted fd: %s", strerror(errno));
      continue;
    }
    // Holding a reference while inserting: the socket cannot recycle (and
    // erase itself from the map) before it is in the map.
    SocketUniquePtr sock;
    if (Socket::AddressFailedAsWell(socket_id, &sock) >= 0) {
      bthread_mutex_lock(&am->map_mutex_);
      const bool running = am->status_ == RUNNING;
      am->socket_map_.emplace(socket_id, 0);
      bthread_mutex_unlock(&am->map_mutex_);
      if (!running) sock->SetFailed(ELOGOFF, "the acceptor is stopping");
    }
  }
}

void Acceptor::OnConnectionEvents(Socket* sock) {
  // The reading fiber serves this connection: a StopAccept from the reading
  // callback (or from a message it runs) does not wait for it.
  net_internal::ServingConnectionScope serving(sock->id());
  static_cast<Acceptor*>(sock->user())->on_new_messages_(sock);
}

void Acceptor::BeforeRecycle(Socket* sock) {
  bthread_mutex_lock(&map_mutex_);
  socket_map_.erase(sock->id());
  MaybeFinishStopLocked();
  // Not only when empty: a handler in StopAccept waits for every connection
  // but its own.
  if (status_ == STOPPING || socket_map_.empty()) bthread_cond_broadcast(&empty_cond_);
  bthread_mutex_unlock(&map_mutex_);
}

void Acceptor::ListenerUser::BeforeRecycle(Socket*) { owner->OnListenerRecycled(); }

void Acceptor::OnListenerRecycled() {
  bthread_mutex_lock(&map_mutex_);
  listener_recycled_ = true;
  MaybeFinishStopLocked();
  bthread_cond_broadcast(&empty_cond_);
  bthread_mutex_unlock(&map_mutex_);
}

void* Acceptor::CloseIdleConnections(void* arg) {
  Acceptor* const am = static_cast<Acceptor*>(arg);
  const int64_t idle_us = static_cast<int64_t>(am->idle_timeout_sec_) * 1000000;
  std::vector<SocketId> ids;
  for (;;) {
    // Check a few times per timeout so a connection closes within ~1/4 of
    // the timeout after it expires. The read timeout is re-read each round
    // (it may be changed at run time).
    int64_t shortest_us = idle_us;
    const int64_t read_us = static_cast<int64_t>(read_timeout_ms()) * 1000;
    if (read_us > 0 && (shortest_us <= 0 || read_us < shortest_us)) shortest_us = read_us;
    int64_t period_us = shortest_us / 4;
    if (period_us < 10000) period_us = 10000;
    if (period_us > 1000000) period_us = 1000000;
    if (bthread_usleep(period_us) != 0) break;
    const int64_t now_us = base::coarse_monotonic_ns() / 1000;
    am->ListConnections(&ids);
    for (const SocketId id : ids) {
      SocketUniquePtr s;
      if (Socket::Address(id, &s) != 0) continue;
      // Last activity: for InputMessenger connections a complete message
      // or a write, so a peer trickling bytes still idles out.
      const int64_t idle_for = now_us - s->last_active_us();
      if (idle_us > 0 && idle_for > idle_us) {
        // Graceful: a reply still queued (a slow reader) is flushed first.
        s->CloseGracefully(ETIMEDOUT, "idle for %lld ms", static_cast<long long>(idle_for / 1000));
        continue;
      }
      CloseIfReadTimedOut(s.get(), now_us);
    }
  }
  return nullptr;
}

}  // namespace weft
