// InputMessenger::OnNewMessages: read, cut, verify, run.
#include "weft/net/input_messenger.h"

#include <errno.h>
#include <gflags/gflags.h>
#include <string.h>
#include <time.h>

#include "base/time_util.h"
#include "net_log.h"
#include "weft/bthread.h"
#include "weft/butex.h"
#include "weft/errno.h"

DEFINE_int64(weft_max_body_size, 64 * 1024 * 1024,
             "Largest message a protocol accepts; a bigger one closes its connection");
DEFINE_int64(weft_max_read_buffer_bytes, int64_t{1} << 30,
             "Process-wide cap on bytes held in connections' read buffers");
DEFINE_int32(weft_read_timeout_ms, 30000,
             "A connection whose partial message has not completed in this long closes");
DEFINE_int32(weft_max_messages_in_flight_per_connection, 1024,
             "Messages of one connection run at once; past it the connection is not read");

// Read by InputMessenger too: a connection whose output is this crowded is
// not read (defined in socket_write.cpp).
DECLARE_int64(weft_socket_max_unwritten_bytes);

namespace weft {

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

void Socket::ReleaseReadBufferBudget() {
  if (read_buf_accounted_ == 0) return;
  g_read_buf_bytes.fetch_sub(static_cast<int64_t>(read_buf_accounted_), std::memory_order_relaxed);
  g_read_buf_holders.fetch_sub(1, std::memory_order_relaxed);
  read_buf_accounted_ = 0;
}

int64_t InputMessenger::UpdateReadBufferBudget(Socket* m) {
  const size_t now = m->read_buf().size();
  const size_t before = m->read_buf_accounted_;
  if (now == before) return g_read_buf_bytes.load(std::memory_order_relaxed);
  if (before == 0) g_read_buf_holders.fetch_add(1, std::memory_order_relaxed);
  if (now == 0) g_read_buf_holders.fetch_sub(1, std::memory_order_relaxed);
  m->read_buf_accounted_ = now;
  const int64_t delta = static_cast<int64_t>(now) - static_cast<int64_t>(before);
  return g_read_buf_bytes.fetch_add(delta, std::memory_order_relaxed) + delta;
}

bool InputMessenger::CloseIfReadTimedOut(Socket* m, int64_t now_us) {
  const int64_t since = m->partial_message_since_us();
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

bool InputMessenger::CheckReadBounds(Socket* m, bool completed, int64_t now_us, bool* over_budget) {
  // The message being received: what is buffered plus what the parser
  // consumed of it without completing it.
  const int64_t partial = static_cast<int64_t>(m->last_msg_size_ + m->read_buf().size());
  if (partial == 0) {
    m->partial_since_us_.store(0, std::memory_order_relaxed);
  } else if (completed || m->partial_since_us_.load(std::memory_order_relaxed) == 0) {
    // A new message began in this read.
    m->partial_since_us_.store(now_us, std::memory_order_relaxed);
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
  const int64_t total = UpdateReadBufferBudget(m);
  const int64_t cap = load_flag(FLAGS_weft_max_read_buffer_bytes);
  if (total <= cap) return true;
  // This read took (or kept) the total over the cap. The connection closes
  // if it holds at least the average share of the holders, so the largest
  // holder always qualifies when it reads; a smaller one only stops reading
  // (its memory does not grow) until the total is back under the cap.
  const int64_t held = static_cast<int64_t>(m->read_buf_accounted_);
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
  return m->nmsg_in_flight_.load(std::memory_order_seq_cst) >= cap;
}

bool InputMessenger::OutputOvercrowded(const Socket* m, int64_t limit) {
  return m->unwritten_bytes() >= limit;
}

bool InputMessenger::OverReadBudget(const Socket*, int64_t cap) {
  return g_read_buf_bytes.load(std::memory_order_relaxed) > cap;
}

bool InputMessenger::PauseReading(Socket* m, bool (*must_wait)(const Socket*, int64_t),
                                  int64_t arg) {
  while (must_wait(m, arg)) {
    if (m->Failed()) return false;
    // Lost wake-ups: the butex value is read before reader_waiting_ is set
    // (seq_cst), and the condition (nmsg_in_flight_, seq_cst) re-read after.
    // A finishing message decrements nmsg_in_flight_ (seq_cst) and then
    // reads reader_waiting_ (seq_cst). In the single total order either it
    // sees the flag, and its butex increment comes after our read of the
    // value, so butex_wait returns at once; or our re-read sees its
    // decrement. Conditions nobody signals are re-checked each PAUSE_POLL_MS.
    const int expected = m->read_butex_->load(std::memory_order_relaxed);
    m->reader_waiting_.store(true, std::memory_order_seq_cst);
    if (!must_wait(m, arg)) {
      m->reader_waiting_.store(false, std::memory_order_relaxed);
      break;
    }
    const timespec abstime = realtime_after_ms(PAUSE_POLL_MS);
    butex_wait(m->read_butex_, expected, &abstime);
    m->reader_waiting_.store(false, std::memory_order_relaxed);
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

ParseResult InputMessenger::CutInputMessage(Socket* m, size_t* index, bool read_eof) {
  IOBuf* const source = &m->read_buf();
  const int preferred = m->preferred_index_;
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
    m->preferred_index_ = static_cast<int>(i);
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
  msg->process_(msg);
  // seq_cst on both: PauseReading's protocol (see there).
  s->nmsg_in_flight_.fetch_sub(1, std::memory_order_seq_cst);
  if (s->reader_waiting_.load(std::memory_order_seq_cst)) {
    s->read_butex_->fetch_add(1, std::memory_order_relaxed);
    butex_wake(s->read_butex_);
  }
  // The postponed EOF goes when the message is destroyed (Destroy), which
  // an asynchronous handler does after it has answered.
  return nullptr;
}

void InputMessenger::ReleaseEOF(Socket* s) { s->CheckEOF(); }

void InputMessageBase::Destroy() {
  if (!holds_eof_ || socket_ == nullptr) {
    DestroyImpl();
    return;
  }
  // Our own reference: DestroyImpl frees the message and its reference,
  // and the graceful close must come after (the reply the handler wrote is
  // queued by now, so the close flushes it).
  SocketUniquePtr s = std::move(socket_);
  DestroyImpl();
  InputMessenger::ReleaseEOF(s.get());
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
  // Before pausing, nothing of this connection may wait on the pause: the
  // kept message goes to a fiber and the read's fibers are woken.
  auto release_pending = [&] {
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
      if (!PauseReading(m, OutputOvercrowded, max_unwritten / 2)) break;
    }
    if (over_budget) {
      release_pending();
      if (!PauseReading(m, OverReadBudget, load_flag(FLAGS_weft_max_read_buffer_bytes))) break;
      over_budget = false;
    }
    size_t once_read = m->avg_msg_size_ * 16;
    if (once_read < MIN_ONCE_READ) once_read = MIN_ONCE_READ;
    if (once_read > MAX_ONCE_READ) once_read = MAX_ONCE_READ;
    // Bytes alone are not activity: complete messages are (below).
    const ssize_t nr = m->DoRead(once_read, /*bytes_are_activity=*/false);
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
      ParseResult pr = messenger->CutInputMessage(m, &index, read_eof);
      if (!pr.is_ok()) {
        if (pr.error() == PARSE_ERROR_NOT_ENOUGH_DATA) {
          // Some protocols consume bytes without completing a message.
          m->last_msg_size_ += last_size - m->read_buf().size();
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
      m->last_msg_size_ += last_size - cur_size;
      last_size = cur_size;
      m->avg_msg_size_ =
          m->avg_msg_size_ == 0
              ? m->last_msg_size_
              : (m->avg_msg_size_ * (MSG_SIZE_WINDOW - 1) + m->last_msg_size_) / MSG_SIZE_WINDOW;
      m->last_msg_size_ = 0;

      InputMessageBase* const msg = pr.message();
      if (msg == nullptr) continue;  // nothing to run (e.g. a keep-alive)
      const InputMessageHandler& h = messenger->handlers_[index];
      msg->received_us_ = received_us;
      msg->process_ = h.process;
      msg->arg_ = h.arg;
      m->ReAddress(&msg->socket_);
      if (h.verify != nullptr && !m->verified_) {
        // Only this fiber reads the socket, so the first message is
        // verified here once, before anything of the connection runs.
        if (!h.verify(msg)) {
          WEFT_NET_WARN("close %s: authentication failed", m->description().c_str());
          m->SetFailed(EACCES, "fail to authenticate %s", m->description().c_str());
          msg->Destroy();
          failed = true;
          break;
        }
        m->verified_ = true;
      }
      // At the cap, stop cutting (and so reading) until some finish. The
      // kept message is released first: it counts as in flight.
      const int cap = load_flag(FLAGS_weft_max_messages_in_flight_per_connection);
      if (cap > 0 && m->nmsg_in_flight_.load(std::memory_order_relaxed) >= cap) {
        release_pending();
        if (!PauseReading(m, TooManyInFlight, cap)) {
          msg->Destroy();
          failed = true;
          break;
        }
      }
      // Only this fiber increments; finishing messages decrement.
      m->nmsg_in_flight_.fetch_add(1, std::memory_order_relaxed);
      // The message keeps the connection's EOF pending until it has run.
      m->PostponeEOF();
      msg->holds_eof_ = true;
      if (last_msg != nullptr) QueueMessage(last_msg, &num_fibers);
      last_msg = msg;
    }
    // The idle timer moves on complete messages only.
    if (completed) m->last_read_us_.store(coarse_now_us, std::memory_order_relaxed);
    if (!failed && !read_eof && !CheckReadBounds(m, completed, coarse_now_us, &over_budget)) {
      failed = true;
    }
    // One wake-up for all the fibers this read created. last_msg is run
    // after the loop: the next read's EAGAIN goes through MoreReadEvents
    // first, so an event arriving meanwhile starts another reading fiber
    // while this one processes.
    if (num_fibers > 0) bthread_flush();
    num_fibers = 0;
  }
  if (read_eof) {
    // Closed once the messages in flight have run (their replies can still
    // go out).
    m->SetEOF();
  }
  if (last_msg != nullptr) ProcessInputMessage(last_msg);
}

}  // namespace weft
