// InputMessenger::OnNewMessages: read, cut, verify, run.
#include "weft/net/input_messenger.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <gflags/gflags.h>
#include <string.h>
#include <time.h>

#include "base/time_util.h"
#include "messenger_connection.h"
#include "net_log.h"
#include "sched/worker_hint.h"
#include "serving_connection.h"
#include "weft/bthread.h"
#include "weft/butex.h"
#include "weft/errno.h"

DEFINE_int64(weft_max_body_size, 64 * 1024 * 1024,
             "Largest message a protocol accepts; a bigger one closes its connection");
DEFINE_int64(weft_max_read_buffer_bytes, int64_t{1} << 30,
             "Process-wide cap on bytes held in connections' read buffers");
DEFINE_int32(weft_read_timeout_ms, 30000,
             "A connection whose partial message has not completed in this long closes");
DEFINE_bool(weft_batch_replies, true,
            "Replies written while the messages of one read run leave in one writev");
DEFINE_int32(weft_max_messages_in_flight_per_connection, 1024,
             "Messages of one connection run at once; past it the connection is not read");

// Read by InputMessenger too: a connection whose output is this crowded is
// not read (defined in socket_write.cpp).
DECLARE_int64(weft_socket_max_unwritten_bytes);

namespace weft {

using net_internal::MessengerConnection;

namespace {
// The average message size is a moving average over about this many
// messages.
constexpr size_t MSG_SIZE_WINDOW = 10;

// The messenger's flags may be changed while connections parse (tests, a
// reloading admin page): they are read as relaxed atomics; writers should
// store the same way (__atomic_store_n) or accept a torn value on exotic
// platforms.
template <typename T>
T load_flag(const T& flag) {
  return __atomic_load_n(&flag, __ATOMIC_RELAXED);
}

// Bytes held in all connections' read buffers, and how many connections
// hold any. Relaxed: counters behind a decision that publish nothing; a
// stale value moves a decision by at most one read (MAX_ONCE_READ).
std::atomic<int64_t> g_read_buf_bytes{0};
std::atomic<int64_t> g_read_buf_holders{0};

timespec realtime_after_ms(int ms) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  const int64_t ns = ts.tv_nsec + static_cast<int64_t>(ms) * 1000000;
  ts.tv_sec += ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  return ts;
}
}  // namespace

int64_t max_body_size() { return load_flag(FLAGS_weft_max_body_size); }

int read_timeout_ms() { return load_flag(FLAGS_weft_read_timeout_ms); }

int64_t read_buffer_bytes() { return g_read_buf_bytes.load(std::memory_order_relaxed); }

MessengerConnection::MessengerConnection()
    : read_butex(butex_create_checked<std::atomic<int>>()) {}

MessengerConnection::~MessengerConnection() {
  if (read_buf_accounted != 0) {
    g_read_buf_bytes.fetch_sub(static_cast<int64_t>(read_buf_accounted), std::memory_order_relaxed);
    g_read_buf_holders.fetch_sub(1, std::memory_order_relaxed);
  }
  // Nobody waits any more: the socket recycled, so its reading fiber and
  // its messages are gone.
  if (read_butex != nullptr) butex_destroy(read_butex);
}

MessengerConnection* MessengerConnection::get_or_create(Socket* m) {
  MessengerConnection* c = of_socket(m);
  if (c != nullptr) return c;
  c = new (std::nothrow) MessengerConnection;
  if (c == nullptr) return nullptr;
  if (c->read_butex == nullptr) {
    delete c;
    return nullptr;
  }
  return static_cast<MessengerConnection*>(m->InitContext(c, SocketContextSlot::kMessenger));
}

InputMessenger::InputMessenger()
    : SocketUser(Kind::kInputMessenger), inflight_butex_(butex_create_checked<std::atomic<int>>()) {
  if (inflight_butex_ == nullptr) {
    fprintf(stderr, "weft net: no memory for an InputMessenger\n");
    abort();
  }
}

InputMessenger::~InputMessenger() { butex_destroy(inflight_butex_); }

int64_t InputMessenger::messages_in_flight() const {
  return inflight_butex_->load(std::memory_order_acquire);
}

