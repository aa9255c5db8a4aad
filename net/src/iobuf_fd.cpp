// IOBuf's file-descriptor I/O: reading into fresh blocks with readv and
// writing the refs with one sendmsg/writev. The blocks come from the
// calling thread's state in iobuf.cpp, through iobuf_block.h.
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>

#include "iobuf_block.h"
#include "weft/net/iobuf.h"

namespace weft {

namespace {

using iobuf_internal::acquire_block;
using iobuf_internal::add_ref;
using iobuf_internal::Block;
using iobuf_internal::current_block_with_room;
using iobuf_internal::keep_as_current_if_roomier;
using iobuf_internal::return_unread_block;

// Adds `len` bytes at `p` to an iovec array, extending the last iovec when
// the bytes continue it in memory (consecutive small messages built on one
// thread sit back to back in one block even when they are separate IOBufs).
// Returns false, adding nothing, when a new iovec is needed and none is left.
inline bool add_iov(iovec* iov, size_t* niov, const char* p, size_t len) {
  if (*niov != 0) {
    iovec& last = iov[*niov - 1];
    if (static_cast<const char*>(last.iov_base) + last.iov_len == p) {
      last.iov_len += len;
      return true;
    }
  }
  if (*niov == IOBUF_IOV_MAX) return false;
  iov[*niov].iov_base = const_cast<char*>(p);
  iov[*niov].iov_len = len;
  ++*niov;
  return true;
}

// Adds buf's references to the iovecs until `total` reaches size_hint or the
// iovecs run out. Returns false when it stopped for lack of iovecs.
bool add_refs_to_iov(const IOBuf& buf, iovec* iov, size_t* niov, size_t* total, size_t size_hint) {
  const size_t n = buf.backing_block_num();
  for (size_t i = 0; i < n && *total < size_hint; ++i) {
    std::string_view v = buf.backing_block(i);
    if (!add_iov(iov, niov, v.data(), v.size())) return false;
    *total += v.size();
  }
  return true;
}

// writev that never raises SIGPIPE: on sockets it is sendmsg with
// MSG_NOSIGNAL (a write to a connection the peer reset then fails with
// EPIPE instead of killing the process); on other fds (pipes, files) it
// falls back to writev, whose SIGPIPE the application handles as usual.
ssize_t write_iov(int fd, iovec* iov, size_t niov) {
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = niov;
  const ssize_t nw = sendmsg(fd, &msg, MSG_NOSIGNAL);
  if (nw >= 0 || errno != ENOTSOCK) return nw;
  return writev(fd, iov, static_cast<int>(niov));
}

}  // namespace

ssize_t IOBuf::append_from_file_descriptor(int fd, size_t max_count) {
  bool drained;
  return append_from_file_descriptor(fd, max_count, &drained);
}

ssize_t IOBuf::append_from_file_descriptor(int fd, size_t max_count, bool* drained) {
  *drained = false;
  if (max_count == 0) return 0;
  Block* cur = current_block_with_room();
  // iov[0] is the current block's free tail when there is one; the rest are
  // fresh blocks from their first byte (so iov_base locates the block).
  iovec iov[IOBUF_IOV_MAX];
  size_t niov = 0;
  size_t space = 0;
  if (cur != nullptr) {
    space = std::min<size_t>(cur->cap - cur->size, max_count);
    iov[0].iov_base = cur->data() + cur->size;
    iov[0].iov_len = space;
    niov = 1;
  }
  const size_t first_fresh = niov;
  while (space < max_count && niov < IOBUF_IOV_MAX) {
    Block* b = acquire_block();  // our count until a ref or the thread takes it
    if (b == nullptr) break;
    const size_t len = std::min<size_t>(b->cap, max_count - space);
    iov[niov].iov_base = b->data();
    iov[niov].iov_len = len;
    ++niov;
    space += len;
  }
  auto fresh_block = [&](size_t i) {
    return reinterpret_cast<Block*>(static_cast<char*>(iov[i].iov_base) - sizeof(Block));
  };
  auto give_back_fresh = [&](size_t from) {
    for (size_t i = from; i < niov; ++i) return_unread_block(fresh_block(i));
  };
  // Room in the ring first: bytes read cannot be un-read.
  if (niov == 0 || !reserve_refs(static_cast<size_t>(nref_) + niov)) {
    give_back_fresh(first_fresh);
    errno = ENOMEM;
    return -1;
  }
  const ssize_t nr = readv(fd, iov, static_cast<int>(niov));
  *drained = nr >= 0 && static_cast<size_t>(nr) < space;
  if (nr <= 0) {
    const int saved = errno;
    give_back_fresh(first_fresh);
    errno = saved;
    return nr;
  }
  size_t left = static_cast<size_t>(nr);
  if (cur != nullptr) {
    const auto k = static_cast<uint32_t>(std::min(left, iov[0].iov_len));
    if (k != 0) {
      add_ref(cur);
      push_ref(BlockRef{cur->size, k, cur});  // cannot fail: reserved
      cur->size += k;
      left -= k;
    }
  }
  for (size_t i = first_fresh; i < niov; ++i) {
    Block* b = fresh_block(i);
    const auto k = static_cast<uint32_t>(std::min(left, iov[i].iov_len));
    if (k == 0) {
      return_unread_block(b);  // got nothing: kept for the next read
      continue;
    }
    left -= k;
    b->size = k;
    // Our count goes to the ref. Only the last block that got data can be
    // partly filled; it becomes the current block if it has more room than
    // the current one, so the next read or append continues in it.
    keep_as_current_if_roomier(b);
    push_ref(BlockRef{0, k, b});  // cannot fail: reserved
  }
  return nr;
}

ssize_t IOBuf::cut_into_file_descriptor(int fd, size_t size_hint) {
  if (nbytes_ == 0) return 0;
  iovec iov[IOBUF_IOV_MAX];
  size_t niov = 0;
  size_t total = 0;
  add_refs_to_iov(*this, iov, &niov, &total, std::max<size_t>(size_hint, 1));
  const ssize_t nw = write_iov(fd, iov, niov);
  if (nw > 0) pop_front(static_cast<size_t>(nw));
  return nw;
}

ssize_t IOBuf::cut_multiple_into_file_descriptor(int fd, IOBuf* const* pieces, size_t count,
                                                 size_t size_hint) {
  iovec iov[IOBUF_IOV_MAX];
  size_t niov = 0;
  size_t total = 0;
  size_hint = std::max<size_t>(size_hint, 1);
  for (size_t i = 0; i < count && total < size_hint; ++i) {
    if (pieces[i] == nullptr) continue;
    if (!add_refs_to_iov(*pieces[i], iov, &niov, &total, size_hint)) break;
  }
  if (total == 0) return 0;
  const ssize_t nw = write_iov(fd, iov, niov);
  if (nw <= 0) return nw;
  // What was written is a prefix of the pieces' concatenation.
  size_t left = static_cast<size_t>(nw);
  for (size_t i = 0; i < count && left != 0; ++i) {
    if (pieces[i] != nullptr) left -= pieces[i]->pop_front(left);
  }
  return nw;
}

}  // namespace weft
