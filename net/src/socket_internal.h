// Internal: the requests the write and connect paths pass around.
#ifndef WEFT_NET_SOCKET_INTERNAL_H_
#define WEFT_NET_SOCKET_INTERNAL_H_

#include <stdint.h>

#include <atomic>

#include "weft/bthread.h"
#include "weft/net/iobuf.h"
#include "weft/net/socket.h"

namespace weft {

// One accepted Write(). Requests form a singly linked list through `next`:
// pushed newest-first by StartWrite (next points to the older request) and
// re-linked oldest-first by the writer (IsWriteComplete) before writing.
struct Socket::WriteRequest {
  // `next` of a request pushed by StartWrite before the pusher stored its
  // real successor: the writer spins until it changes (a window of a few
  // instructions between the exchange and the store).
  static WriteRequest* const UNCONNECTED;

  IOBuf data;
  // Written by the pusher (once, after the exchange; release) and then only
  // by the single writer. Atomic because the writer reads it while the
  // pusher may still be storing it (the UNCONNECTED window); the writer's
  // first load is acquire so the pusher's store happens before the writer
  // frees the request. Other fields were published by the exchange on
  // write_head_.
  std::atomic<WriteRequest*> next{nullptr};
  bthread_id_t id_wait = INVALID_BTHREAD_ID;
  // The socket, with one reference held for KeepWrite / the connect path.
  Socket* socket = nullptr;
  // Bytes counted into unwritten_bytes_ for this request.
  int64_t accounted = 0;
  // The close request CloseGracefully pushes (no data): the writer stops
  // there and fails the socket, so every request before it is flushed and
  // none after it is written.
  bool is_close = false;
  // WriteOptions::on_written, called once when the request is written or
  // fails (ReturnSuccessfulWriteRequest / ReturnFailedWriteRequest).
  void (*on_written)(Socket*, int, void*) = nullptr;
  void* on_written_arg = nullptr;
  // Link in a free list of the request pool (socket_write.cpp); unused
  // while the request is live.
  WriteRequest* pool_next = nullptr;

  static WriteRequest* New();
  static void Delete(WriteRequest* req);
};

// The user of a temporary socket that watches a connecting fd for EPOLLOUT.
// Whoever fails that socket first (the EPOLLOUT event or the timeout timer)
// runs on_epollout_event; recycling the socket deletes this request.
struct Socket::EpollOutRequest : public SocketUser {
  EpollOutRequest() : SocketUser(Kind::kEpollOutRequest) {}
  int fd = -1;
  bthread_timer_t timer_id = 0;
  int (*on_epollout_event)(int fd, int err, void* data) = nullptr;
  void* data = nullptr;

  ~EpollOutRequest() override;
  void BeforeRecycle(Socket*) override { delete this; }
};

namespace net_internal {
// Test-only: when set, called while a connect timeout is being counted
// (connect_timeout_test shows a successful connect elsewhere never waits
// for it).
extern std::atomic<void (*)()> connect_timeout_count_hook;

inline Socket::EpollOutRequest* as_epollout_request(SocketUser* user) {
  // The tag, not a dynamic_cast: this runs for every EPOLLOUT event.
  return user != nullptr && user->user_kind() == SocketUser::Kind::kEpollOutRequest
             ? static_cast<Socket::EpollOutRequest*>(user)
             : nullptr;
}
}  // namespace net_internal

}  // namespace weft

#endif  // WEFT_NET_SOCKET_INTERNAL_H_