int InputMessenger::WaitNoMessagesInFlight(const timespec* abstime) {
  for (;;) {
    // Acquire pairs with MessageDone's release: the handlers' effects are
    // visible once the count reads 0.
    const int n = inflight_butex_->load(std::memory_order_acquire);
    if (n == 0) return 0;
    if (butex_wait(inflight_butex_, n, abstime) != 0 && errno == ETIMEDOUT) return -1;
  }
}

void InputMessenger::MessageDone() {
  // The caller still holds a reference to the message's socket, so this
  // messenger (which outlives its connections) is alive for the wake.
  if (inflight_butex_->fetch_sub(1, std::memory_order_acq_rel) == 1) butex_wake_all(inflight_butex_);
}

int64_t InputMessenger::partial_message_since_us(const Socket* m) {
  const MessengerConnection* const c = MessengerConnection::of_socket(m);
  return c == nullptr ? 0 : c->partial_since_us.load(std::memory_order_relaxed);
}

int64_t InputMessenger::UpdateReadBufferBudget(Socket* m, MessengerConnection* c) {
  const size_t now = m->read_buf().size();
  const size_t before = c->read_buf_accounted;
  if (now == before) return g_read_buf_bytes.load(std::memory_order_relaxed);
  if (before == 0) g_read_buf_holders.fetch_add(1, std::memory_order_relaxed);
  if (now == 0) g_read_buf_holders.fetch_sub(1, std::memory_order_relaxed);
  c->read_buf_accounted = now;
  const int64_t delta = static_cast<int64_t>(now) - static_cast<int64_t>(before);
  return g_read_buf_bytes.fetch_add(delta, std::memory_order_relaxed) + delta;
}

bool InputMessenger::CloseIfReadTimedOut(Socket* m, int64_t now_us) {
  const int64_t since = partial_message_since_us(m);
  if (since == 0) return false;
  const int64_t timeout_ms = load_flag(FLAGS_weft_read_timeout_ms);
  if (timeout_ms <= 0 || now_us - since <= timeout_ms * 1000) return false;
  const long long for_ms = static_cast<long long>((now_us - since) / 1000);
  WEFT_NET_WARN("close %s: a message incomplete for %lld ms", m->description().c_str(), for_ms);
  m->SetFailed(ETIMEDOUT,
               "close %s: a message incomplete for %lld ms (--weft_read_timeout_ms=%lld)",
               m->description().c_str(), for_ms, static_cast<long long>(timeout_ms));
  return true;
}

bool InputMessenger::CheckReadBounds(Socket* m, MessengerConnection* c, bool completed,
                                     int64_t now_us, bool* over_budget) {
  // The message being received: what is buffered plus what the parser
  // consumed of it without completing it.
  const int64_t partial = static_cast<int64_t>(c->last_msg_size + m->read_buf().size());
  if (partial == 0) {
    c->partial_since_us.store(0, std::memory_order_relaxed);
  } else if (completed || c->partial_since_us.load(std::memory_order_relaxed) == 0) {
    // A new message began in this read.
    c->partial_since_us.store(now_us, std::memory_order_relaxed);
  }
  if (partial > max_body_size() + MAX_HEADER_ALLOWANCE) {
    WEFT_NET_WARN("close %s: %lld bytes of one message", m->description().c_str(),
                  static_cast<long long>(partial));
    m->SetFailed(EMSGSIZE, "close %s: %lld bytes of one message (--weft_max_body_size=%lld)",
                 m->description().c_str(), static_cast<long long>(partial),
                 static_cast<long long>(max_body_size()));
    return false;
  }
  if (CloseIfReadTimedOut(m, now_us)) return false;
  const int64_t total = UpdateReadBufferBudget(m, c);
  const int64_t cap = load_flag(FLAGS_weft_max_read_buffer_bytes);
  if (total <= cap) return true;
  // This read took (or kept) the total over the cap. The connection closes
  // if it holds at least the average share of the holders, so the largest
  // holder always qualifies when it reads; a smaller one only stops reading
  // (its memory does not grow) until the total is back under the cap.
  const int64_t held = static_cast<int64_t>(c->read_buf_accounted);
  const int64_t holders = g_read_buf_holders.load(std::memory_order_relaxed);
  if (held > 0 && held * holders >= total) {
    WEFT_NET_WARN("close %s: read buffers hold %lld bytes, it holds %lld", m->description().c_str(),
                  static_cast<long long>(total), static_cast<long long>(held));
    m->SetFailed(ENOMEM,
                 "close %s: read buffers hold %lld bytes (--weft_max_read_buffer_bytes=%lld), "
                 "it holds %lld",
                 m->description().c_str(), static_cast<long long>(total),
                 static_cast<long long>(cap), static_cast<long long>(held));
    return false;
  }
  *over_budget = true;
  return true;
}

