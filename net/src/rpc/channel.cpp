// Channel: starting calls, their attempts over single, pooled or short
// connections, and how each call ends exactly once.
//
// A call is a heap Call named by a bthread_id (the correlation id on the
// wire). Everything that can end it goes through that id:
// - the reply: CompleteCall locks the id (bthread_id_lock) and ends it;
// - the deadline: a timer raises ERPCTIMEDOUT on the id (bthread_id_error);
// - a cancel: StartCancel raises ECANCELED;
// - the connection: the Write's id_wait is the id, so a refused write, a
//   failed connect, a connection that dies with the request queued or
//   written-but-unanswered (Socket's written ids) all raise its error.
// Errors run HandleCallError with the id locked; the lock serialises them
// with the reply, so exactly one of them ends the call (EndCall destroys
// the id; anything queued or arriving later finds it gone: a late reply is
// counted, a late error is ignored). An error that is a connection error
// with retries and time left starts another attempt instead, still under
// the lock. The attempt's socket is remembered so a reply on any other
// connection is not taken for this call's.
//
// The Call has two kinds of owners (Call::refs): the call itself, and each
// attempt's write until the socket reports it finished (on_written). The
// writer keeps the id on the connection only after the bytes went out, and
// the reply can be read and the call ended before that; the write's
// reference lets the writer see that and forget the id itself, so no ended
// call leaves its id on a long-lived connection.
//
// Per call, on the path of a single connection that is up: one precise
// clock read at the start and one at the end (latency), one allocation for
// the Call (plus the runtime's id and timer slots, which are pooled), the
// frame packed once, and no second Address of the socket.
#include "weft/rpc/channel.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <atomic>
#include <utility>

#include "base/time_util.h"
#include "client_messenger.h"
#include "connection_pool.h"
#include "weft/bthread.h"
#include "weft/errno.h"
#include "weft/metrics.h"
#include "weft/net/socket_map.h"
#include "weft/rpc/call_completion.h"
#include "weft/rpc/errno.h"

namespace weft::rpc {

namespace {

// Calls started and not yet ended, in shards: every call adds on its
// caller's thread and subtracts on its ender's, and one shared word would
// bounce between the workers twice per call. A thread keeps to one shard;
// a shard may go negative (ended on another thread than started), only the
// sum means anything. Relaxed: a count, read by PendingCallCount alone.
constexpr int kPendingShards = 16;
struct alignas(64) PendingShard {
  std::atomic<int64_t> n{0};
};
PendingShard g_pending_calls[kPendingShards];
std::atomic<int> g_next_pending_shard{0};

// Not inlined, so the TLS address is computed afresh at every call and
// never cached across a suspension (fibers migrate); any shard would still
// count right, this keeps a thread on its own.
__attribute__((noinline)) std::atomic<int64_t>& pending_shard() {
  // A trivial thread_local: one TLS load after the first call.
  thread_local int shard = -1;
  if (shard < 0)
    shard = g_next_pending_shard.fetch_add(1, std::memory_order_relaxed) % kPendingShards;
  return g_pending_calls[shard].n;
}

Counter& late_replies() {
  static Counter* const c = new Counter("weft_rpc_late_replies");  // leaked: bumped during exit
  return *c;
}

int64_t now_us() { return base::monotonic_ns() / 1000; }

}  // namespace

struct Channel::State {
  EndPoint server;
  ChannelOptions options;
  const Protocol* protocol = nullptr;
  // The connection's key: (server, protocol) in the socket map, and the
  // same as text for the pool.
  SocketMapKey map_key;
  std::string pool_key;
  // What every socket of this channel is made with.
  SocketOptions socket_options;
  // single: acquired in the process-wide map (released with the state, when
  // the Channel and its last call are gone), and the last socket it handed
  // out (relaxed: a hint; Address checks it).
  bool in_map = false;
  std::atomic<SocketId> single_id{INVALID_SOCKET_ID};

