// weft/net/event_dispatcher.h: edge-triggered epoll, run in a fiber.
//
// Each dispatcher owns an epoll fd and one fiber that waits on it. An event
// carries the SocketId of its socket (never a pointer: the socket may have
// recycled by the time the event is read, and an id then fails to address).
// Input events go to Socket::StartInputEvent, output events to
// Socket::HandleEpollOut.
//
// Unlike a dispatcher that blocks its worker in epoll_wait, this one polls
// with a zero timeout while events keep coming and otherwise parks its fiber
// with bthread_fd_wait on the epoll fd, so an idle dispatcher holds no
// worker: on a 2-core machine that is half the CPU.
#ifndef WEFT_NET_EVENT_DISPATCHER_H_
#define WEFT_NET_EVENT_DISPATCHER_H_

#include <stdint.h>

#include <atomic>

#include "weft/bthread.h"
#include "weft/net/socket_id.h"

namespace weft {

class EventDispatcher {
 public:
  EventDispatcher();
  ~EventDispatcher();  // Stops and joins.
  EventDispatcher(const EventDispatcher&) = delete;
  EventDispatcher& operator=(const EventDispatcher&) = delete;

  // Starts the dispatching fiber; consumer fibers (the sockets' reading
  // fibers) use *consumer_thread_attr (NULL: BTHREAD_ATTR_NORMAL).
  // 0, or -1 with errno.
  int Start(const bthread_attr_t* consumer_thread_attr);
  bool Running() const;
  // Asks the fiber to quit and wakes it. Sockets stay registered.
  void Stop();
  // Waits until the fiber has quit.
  void Join();

  // Watch fd for input (EPOLLIN | EPOLLET); events go to
  // Socket::StartInputEvent(socket_id). 0, or -1 with errno.
  int AddConsumer(SocketId socket_id, int fd);
  // Stop watching fd. 0, or -1 with errno.
  int RemoveConsumer(int fd);
  // Watch fd for EPOLLOUT (edge-triggered); with pollin the fd is already
  // registered as a consumer and keeps EPOLLIN. 0, or -1 with errno
  // (ENOENT when pollin but the consumer was removed).
  int AddEpollOut(SocketId socket_id, int fd, bool pollin);
  // Undo AddEpollOut. 0, or -1 with errno.
  int RemoveEpollOut(SocketId socket_id, int fd, bool pollin);

  // Rounds of events handled (for tests and metrics).
  int64_t nevents() const { return nevents_.load(std::memory_order_relaxed); }

 private:
  static void* RunThis(void* arg);
  void Run();

  int epfd_ = -1;
  // Set by Stop; the fiber checks it after every wait.
  std::atomic<bool> stop_{false};
  bthread_t tid_ = 0;
  bthread_attr_t consumer_thread_attr_;
  // Stop adds wakeup_fds_[1] (always writable) to the epoll to end a wait.
  int wakeup_fds_[2] = {-1, -1};
  std::atomic<int64_t> nevents_{0};
};

// The process-wide dispatcher for fd (--weft_event_dispatcher_num of them,
// started on first use and stopped at exit).
EventDispatcher& GetGlobalEventDispatcher(int fd);

}  // namespace weft

#endif  // WEFT_NET_EVENT_DISPATCHER_H_