bool InputMessenger::TooManyInFlight(const Socket* m, int64_t cap) {
  // seq_cst: the load of PauseReading's protocol (see there).
  return MessengerConnection::of_socket(m)->nmsg_in_flight.load(std::memory_order_seq_cst) >= cap;
}

bool InputMessenger::OutputOvercrowded(const Socket* m, int64_t limit) {
  return m->unwritten_bytes() >= limit;
}

bool InputMessenger::OverReadBudget(const Socket*, int64_t cap) {
  return g_read_buf_bytes.load(std::memory_order_relaxed) > cap;
}

bool InputMessenger::PauseReading(Socket* m, MessengerConnection* c,
                                  bool (*must_wait)(const Socket*, int64_t), int64_t arg) {
  while (must_wait(m, arg)) {
    if (m->Failed()) return false;
    // Lost wake-ups: the butex value is read before reader_waiting is set
    // (seq_cst), and the condition (nmsg_in_flight, seq_cst) re-read after.
    // A finishing message decrements nmsg_in_flight (seq_cst) and then
    // reads reader_waiting (seq_cst). In the single total order either it
    // sees the flag, and its butex increment comes after our read of the
    // value, so butex_wait returns at once; or our re-read sees its
    // decrement. Conditions nobody signals are re-checked each PAUSE_POLL_MS.
    const int expected = c->read_butex->load(std::memory_order_relaxed);
    c->reader_waiting.store(true, std::memory_order_seq_cst);
    if (!must_wait(m, arg)) {
      c->reader_waiting.store(false, std::memory_order_relaxed);
      break;
    }
    const timespec abstime = realtime_after_ms(PAUSE_POLL_MS);
    butex_wait(c->read_butex, expected, &abstime);
    c->reader_waiting.store(false, std::memory_order_relaxed);
  }
  return !m->Failed();
}

const char* ParseErrorToString(ParseError e) {
  switch (e) {
    case PARSE_OK:
      return "ok";
    case PARSE_ERROR_NOT_ENOUGH_DATA:
      return "not enough data";
    case PARSE_ERROR_TRY_OTHERS:
      return "no protocol recognises the data";
    case PARSE_ERROR_TOO_BIG_DATA:
      return "message too big";
    case PARSE_ERROR_ABSOLUTELY_WRONG:
      return "malformed message";
  }
  return "unknown parse error";
}

int InputMessenger::AddHandler(const InputMessageHandler& handler) {
  if (handler.parse == nullptr || handler.process == nullptr) {
    errno = EINVAL;
    return -1;
  }
  handlers_.push_back(handler);
  return 0;
}

ParseResult InputMessenger::CutInputMessage(Socket* m, MessengerConnection* c, size_t* index,
                                            bool read_eof) {
  IOBuf* const source = &m->read_buf();
  const int preferred = c->preferred_index;
  if (source->empty() && !(read_eof && preferred >= 0)) {
    return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  }
  if (preferred >= 0) {
    const InputMessageHandler& h = handlers_[static_cast<size_t>(preferred)];
    ParseResult r = h.parse(source, m, read_eof, h.arg);
    if (r.is_ok() || r.error() != PARSE_ERROR_TRY_OTHERS) {
      *index = static_cast<size_t>(preferred);
      return r;
    }
    // The connection changed protocol: try the others.
  }
  if (source->empty()) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  for (size_t i = 0; i < handlers_.size(); ++i) {
    if (static_cast<int>(i) == preferred) continue;
    const InputMessageHandler& h = handlers_[i];
    ParseResult r = h.parse(source, m, read_eof, h.arg);
    if (r.error() == PARSE_ERROR_TRY_OTHERS) continue;
    *index = i;
    // A protocol that claims the bytes (even needing more of them) owns the
    // connection from now on.
    c->preferred_index = static_cast<int>(i);
    return r;
  }
  return ParseResult::Error(PARSE_ERROR_TRY_OTHERS);
}

