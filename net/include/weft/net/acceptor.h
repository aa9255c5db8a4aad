// weft/net/acceptor.h: accepts connections on a listening fd.
//
// The listening fd becomes a Socket whose reading callback is
// OnNewConnections: it accepts until EAGAIN, and again while more events
// arrived meanwhile. Each connection becomes a Socket whose user is the
// Acceptor and whose reading callback is the one the Acceptor was built
// with: by default InputMessenger::OnNewMessages, which cuts and runs
// messages with the protocols added by AddHandler (an Acceptor is an
// InputMessenger). The Acceptor keeps the connections' ids (the socket
// map), closes connections idle longer than idle_timeout_sec, and
// StopAccept fails them all.
#ifndef WEFT_NET_ACCEPTOR_H_
#define WEFT_NET_ACCEPTOR_H_

#include <stddef.h>

#include <atomic>
#include <unordered_map>
#include <vector>

#include "weft/bthread.h"
#include "weft/net/input_messenger.h"
#include "weft/net/socket.h"

namespace weft {

class Acceptor : public InputMessenger {
 public:
  // on_new_messages runs (in a fiber, one at a time per connection) when a
  // connection is readable; `arg` is for it (see arg()). The default runs
  // the protocols added with AddHandler.
  explicit Acceptor(void (*on_new_messages)(Socket*) = InputMessenger::OnNewMessages,
                    void* arg = nullptr, bthread_keytable_pool_t* keytable_pool = nullptr);
  // Stops accepting and waits for every connection to recycle (also the
  // caller's own: never destroy an Acceptor from one of its handlers).
  ~Acceptor() override;

  // Takes over listened_fd (closed when the listening socket recycles, also
  // on failure). idle_timeout_sec > 0: connections with no activity for that
  // long are closed (activity: a write, and a complete message for
  // InputMessenger connections, any bytes read for other callbacks). A
  // closer fiber also enforces --weft_read_timeout_ms. 0, or -1 with errno.
  int StartAccept(int listened_fd, int idle_timeout_sec);
  // Stops accepting, closes every connection gracefully (ELOGOFF: queued
  // replies are flushed first) and waits until the listening socket and
  // every connection have recycled. A connection stays alive while someone
  // holds a SocketUniquePtr to it. Any fiber or pthread; suspends.
  //
  // Called from a handler (InputMessageHandler::process, or the reading
  // callback, in the fiber that runs it) of one of this acceptor's
  // connections, it closes that
  // connection too but does not wait for it: it cannot recycle before the
  // handler returns. Until it has, the acceptor is still stopping:
  // StartAccept fails with EBUSY, and a later StopAccept from elsewhere (or
  // the destructor) waits for it as well.
  void StopAccept();

  // At most n connections open at once (0: unlimited, the default): past
  // it a new connection is accepted and closed at once, without a Socket
  // (brpc's Acceptor max_connection). Any thread; takes effect for the
  // next accept.
  void set_max_connections(size_t n) { max_connections_.store(n, std::memory_order_relaxed); }

  size_t ConnectionCount() const;
  void ListConnections(std::vector<SocketId>* ids) const;
  // The listening socket (INVALID_SOCKET_ID before StartAccept and once
  // stopped). Any thread: read under the lock that Stop's end writes it in.
  SocketId listening_id() const;
  void* arg() const { return arg_; }

  // The listening socket's reading callback.
  static void OnNewConnections(Socket* acception);

 private:
  enum Status { UNINITIALIZED, RUNNING, STOPPING, STOPPED };

  // The listening socket's user: tells the Acceptor when it recycles (the
  // listener's id is not known until Create returns, and events may start
  // before that).
  struct ListenerUser : public SocketUser {
    Acceptor* owner = nullptr;
    void BeforeRecycle(Socket*) override;
  };

  // StopAccept; wait_for_callers_connection: also when the caller runs a
  // handler of one of our connections (the destructor).
  void Stop(bool wait_for_callers_connection);
  // Under map_mutex_: may Stop return? (see Stop)
  bool StopWaitOverLocked() const;
  // Under map_mutex_: STOPPING -> STOPPED once the stop was issued and the
  // listener and every connection have recycled.
  void MaybeFinishStopLocked();
  static void OnNewConnectionsUntilEAGAIN(Socket* acception);
  // The reading callback of connections: on_new_messages_, with the fiber
  // marked as serving the connection (see StopAccept).
  static void OnConnectionEvents(Socket* sock);
  static void* CloseIdleConnections(void* arg);
  // A connection recycled: drop it from the map.
  void BeforeRecycle(Socket* sock) override;
  void OnListenerRecycled();

  void (*const on_new_messages_)(Socket*);
  void* const arg_;
  bthread_keytable_pool_t* const keytable_pool_;

  // Guards everything below. A fiber-aware mutex: held briefly by
  // accepting fibers and recycling threads.
  mutable bthread_mutex_t map_mutex_;
  // Signalled when the listening socket recycles, the map empties or a
  // start completes.
  bthread_cond_t empty_cond_;
  Status status_ = UNINITIALIZED;
  // StartAccept is between setting RUNNING and recording the listener.
  bool starting_ = false;
  SocketId acception_id_ = INVALID_SOCKET_ID;
  bool listener_recycled_ = true;
  ListenerUser listener_user_;
  int idle_timeout_sec_ = 0;
  bthread_t close_idle_tid_ = 0;
  // STOPPING: the stopping caller has closed every connection and joined
  // the idle closer.
  bool stop_issued_ = false;
  // Connections whose handlers are waiting in StopAccept (see Stop).
  std::vector<SocketId> callers_in_stop_;
  // Connection id -> nothing yet (room for per-connection statistics).
  std::unordered_map<SocketId, int> socket_map_;
  // See set_max_connections. Relaxed: a limit read by the accepting fiber,
  // not a synchronization.
  std::atomic<size_t> max_connections_{0};
};

}  // namespace weft

#endif  // WEFT_NET_ACCEPTOR_H_