  ~State() {
    if (in_map) SocketMap::global().Release(map_key);
  }
};

namespace {

struct Call {
  // Owners: the call (from CallMethod until it ends, or until its `done`
  // ran) and every attempt's write until its on_written: a reply may end
  // the call before the writer that sent the request has kept its id on
  // the connection (see on_attempt_written). The last release frees it
  // (acq_rel: whoever frees sees the other owner's accesses).
  std::atomic<int> refs{1};
  // The channel's state, for every attempt and the end. A synchronous
  // caller is inside CallMethod until the call ends, so its Channel (which
  // owns the state) cannot go first; an asynchronous call's Channel may be
  // destroyed before the call ends, so the call shares the state's
  // ownership (keep_alive). Sync calls skip that: a shared_ptr copy is two
  // atomic read-modify-writes on one word every call of the process
  // touches, from different workers.
  Channel::State* channel = nullptr;
  std::shared_ptr<Channel::State> keep_alive;
  Controller* cntl = nullptr;
  IOBuf* response = nullptr;
  Closure done;
  // The request as it goes on the wire, packed once: every attempt sends
  // the same bytes (the correlation id is the call's, not the attempt's).
  // Empty when pack_request refused the request.
  IOBuf frame;
  int64_t start_us = 0;
  // CLOCK_MONOTONIC µs; 0: none.
  int64_t deadline_us = 0;
  int max_retry = 0;
  // Attempts started (the first is 1).
  int attempts = 0;
  bthread_timer_t timer = 0;
  // The current attempt's connection, held until the attempt ends (so
  // ending it needs no second Address), and its id (what CompleteCall
  // matches the reply's connection against). Written with the id locked.
  SocketUniquePtr socket;
  SocketId socket_id = INVALID_SOCKET_ID;
  // The connection the call waits on for a reply: socket_id while an
  // attempt is current, INVALID_SOCKET_ID once it ended. Read by the
  // attempt's writer (on_attempt_written) without the id lock.
  std::atomic<SocketId> waiting_on{INVALID_SOCKET_ID};
  bthread_id_t cid = INVALID_BTHREAD_ID;
};

void release_call(Call* c) {
  if (c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete c;
}

// Errors worth another attempt: the connection's, not the call's.
bool is_retryable(int error_code) {
  switch (error_code) {
    case ERPCTIMEDOUT:
    case ECANCELED:
    case EOVERCROWDED:
    case EREQUEST:
    case EINVAL:
    case ENOMEM:
      return false;
    default:
      return true;
  }
}

void* run_done(void* arg) {
  Closure* const done = static_cast<Closure*>(arg);
  (*done)();
  delete done;
  return nullptr;
}

// A `done` with no Call behind it (the call could not start).
void start_done(Closure done) {
  auto* heap = new Closure(std::move(done));
  bthread_t tid;
  if (bthread_start_background(&tid, nullptr, run_done, heap) != 0) run_done(heap);
}

// The done fiber of an ended call: the Call's own reference keeps it (and
// its Closure) alive until `done` ran, so no second heap object is needed.
void* run_call_done(void* arg) {
  Call* const c = static_cast<Call*>(arg);
  c->done();
  release_call(c);
  return nullptr;
}

// The attempt's write finished (Socket::WriteOptions::on_written): in the
// writing context, right after the socket kept the call's id when the write
// succeeded. The reply may have been read, and the call ended, in between;
// its ender then found no id to forget, so the id would stay on the
// connection until it fails, one per such call: the writer forgets it
// instead. The seq_cst load pairs with release_attempt_socket's seq_cst
// store: either the ender's ForgetWrittenId comes after the keep (the
// set's lock orders them) and removes the id, or it came before, and then
// so did its store, which this load sees. Forgetting twice is harmless.
void on_attempt_written(Socket* s, int error_code, void* arg) {
  Call* const c = static_cast<Call*>(arg);
  if (error_code == 0 && c->waiting_on.load(std::memory_order_seq_cst) != s->id()) {
    s->ForgetWrittenId(c->cid);
  }
  release_call(c);
}

// The call's current attempt is over: `healthy` when the call got its
// reply on its connection. The id is locked by the caller.
void release_attempt_socket(Call* c, bool healthy) {
  if (c->socket == nullptr) return;
  // First: a writer that has not yet kept the id must forget it itself
  // (see on_attempt_written).
  c->waiting_on.store(INVALID_SOCKET_ID, std::memory_order_seq_cst);
  SocketUniquePtr s = std::move(c->socket);
  c->socket_id = INVALID_SOCKET_ID;
  // Then: the id must not hear this socket's failure below (or later). A
  // no-op on a failed socket (its ids were handed out when it failed).
  s->ForgetWrittenId(c->cid);
  switch (c->channel->options.connection_type) {
    case kSingle:
      // Shared: its health is its own, not this call's.
      break;
    case kPooled:
      if (healthy) {
        // Refuses a failed or closing connection.
        internal::ReturnPooledSocket(c->channel->pool_key, std::move(s));
      } else {
        // A reply may still come: never hand this connection to another
        // call.
        s->SetFailed(ECANCELED, "%s: its pooled call ended without a reply",
                     s->description().c_str());
      }
      break;
    case kShort:
      s->SetFailed(ESHUTDOWN, "%s: its short call ended", s->description().c_str());
      break;
  }
}

// Ends the call; the id is locked by the caller and destroyed here. The
// call's reference is released (or handed to its done fiber); nothing of
// it may be touched afterwards.
void end_call(Call* c, int error_code, const char* error_text) {
  if (c->timer != 0) {
    // May lose to a timer that is firing: its error then finds the id
    // destroyed (EINVAL) and does nothing.
    bthread_timer_del(c->timer);
    c->timer = 0;
  }
  release_attempt_socket(c, error_code == 0);
  Controller* const cntl = c->cntl;
  if (error_code != 0) {
    if (error_text != nullptr && error_text[0] != '\0') {
      cntl->SetFailed(error_code, "%s", error_text);
    } else {
      cntl->SetFailed(error_code, "%s", ErrorText(error_code));
    }
  }
  cntl->set_latency_us(now_us() - c->start_us);
  cntl->set_retried_count(c->attempts > 0 ? c->attempts - 1 : 0);
  cntl->set_remote_side(c->channel->server);
  // The channel may go with its last call: not later, from a writer.
  c->channel = nullptr;
  c->keep_alive.reset();
  c->frame.clear();
  const bthread_id_t cid = c->cid;
  const bool async = static_cast<bool>(c->done);
  pending_shard().fetch_sub(1, std::memory_order_relaxed);
  if (!async) {
    release_call(c);
    // Wakes the synchronous caller (bthread_id_join), who may then destroy
    // cntl and the response: both were written above.
    bthread_id_unlock_and_destroy(cid);
    return;
  }
  bthread_id_unlock_and_destroy(cid);
  bthread_t tid;
  if (bthread_start_background(&tid, nullptr, run_call_done, c) != 0) run_call_done(c);
}

// The attempt's connection, by connection type. 0 or -1 with errno.
int attempt_socket(Channel::State* ch, SocketUniquePtr* out) {
  switch (ch->options.connection_type) {
    case kSingle: {
      const SocketId cached = ch->single_id.load(std::memory_order_relaxed);
      if (cached != INVALID_SOCKET_ID && Socket::Address(cached, out) == 0) return 0;
      SocketId id = INVALID_SOCKET_ID;
      if (SocketMap::global().Get(ch->map_key, out, &id) != 0) return -1;
      ch->single_id.store(id, std::memory_order_relaxed);
      return 0;
    }
    case kPooled:
      return internal::TakePooledSocket(ch->pool_key, ch->socket_options, out);
    case kShort: {
      SocketId id;
      if (Socket::Create(ch->socket_options, &id) != 0) return -1;
      if (Socket::Address(id, out) != 0) {
        errno = EFAILEDSOCKET;
        return -1;
      }
      return 0;
    }
  }
  errno = EINVAL;
  return -1;
}

// Starts one attempt; the id is locked by the caller. Failures are raised
// on the id (queued until the caller unlocks), never returned.
void start_attempt(Call* c) {
  ++c->attempts;
  if (c->frame.empty()) {
    // pack_request refused the request.
    bthread_id_error(c->cid, EREQUEST);
    return;
  }
  Channel::State* const ch = c->channel;
  SocketUniquePtr s;
  if (attempt_socket(ch, &s) != 0) {
    bthread_id_error(c->cid, errno != 0 ? errno : EFAILEDSOCKET);
    return;
  }
  c->socket_id = s->id();
  c->waiting_on.store(c->socket_id, std::memory_order_relaxed);
  // The last attempt the call may make takes the packed frame; earlier ones
  // send a copy (block references, not bytes) and keep it for a retry.
  IOBuf frame;
  if (c->attempts > c->max_retry) {
    frame.swap(c->frame);
  } else {
    frame = c->frame;
  }
  Socket::WriteOptions wopt;
  wopt.id_wait = c->cid;
  wopt.on_written = on_attempt_written;
  wopt.on_written_arg = c;
  // The write's reference, released by on_attempt_written (called exactly
  // once, even when the write is refused). Relaxed: we own one already.
  c->refs.fetch_add(1, std::memory_order_relaxed);
  timespec connect_deadline;
  // Only a socket that has not connected yet needs a connect deadline (a
  // shared single connection almost never: skip the clock reads).
  if (ch->options.connect_timeout_ms > 0 && s->fd() < 0) {
    int64_t at_ns = base::realtime_ns() + int64_t{ch->options.connect_timeout_ms} * 1000000;
    if (c->deadline_us != 0) {
      const int64_t left_ns = (c->deadline_us - now_us()) * 1000;
      if (left_ns < int64_t{ch->options.connect_timeout_ms} * 1000000) {
        at_ns = base::realtime_ns() + (left_ns > 0 ? left_ns : 0);
      }
    }
    connect_deadline = base::ns_to_timespec(at_ns);
    wopt.abstime = &connect_deadline;
  }
  Socket* const raw = s.get();
  c->socket = std::move(s);
  // Errors (refused, connect failed, the connection dies before the reply)
  // come back through id_wait. The call's reference on the socket keeps it
  // alive through the write.
  raw->Write(&frame, &wopt);
}

// on_error of a call's id: runs with the id locked.
int handle_call_error(bthread_id_t id, void* data, int error_code) {
  Call* const c = static_cast<Call*>(data);
  const bool time_left = c->deadline_us == 0 || now_us() < c->deadline_us;
  if (is_retryable(error_code) && c->attempts <= c->max_retry && time_left) {
    release_attempt_socket(c, false);
    c->cntl->set_retried_count(c->attempts);
    start_attempt(c);
    return bthread_id_unlock(id);
  }
  if (is_retryable(error_code) && !time_left) error_code = ERPCTIMEDOUT;
  char text[160];
  if (error_code == ERPCTIMEDOUT) {
    snprintf(text, sizeof(text), "reached the call's deadline after %d attempt(s)", c->attempts);
  } else {
    snprintf(text, sizeof(text), "%s (after %d attempt(s))", ErrorText(error_code), c->attempts);
  }
  end_call(c, error_code, text);
  return 0;
}

// The call's deadline, on the timer thread: raising the error runs the
// handler (and maybe sockets' failure paths), so move to a fiber.
void on_call_timeout(void* arg) {
  void* (*const raise)(void*) = [](void* id_value) -> void* {
    bthread_id_t id;
    id.value = reinterpret_cast<uint64_t>(id_value);
    bthread_id_error(id, ERPCTIMEDOUT);
    return nullptr;
  };
  bthread_t tid;
  if (bthread_start_background(&tid, nullptr, raise, arg) != 0) raise(arg);
}

}  // namespace

Channel::Channel() = default;
Channel::~Channel() = default;

int Channel::Init(const char* ip_port, const ChannelOptions* options) {
  EndPoint ep;
  if (ip_port == nullptr || !EndPoint::parse(ip_port, &ep)) {
    errno = EINVAL;
    return -1;
  }
  return Init(ep, options);
}

int Channel::Init(const EndPoint& server, const ChannelOptions* options) {
  if (state_ != nullptr || !server.is_set()) {
    errno = EINVAL;
    return -1;
  }
  auto st = std::make_shared<State>();
  st->server = server;
  if (options != nullptr) st->options = *options;
  st->protocol = FindProtocol(st->options.protocol);
  if (st->protocol == nullptr) {
    errno = ENOPROTOOPT;
    return -1;
  }
  const ConnectionType type = st->options.connection_type;
  if ((type != kSingle && type != kPooled && type != kShort) ||
      (st->protocol->supported_connection_types & type) == 0 ||
      st->protocol->pack_request == nullptr || st->protocol->process_response == nullptr) {
    errno = EINVAL;
    return -1;
  }
  st->socket_options.remote_side = server;
  st->socket_options.user = internal::client_messenger(st->protocol);
  st->socket_options.on_edge_triggered_events = InputMessenger::OnNewMessages;
  st->socket_options.connect_timeout_ms = st->options.connect_timeout_ms;
  st->map_key = SocketMapKey{server, st->protocol->name};
  st->pool_key = server.to_string() + "\n" + st->protocol->name;
  if (type == kSingle) {
    if (SocketMap::global().Acquire(st->map_key, st->socket_options) != 0) return -1;
    st->in_map = true;
  }
  state_ = std::move(st);
  return 0;
}

const EndPoint& Channel::server() const {
  static const EndPoint kNone;
  return state_ != nullptr ? state_->server : kNone;
}

const ChannelOptions& Channel::options() const {
  static const ChannelOptions kDefaults;
  return state_ != nullptr ? state_->options : kDefaults;
}

void Channel::CallMethod(const char* method, Controller* cntl, const IOBuf& request,
                         IOBuf* response, Closure done) {
  // The call's one precise clock read before it ends: its start, and from
  // it the deadline.
  const int64_t start_ns = base::monotonic_ns();
  const int64_t start_us = start_ns / 1000;
  if (state_ == nullptr || method == nullptr || cntl == nullptr || response == nullptr) {
    if (cntl != nullptr) {
      cntl->SetFailed(EINVAL, "%s",
                      state_ == nullptr ? "the Channel is not initialised"
                                        : "no method, controller or response");
    }
    if (done) start_done(std::move(done));
    return;
  }
  auto* c = new Call;
  c->channel = state_.get();
  if (done) c->keep_alive = state_;
  c->cntl = cntl;
  c->response = response;
  c->done = std::move(done);
  c->start_us = start_us;
  const int64_t timeout_ms =
      cntl->timeout_ms() != Controller::kUnset ? cntl->timeout_ms() : state_->options.timeout_ms;
  c->deadline_us = timeout_ms >= 0 ? start_us + timeout_ms * 1000 : 0;
  c->max_retry =
      cntl->max_retry() != Controller::kUnset ? cntl->max_retry() : state_->options.max_retry;
  if (c->max_retry < 0) c->max_retry = 0;
  response->clear();
  if (bthread_id_create(&c->cid, c, handle_call_error) != 0) {
    cntl->SetFailed(ENOMEM, "no call id");
    Closure d = std::move(c->done);
    delete c;
    if (d) start_done(std::move(d));
    return;
  }
  const bthread_id_t cid = c->cid;
  cntl->set_call_id(cid);
  // Serialized and packed once, for every attempt (see Call::frame).
  // A refusal by pack_request leaves the frame empty and ends the first
  // attempt with EREQUEST (start_attempt).
  const Protocol* const protocol = state_->protocol;
  IOBuf body;
  if (protocol->serialize_request != nullptr) protocol->serialize_request(&body, cntl, request);
  const bool refused = cntl->Failed();
  if (!refused) {
    protocol->pack_request(&c->frame, cid.value, method, cntl,
                           protocol->serialize_request != nullptr ? body : request);
  }
  const bool sync = !c->done;
  pending_shard().fetch_add(1, std::memory_order_relaxed);
  // Locked while the first attempt starts: a reply or error racing it waits
  // (a reply) or is queued (an error) until the unlock below.
  bthread_id_lock(cid, nullptr);
  if (refused) {
    // serialize_request refused the request.
    end_call(c, cntl->ErrorCode(), cntl->ErrorText().c_str());
  } else {
    if (c->deadline_us != 0) {
      // bthread_timer_add takes CLOCK_REALTIME; the runtime's cached offset
      // turns the monotonic deadline into one without another precise read.
      const timespec at =
          base::ns_to_timespec(start_ns + base::realtime_minus_monotonic() + timeout_ms * 1000000);
      if (bthread_timer_add(&c->timer, at, on_call_timeout, reinterpret_cast<void*>(cid.value)) !=
          0) {
        c->timer = 0;
        bthread_id_error(cid, ENOMEM);
      }
    }
    start_attempt(c);
    // Delivers what was queued meanwhile; from here `c` may be gone.
    bthread_id_unlock(cid);
  }
  if (sync) bthread_id_join(cid);
}

int Join(bthread_id_t call_id) { return bthread_id_join(call_id); }

void StartCancel(bthread_id_t call_id) { bthread_id_error(call_id, ECANCELED); }

int64_t PendingCallCount() {
  int64_t n = 0;
  for (const PendingShard& shard : g_pending_calls) n += shard.n.load(std::memory_order_relaxed);
  return n;
}

int CompleteCall(uint64_t correlation_id, Socket* from, int error_code, std::string_view error_text,
                 IOBuf* payload) {
  bthread_id_t cid;
  cid.value = correlation_id;
  void* data = nullptr;
  if (bthread_id_lock(cid, &data) != 0) {
    // Ended already (timeout, cancel, failure): the reply is late.
    late_replies() << 1;
    return -1;
  }
  Call* const c = static_cast<Call*>(data);
  if (from == nullptr || from->id() != c->socket_id) {
    // Not the current attempt's connection.
    late_replies() << 1;
    bthread_id_unlock(cid);
    return -1;
  }
  if (error_code == 0) {
    if (payload != nullptr) c->response->swap(*payload);
    end_call(c, 0, nullptr);
  } else {
    const std::string text(error_text);
    end_call(c, error_code, text.c_str());
  }
  return 0;
}

int64_t LateReplyCount() { return late_replies().value(); }

}  // namespace weft::rpc