void* InputMessenger::ProcessInputMessage(void* arg) {
  InputMessageBase* const msg = static_cast<InputMessageBase*>(arg);
  // Keep our own reference: process() may destroy msg (and its reference)
  // before returning.
  SocketUniquePtr s;
  msg->socket()->ReAddress(&s);
{
    // Acceptor::StopAccept called from this handler must not wait for this
    // connection (it cannot recycle while we run).
    net_internal::ServingConnectionScope serving(s->id());
    msg->process_(msg);
  }
  // Alive while s is held (the socket owns it).
  MessengerConnection* const c = MessengerConnection::of_socket(s.get());
  // seq_cst on both: PauseReading's protocol (see there).
  c->nmsg_in_flight.fetch_sub(1, std::memory_order_seq_cst);
  if (c->reader_waiting.load(std::memory_order_seq_cst)) {
    c->read_butex->fetch_add(1, std::memory_order_relaxed);
    butex_wake(c->read_butex);
  }
  // The postponed EOF goes when the message is destroyed (Destroy), which
  // an asynchronous handler does after it has answered.
  return nullptr;
}

void InputMessenger::ReleaseEOF(Socket* s) {
  MessengerConnection* const c = MessengerConnection::of_socket(s);
  // acq_rel: the last message's effects happen before the failure.
  // Graceful: the replies of the messages that ran are flushed before the
  // connection closes (a peer that half-closed still reads them).
  if (c->ninprocess.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    s->CloseGracefully(EEOF, "%s was closed by the peer", s->description().c_str());
  }
}

void InputMessenger::SetEOF(Socket* s, MessengerConnection* c) {
  if (!c->eof_seen.exchange(true, std::memory_order_acq_rel)) ReleaseEOF(s);
}

void InputMessageBase::Destroy() {
  if (!holds_eof_ || socket_ == nullptr) {
    DestroyImpl();
    return;
  }
  // Our own reference: DestroyImpl frees the message and its reference,
  // and the graceful close must come after (the reply the handler wrote is
  // queued by now, so the close flushes it). The reference also keeps the
  // messenger alive (it outlives its connections) for MessageDone.
  InputMessenger* const messenger = messenger_;
  SocketUniquePtr s = std::move(socket_);
  DestroyImpl();
  InputMessenger::ReleaseEOF(s.get());
  messenger->MessageDone();
}

void InputMessenger::QueueMessage(InputMessageBase* msg, int* num_fibers) {
  bthread_attr_t attr = BTHREAD_ATTR_NORMAL;
  attr.flags |= BTHREAD_NOSIGNAL;
  attr.keytable_pool = msg->socket()->keytable_pool();
  bthread_t th;
  if (bthread_start_background(&th, &attr, ProcessInputMessage, msg) == 0) {
    ++*num_fibers;
  } else {
    ProcessInputMessage(msg);
  }
}

