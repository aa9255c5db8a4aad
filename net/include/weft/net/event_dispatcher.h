// weft/net/event_dispatcher.h: edge-triggered epoll, run in a fiber.
//
// Each dispatcher owns an epoll fd and one fiber that waits on it. An event
// carries the SocketId of its socket (never a pointer: the socket may have
// recycled by the time the event is read, and an id then fails to address).
// Input events go to Socket::StartInputEvent, output events to
// Socket::HandleEpollOut.
//
// Three ways to wait (DispatchMode): all poll with a zero timeout while
// events keep coming. kFiber then parks its fiber with bthread_fd_wait on
// the epoll fd; kWorker first blocks its worker in epoll_wait for up to
// --weft_event_dispatcher_block_us, but only when that worker has nothing
// else ready; kPthread runs on its own pthread. No mode keeps an idle
// dispatcher on a worker: on a 2-core machine that is half the CPU.
#ifndef WEFT_NET_EVENT_DISPATCHER_H_
#define WEFT_NET_EVENT_DISPATCHER_H_

#include <stdint.h>

#include <atomic>
#include <thread>

#include "weft/bthread.h"
#include "weft/net/socket_id.h"

struct epoll_event;

namespace weft {

// How a dispatcher waits (--weft_event_dispatcher_mode; see net/README.md).
enum class DispatchMode {
  kFiber,    // its fiber parks on the epoll fd (bthread_fd_wait)
  kWorker,   // blocks its worker in epoll_wait while nothing else is ready there
  kPthread,  // a dedicated pthread blocks in epoll_wait
};
// "fiber", "worker", "pthread". False (and *mode untouched) otherwise.
bool ParseDispatchMode(const char* name, DispatchMode* mode);

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
  int Start(const bthread_attr_t* consumer_thread_attr, DispatchMode mode);
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

  DispatchMode mode() const { return mode_; }

  // Rounds of events handled (for tests and metrics).
  int64_t nevents() const { return nevents_.load(std::memory_order_relaxed); }

 private:
  static void* RunThis(void* arg);
  void Run();           // kFiber, kWorker: the dispatching fiber
  void RunInPthread();  // kPthread
  void ParkOnEpollFd();
  // kFiber: one round of polling instead of parking, while the last event
  // is under spin_ns old. False: park.
  static bool Spin(int64_t spin_ns, int64_t last_event_ns);
  void Dispatch(const epoll_event* events, int n);

  int epfd_ = -1;
  // Set by Stop; the fiber checks it after every wait.
  std::atomic<bool> stop_{false};
  bthread_t tid_ = 0;
  std::thread thread_;  // kPthread
  DispatchMode mode_ = DispatchMode::kFiber;
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
