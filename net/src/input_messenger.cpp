// InputMessenger::OnNewMessages: read, cut, verify, run.
#include "weft/net/input_messenger.h"

#include <errno.h>
#include <string.h>

#include <gflags/gflags.h>

#include "base/time_util.h"
#include "net_log.h"
#include "weft/bthread.h"
#include "weft/errno.h"

DEFINE_int64(weft_max_body_size, 64 * 1024 * 1024,
             "Largest message a protocol accepts; a bigger one closes its connection");

namespace weft {

namespace {
// The average message size is a moving average over about this many
// messages.
constexpr size_t MSG_SIZE_WINDOW = 10;
}  // namespace

// The flag may be changed while connections parse (tests, a reloading
// admin page): read it as a relaxed atomic; writers should store the same
// way (__atomic_store_n) or accept a torn value on exotic platforms.
int64_t max_body_size() { return __atomic_load_n(&FLAGS_weft_max_body_size, __ATOMIC_RELAXED); }

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
  _handlers.push_back(handler);
  return 0;
}

ParseResult InputMessenger::CutInputMessage(Socket* m, size_t* index, bool read_eof) {
  IOBuf* const source = &m->read_buf();
  const int preferred = m->_preferred_index;
  if (source->empty() && !(read_eof && preferred >= 0)) {
    return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  }
  if (preferred >= 0) {
    const InputMessageHandler& h = _handlers[static_cast<size_t>(preferred)];
    ParseResult r = h.parse(source, m, read_eof, h.arg);
    if (r.is_ok() || r.error() != PARSE_ERROR_TRY_OTHERS) {
      *index = static_cast<size_t>(preferred);
      return r;
    }
    // The connection changed protocol: try the others.
  }
  if (source->empty()) return ParseResult::Error(PARSE_ERROR_NOT_ENOUGH_DATA);
  for (size_t i = 0; i < _handlers.size(); ++i) {
    if (static_cast<int>(i) == preferred) continue;
    const InputMessageHandler& h = _handlers[i];
    ParseResult r = h.parse(source, m, read_eof, h.arg);
    if (r.error() == PARSE_ERROR_TRY_OTHERS) continue;
    *index = i;
    // A protocol that claims the bytes (even needing more of them) owns the
    // connection from now on.
    m->_preferred_index = static_cast<int>(i);
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
  msg->_process(msg);
  s->CheckEOF();
  return nullptr;
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
  InputMessenger* const messenger = dynamic_cast<InputMessenger*>(m->user());
  if (messenger == nullptr || messenger->_handlers.empty()) {
    m->SetFailed(EINVAL, "%s: its user is not an InputMessenger with protocols",
                 m->description().c_str());
    return;
  }
  int progress = Socket::PROGRESS_INIT;
  // Each read's last message runs in this fiber, after the read's other
  // messages were handed to fibers; it is kept here until then.
  InputMessageBase* last_msg = nullptr;
  bool read_eof = false;
  bool failed = false;
  while (!read_eof && !failed) {
    size_t once_read = m->_avg_msg_size * 16;
    if (once_read < MIN_ONCE_READ) once_read = MIN_ONCE_READ;
    if (once_read > MAX_ONCE_READ) once_read = MAX_ONCE_READ;
    const ssize_t nr = m->DoRead(once_read);
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
    int num_fibers = 0;
    size_t last_size = m->read_buf().size();
    for (;;) {
      size_t index = 0;
      ParseResult pr = messenger->CutInputMessage(m, &index, read_eof);
      if (!pr.is_ok()) {
        if (pr.error() == PARSE_ERROR_NOT_ENOUGH_DATA) {
          // Some protocols consume bytes without completing a message.
          m->_last_msg_size += last_size - m->read_buf().size();
          break;
        }
        WEFT_NET_WARN("close %s: %s", m->description().c_str(), pr.error_str());
        m->SetFailed(pr.error() == PARSE_ERROR_TOO_BIG_DATA ? EMSGSIZE : EPROTO, "close %s: %s",
                     m->description().c_str(), pr.error_str());
        failed = true;
        break;
      }
      // Moving average of message sizes, for the next read's size.
      const size_t cur_size = m->read_buf().size();
      m->_last_msg_size += last_size - cur_size;
      last_size = cur_size;
      m->_avg_msg_size = m->_avg_msg_size == 0
                             ? m->_last_msg_size
                             : (m->_avg_msg_size * (MSG_SIZE_WINDOW - 1) + m->_last_msg_size) /
                                   MSG_SIZE_WINDOW;
      m->_last_msg_size = 0;

      InputMessageBase* const msg = pr.message();
      if (msg == nullptr) continue;  // nothing to run (e.g. a keep-alive)
      const InputMessageHandler& h = messenger->_handlers[index];
      msg->_received_us = received_us;
      msg->_process = h.process;
      msg->_arg = h.arg;
      m->ReAddress(&msg->_socket);
      if (h.verify != nullptr && !m->_verified) {
        // Only this fiber reads the socket, so the first message is
        // verified here once, before anything of the connection runs.
        if (!h.verify(msg)) {
          WEFT_NET_WARN("close %s: authentication failed", m->description().c_str());
          m->SetFailed(EACCES, "fail to authenticate %s", m->description().c_str());
          msg->Destroy();
          failed = true;
          break;
        }
        m->_verified = true;
      }
      // The message keeps the connection's EOF pending until it has run.
      m->PostponeEOF();
      if (last_msg != nullptr) QueueMessage(last_msg, &num_fibers);
      last_msg = msg;
    }
    // One wake-up for all the fibers this read created. last_msg is run
    // after the loop: the next read's EAGAIN goes through MoreReadEvents
    // first, so an event arriving meanwhile starts another reading fiber
    // while this one processes.
    if (num_fibers > 0) bthread_flush();
  }
  if (read_eof) {
    // Closed once the messages in flight have run (their replies can still
    // go out).
    m->SetEOF();
  }
  if (last_msg != nullptr) ProcessInputMessage(last_msg);
}

}  // namespace weft