void InputMessenger::OnNewMessages(Socket* m) {
  // The tag, not a dynamic_cast: this runs for every input event.
  SocketUser* const user = m->user();
  InputMessenger* const messenger =
      user != nullptr && user->user_kind() == SocketUser::Kind::kInputMessenger
          ? static_cast<InputMessenger*>(user)
          : nullptr;
  if (messenger == nullptr || messenger->handlers_.empty()) {
    m->SetFailed(EINVAL, "%s: its user is not an InputMessenger with protocols",
                 m->description().c_str());
    return;
  }
  MessengerConnection* const c = MessengerConnection::get_or_create(m);
  if (c == nullptr) {
    m->SetFailed(ENOMEM, "%s: no memory for its reading state", m->description().c_str());
    return;
  }
  int progress = Socket::PROGRESS_INIT;
  // Each read's last message runs in this fiber, after the read's other
  // messages were handed to fibers; it is kept here until then.
  InputMessageBase* last_msg = nullptr;
  int num_fibers = 0;
  bool read_eof = false;
  bool failed = false;
  // The last read took the process read-buffer total over the cap and this
  // connection was not the one to close: read again once it is under.
  bool over_budget = false;
  // The last read took all the fd had (Socket::DoRead's drained).
  bool drained = false;
  // A read that cut two or more messages holds the connection's right to
  // write (Socket::BeginWriteBatch) while they run: the replies they write
  // meanwhile leave in one writev instead of a sendmsg each. Opened when a
  // second message is cut, ended by end_batch at the end of the read, and
  // before any pause (a pause may wait for output to drain, which the
  // batch holds back).
  Socket::WriteRequest* batch = nullptr;
  bool batch_tried = false;
  // Every message of the batch runs in a fiber; this one lets those on its
  // worker run first (they answer, or block and come back later), then
  // sends what they wrote. The wait is bounded by those fibers' run to
  // their first block: a handler that waits for something does not hold
  // the batch, and fibers other workers steal answer on their own if they
  // finish after it.
  auto end_batch = [&] {
    if (batch_tried && last_msg != nullptr) {
      QueueMessage(last_msg, &num_fibers);
      last_msg = nullptr;
    }
    if (batch != nullptr) {
      // The fibers run here first, with no wake-up: for short handlers
      // (the common case) waking another worker costs more than it saves,
      // and takes a CPU the peer may need. Back here on the same worker
      // they have all been taken (run here or stolen), so none is woken
      // for; if nothing let this fiber yield, or it was stolen, those
      // still queued get their wake-up now. A backlog that outlasts that
      // is the worker monitor's (it wakes a parked worker for a queue that
      // stays crowded between two ticks).
      if (num_fibers > 0) {
        sched::yield_quietly_then_flush(static_cast<uint32_t>(num_fibers));
      } else {
        sched::yield_quietly();
      }
      num_fibers = 0;
      m->EndWriteBatch(batch);
      batch = nullptr;
    } else {
      if (num_fibers > 0) bthread_flush();
      num_fibers = 0;
    }
    batch_tried = false;
  };
  // Before pausing, nothing of this connection may wait on the pause: the
  // kept message goes to a fiber and the read's fibers are woken.
  auto release_pending = [&] {
    end_batch();
    if (last_msg != nullptr) QueueMessage(last_msg, &num_fibers);
    last_msg = nullptr;
    if (num_fibers > 0) bthread_flush();
    num_fibers = 0;
  };
  while (!read_eof && !failed) {
    // Not reading is the back-pressure: the peer's sends block in TCP while
    // this connection's output drains (to half the limit, so reading does
    // not flap at the edge) or the process total falls under the cap.
    const int64_t max_unwritten = load_flag(FLAGS_weft_socket_max_unwritten_bytes);
    if (max_unwritten > 0 && m->unwritten_bytes() >= max_unwritten) {
      release_pending();
      if (!PauseReading(m, c, OutputOvercrowded, max_unwritten / 2)) break;
    }
    if (over_budget) {
      release_pending();
      if (!PauseReading(m, c, OverReadBudget, load_flag(FLAGS_weft_max_read_buffer_bytes))) break;
      over_budget = false;
    }
    size_t once_read = c->avg_msg_size * 16;
    if (once_read < MIN_ONCE_READ) once_read = MIN_ONCE_READ;
    if (once_read > MAX_ONCE_READ) once_read = MAX_ONCE_READ;
    ssize_t nr;
    if (drained) {
      // The last read emptied the fd: another would only say EAGAIN (a
      // syscall per message on a request-response connection). Later bytes
      // or a close bring an event, which MoreReadEvents sees.
      drained = false;
      nr = -1;
      errno = EAGAIN;
    } else {
      // Bytes alone are not activity: complete messages are (below).
      nr = m->DoRead(once_read, /*bytes_are_activity=*/false, &drained);
    }
    if (nr <= 0) {
      if (nr == 0) {
        // Fed to the parsers below (read_eof), then the connection ends.
        read_eof = true;
      } else if (errno == EINTR) {
        continue;
      } else if (errno != EAGAIN) {
        const int err = errno;
        m->SetFailed(err, "fail to read from %s: %s", m->description().c_str(), strerror(err));
        break;
      } else if (!m->MoreReadEvents(&progress)) {
        break;
      } else {
        continue;
      }
    }
    const int64_t received_us = base::monotonic_ns() / 1000;
    const int64_t coarse_now_us = base::coarse_monotonic_ns() / 1000;
    bool completed = false;
    size_t last_size = m->read_buf().size();
    for (;;) {
      size_t index = 0;
      ParseResult pr = messenger->CutInputMessage(m, c, &index, read_eof);
      if (!pr.is_ok()) {
        if (pr.error() == PARSE_ERROR_NOT_ENOUGH_DATA) {
          // Some protocols consume bytes without completing a message.
          c->last_msg_size += last_size - m->read_buf().size();
          break;
        }
        WEFT_NET_WARN("close %s: %s", m->description().c_str(), pr.error_str());
        m->SetFailed(pr.error() == PARSE_ERROR_TOO_BIG_DATA ? EMSGSIZE : EPROTO, "close %s: %s",
                     m->description().c_str(), pr.error_str());
        failed = true;
        break;
      }
      const size_t cur_size = m->read_buf().size();
      if (cur_size == last_size) {
        // PARSE_OK with nothing consumed would be asked again, forever: a
        // bug of the protocol, not of the peer, but only this connection
        // pays for it.
        WEFT_NET_WARN("close %s: protocol %s returned a message but consumed nothing",
                      m->description().c_str(), messenger->handlers_[index].name);
        m->SetFailed(EPROTO, "close %s: parse of protocol %s returned ok but consumed nothing",
                     m->description().c_str(), messenger->handlers_[index].name);
        if (pr.message() != nullptr) pr.message()->Destroy();
        failed = true;
        break;
      }
      completed = true;
      // Moving average of message sizes, for the next read's size.
      c->last_msg_size += last_size - cur_size;
      last_size = cur_size;
      c->avg_msg_size =
          c->avg_msg_size == 0
              ? c->last_msg_size
              : (c->avg_msg_size * (MSG_SIZE_WINDOW - 1) + c->last_msg_size) / MSG_SIZE_WINDOW;
      c->last_msg_size = 0;

      InputMessageBase* const msg = pr.message();
      if (msg == nullptr) continue;  // nothing to run (e.g. a keep-alive)
      const InputMessageHandler& h = messenger->handlers_[index];
      msg->received_us_ = received_us;
      msg->process_ = h.process;
      msg->arg_ = h.arg;
      m->ReAddress(&msg->socket_);
      if (h.verify != nullptr && !c->verified) {
        // Only this fiber reads the socket, so the first message is
        // verified here once, before anything of the connection runs.
        if (!h.verify(msg)) {
          WEFT_NET_WARN("close %s: authentication failed", m->description().c_str());
          m->SetFailed(EACCES, "fail to authenticate %s", m->description().c_str());
          msg->Destroy();
          failed = true;
          break;
        }
        c->verified = true;
      }
      // At the cap, stop cutting (and so reading) until some finish. The
      // kept message is released first: it counts as in flight.
      const int cap = load_flag(FLAGS_weft_max_messages_in_flight_per_connection);
      if (cap > 0 && c->nmsg_in_flight.load(std::memory_order_relaxed) >= cap) {
        release_pending();
        if (!PauseReading(m, c, TooManyInFlight, cap)) {
          msg->Destroy();
          failed = true;
          break;
        }
      }
      // Only this fiber increments; finishing messages decrement.
      c->nmsg_in_flight.fetch_add(1, std::memory_order_relaxed);
      // The message keeps the connection's EOF pending, and counts in the
      // messenger's messages in flight, until it is destroyed. Relaxed: the
      // message reaches its destroyer through a fiber start or the handler's
      // own hand-off, which order this before the decrements.
      c->ninprocess.fetch_add(1, std::memory_order_relaxed);
      messenger->inflight_butex_->fetch_add(1, std::memory_order_relaxed);
      msg->holds_eof_ = true;
      msg->messenger_ = messenger;
      if (last_msg != nullptr) {
        // A second message: open the batch before the first one can run.
        if (!batch_tried) {
          batch_tried = true;
          if (load_flag(FLAGS_weft_batch_replies)) batch = m->BeginWriteBatch();
        }
        QueueMessage(last_msg, &num_fibers);
      }
      last_msg = msg;
    }
    // The idle timer moves on complete messages only.
    if (completed) m->MarkReadActivity(coarse_now_us);
    if (!failed && !read_eof && !CheckReadBounds(m, c, completed, coarse_now_us, &over_budget)) {
      failed = true;
    }
    // One wake-up for all the fibers this read created. Unless the read
    // made a batch (then end_batch runs its last message in a fiber too),
    // last_msg is run after the loop: the next read's EAGAIN goes through
    // MoreReadEvents first, so an event arriving meanwhile starts another
    // reading fiber while this one processes.
    end_batch();
  }
  if (read_eof) {
    // Closed once the messages in flight have run (their replies can still
    // go out).
    SetEOF(m, c);
  }
  if (last_msg != nullptr) ProcessInputMessage(last_msg);
}

}  // namespace weft
