// ReplyOrderer: in-order replies for pipelined in_order protocols.
#include "weft/rpc/reply_orderer.h"

#include <errno.h>

#include <utility>

namespace weft::rpc {

int ReplyOrderer::Reply(Socket* s, uint64_t seq, IOBuf* data, bool close_after) {
  // The writes are queued under the mutex: Socket::Write keeps the order of
  // its callers' pushes, so holding mu_ across them keeps the wire order
  // equal to the sequence order. Write never blocks (it writes once or
  // hands over to KeepWrite), so the mutex is held briefly.
  std::lock_guard<std::mutex> guard(mu_);
  if (closed_) {
    // A reply before this one closed the connection: later ones are dropped.
    data->clear();
    errno = ESHUTDOWN;
    return -1;
  }
  if (seq != next_to_write_) {
    Held& h = early_[seq];
    h.data.swap(*data);
    h.close_after = close_after;
    return 0;
  }
  int rc = 0;
  IOBuf cur;
  cur.swap(*data);
  bool close_now = close_after;
  for (;;) {
    if (!cur.empty() && s->Write(&cur) != 0) {
      rc = -1;
      cur.clear();
    }
    ++next_to_write_;
    if (close_now) {
      closed_ = true;
      early_.clear();
      s->CloseGracefully(ESHUTDOWN, "%s: closed after its reply", s->description().c_str());
      break;
    }
    auto it = early_.find(next_to_write_);
    if (it == early_.end()) break;
    cur.swap(it->second.data);
    close_now = it->second.close_after;
    early_.erase(it);
  }
  return rc;
}

size_t ReplyOrderer::held() const {
  std::lock_guard<std::mutex> guard(mu_);
  return early_.size();
}

}  // namespace weft::rpc
