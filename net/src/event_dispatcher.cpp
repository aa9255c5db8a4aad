#include "weft/net/event_dispatcher.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <mutex>

#include <gflags/gflags.h>

#include "net_log.h"
#include "weft/net/socket.h"

DEFINE_int32(weft_event_dispatcher_num, 1,
             "Number of epoll dispatchers; an fd is served by one chosen by hashing it");

namespace weft {

namespace {
// epoll data of the Stop() wake-up fd: no socket has this id.
constexpr SocketId kWakeupId = INVALID_SOCKET_ID;
}  // namespace

EventDispatcher::EventDispatcher() : consumer_thread_attr_(BTHREAD_ATTR_NORMAL) {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) {
    fprintf(stderr, "weft net: epoll_create1 failed: %s\n", strerror(errno));
    return;
  }
  if (pipe2(wakeup_fds_, O_CLOEXEC | O_NONBLOCK) != 0) {
    fprintf(stderr, "weft net: pipe2 failed: %s\n", strerror(errno));
    wakeup_fds_[0] = wakeup_fds_[1] = -1;
  }
}

EventDispatcher::~EventDispatcher() {
  Stop();
  Join();
  if (epfd_ >= 0) close(epfd_);
  if (wakeup_fds_[0] >= 0) close(wakeup_fds_[0]);
  if (wakeup_fds_[1] >= 0) close(wakeup_fds_[1]);
}

int EventDispatcher::Start(const bthread_attr_t* consumer_thread_attr) {
  if (epfd_ < 0 || wakeup_fds_[1] < 0) {
    errno = EINVAL;
    return -1;
  }
  if (tid_ != 0) {
    errno = EBUSY;
    return -1;
  }
  consumer_thread_attr_ = consumer_thread_attr != nullptr ? *consumer_thread_attr : BTHREAD_ATTR_NORMAL;
  // Set before the fiber starts, which reads it without synchronization
  // beyond the start itself.
  const int rc = bthread_start_background(&tid_, &BTHREAD_ATTR_NORMAL, RunThis, this);
  if (rc != 0) {
    tid_ = 0;
    errno = rc;
    return -1;
  }
  return 0;
}

bool EventDispatcher::Running() const {
  return tid_ != 0 && !stop_.load(std::memory_order_acquire);
}

void* EventDispatcher::RunThis(void* arg) {
  static_cast<EventDispatcher*>(arg)->Run();
  return nullptr;
}

void EventDispatcher::Run() {
  epoll_event events[64];
  while (!stop_.load(std::memory_order_acquire)) {
    const int n = epoll_wait(epfd_, events, 64, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "weft net: epoll_wait(%d) failed: %s\n", epfd_, strerror(errno));
      break;
    }
    if (n == 0) {
      // Nothing ready: park the fiber (not the worker) until the epoll fd is
      // readable. Level-triggered on the epoll fd, so events that arrive
      // between the poll above and the wait are not missed.
      if (bthread_fd_wait(epfd_, EPOLLIN) != 0 && errno != EINTR && errno != EAGAIN) {
        // A transient failure (the runtime's poller could not get an fd:
        // EMFILE) must not end the dispatcher: poll again shortly.
        WEFT_NET_WARN("waiting on epoll fd %d failed: %s; retrying", epfd_, strerror(errno));
        bthread_usleep(1000);
      }
      continue;
    }
    nevents_.fetch_add(n, std::memory_order_relaxed);
    // Stop() may have woken us; the check at the loop head sees its store
    // (the flag is set before the wake-up fd is added).
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == kWakeupId) continue;
      if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        Socket::StartInputEvent(events[i].data.u64, events[i].events, consumer_thread_attr_);
      }
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == kWakeupId) continue;
      if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
        Socket::HandleEpollOut(events[i].data.u64);
      }
    }
  }
}

void EventDispatcher::Stop() {
  if (stop_.exchange(true, std::memory_order_acq_rel)) return;
  if (epfd_ >= 0 && wakeup_fds_[1] >= 0) {
    // An empty pipe's write end is always writable: the epoll fd becomes
    // readable and the fiber wakes and sees stop_.
    epoll_event evt{};
    evt.events = EPOLLOUT;
    evt.data.u64 = kWakeupId;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, wakeup_fds_[1], &evt);
  }
}

void EventDispatcher::Join() {
  if (tid_ != 0) {
    bthread_join(tid_, nullptr);
    tid_ = 0;
  }
}

int EventDispatcher::AddConsumer(SocketId socket_id, int fd) {
  if (epfd_ < 0) {
    errno = EINVAL;
    return -1;
  }
  epoll_event evt{};
  evt.events = EPOLLIN | EPOLLET;
  evt.data.u64 = socket_id;
  return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &evt);
}

int EventDispatcher::RemoveConsumer(int fd) {
  if (fd < 0) {
    errno = EINVAL;
    return -1;
  }
  return epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

int EventDispatcher::AddEpollOut(SocketId socket_id, int fd, bool pollin) {
  if (epfd_ < 0) {
    errno = EINVAL;
    return -1;
  }
  epoll_event evt{};
  evt.data.u64 = socket_id;
  evt.events = EPOLLOUT | EPOLLET;
  if (pollin) {
    evt.events |= EPOLLIN;
    // ENOENT when the consumer was already removed.
    return epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &evt);
  }
  return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &evt);
}

int EventDispatcher::RemoveEpollOut(SocketId socket_id, int fd, bool pollin) {
  if (pollin) {
    epoll_event evt{};
    evt.data.u64 = socket_id;
    evt.events = EPOLLIN | EPOLLET;
    return epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &evt);
  }
  return epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

// ---- the global dispatchers ----

namespace {
EventDispatcher* g_edisp = nullptr;
int g_edisp_num = 0;
std::once_flag g_edisp_once;

// At exit the dispatchers are only told to stop, not joined: the process is
// going away and nothing they use is destroyed (everything is leaked on
// purpose), while joining from an exit handler would wait on workers that
// may be busy with fibers that never end.
void StopGlobalDispatchers() {
  for (int i = 0; i < g_edisp_num; ++i) g_edisp[i].Stop();
}

void InitializeGlobalDispatchers() {
  g_edisp_num = FLAGS_weft_event_dispatcher_num > 0 ? FLAGS_weft_event_dispatcher_num : 1;
  // Leaked on purpose: sockets may be recycled (and call RemoveConsumer)
  // from threads still running during exit.
  g_edisp = new EventDispatcher[g_edisp_num];
  for (int i = 0; i < g_edisp_num; ++i) {
    if (g_edisp[i].Start(nullptr) != 0) {
      fprintf(stderr, "weft net: fail to start event dispatcher %d: %s\n", i, strerror(errno));
      abort();
    }
  }
  atexit(StopGlobalDispatchers);
}

// Spreads consecutive fds over dispatchers (a multiplicative hash).
uint32_t mix_fd(int fd) {
  uint32_t h = static_cast<uint32_t>(fd) * 0x9E3779B1u;
  return h ^ (h >> 16);
}
}  // namespace

EventDispatcher& GetGlobalEventDispatcher(int fd) {
  std::call_once(g_edisp_once, InitializeGlobalDispatchers);
  if (g_edisp_num == 1) return g_edisp[0];
  return g_edisp[mix_fd(fd) % static_cast<uint32_t>(g_edisp_num)];
}

}  // namespace weft
