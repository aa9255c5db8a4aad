#include "weft/net/event_dispatcher.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <sched.h>

#include <mutex>
#include <system_error>

#include <gflags/gflags.h>

#include "net_log.h"
#include "base/compiler.h"
#include "base/time_util.h"
#include "sched/service_fiber.h"
#include "sched/worker_hint.h"
#include "weft/net/socket.h"

DEFINE_int32(weft_event_dispatcher_num, 1,
             "Number of epoll dispatchers; an fd is served by one chosen by hashing it");
DEFINE_string(weft_event_dispatcher_mode, "fiber",
              "How a dispatcher waits for events: 'fiber' (its fiber parks on the epoll fd "
              "through the runtime's poller), 'worker' (it blocks its worker in epoll_wait "
              "while that worker has nothing else ready, and parks like 'fiber' otherwise), "
              "'pthread' (a dedicated pthread blocks in epoll_wait and starts reading fibers "
              "remotely). Read when the global dispatchers start");
DEFINE_int32(weft_event_dispatcher_block_us, 1000,
             "'worker' mode: longest epoll_wait that blocks a worker; after an empty one the "
             "dispatcher parks its fiber (so an idle runtime holds no worker)");

DEFINE_int32(weft_event_dispatcher_spin_us, 100,
             "'fiber' mode: after its last event a dispatcher keeps polling its epoll fd (without "
             "a system call's sleep, yielding to every fiber ready on its worker) for this long "
             "before it parks; 0 parks at once. Bounded, so an idle runtime still uses no CPU");

namespace weft {

namespace {
// epoll data of the Stop() wake-up fd: no socket has this id.
constexpr SocketId kWakeupId = INVALID_SOCKET_ID;
constexpr int kMaxEvents = 64;
}  // namespace

bool ParseDispatchMode(const char* name, DispatchMode* mode) {
  if (strcmp(name, "fiber") == 0) {
    *mode = DispatchMode::kFiber;
  } else if (strcmp(name, "worker") == 0) {
    *mode = DispatchMode::kWorker;
  } else if (strcmp(name, "pthread") == 0) {
    *mode = DispatchMode::kPthread;
  } else {
    return false;
  }
  return true;
}

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
  return Start(consumer_thread_attr, DispatchMode::kFiber);
}

int EventDispatcher::Start(const bthread_attr_t* consumer_thread_attr, DispatchMode mode) {
  if (epfd_ < 0 || wakeup_fds_[1] < 0) {
    errno = EINVAL;
    return -1;
  }
  if (tid_ != 0 || thread_.joinable()) {
    errno = EBUSY;
    return -1;
  }
  // Set before the fiber (or pthread) starts, which reads them without
  // synchronization beyond the start itself.
  consumer_thread_attr_ = consumer_thread_attr != nullptr ? *consumer_thread_attr : BTHREAD_ATTR_NORMAL;
  mode_ = mode;
  if (mode == DispatchMode::kPthread) {
    try {
      thread_ = std::thread([this] { RunInPthread(); });
    } catch (const std::system_error& e) {
      errno = e.code().value();
      return -1;
    }
    return 0;
  }
  // A service fiber: --weft_max_fibers does not refuse it (the process
  // would have no I/O).
  bthread_attr_t attr = BTHREAD_ATTR_NORMAL;
  attr.flags |= sched::kServiceFiber;
  const int rc = bthread_start_background(&tid_, &attr, RunThis, this);
  if (rc != 0) {
    tid_ = 0;
    errno = rc;
    return -1;
  }
  return 0;
}

bool EventDispatcher::Running() const {
  return (tid_ != 0 || thread_.joinable()) && !stop_.load(std::memory_order_acquire);
}

void* EventDispatcher::RunThis(void* arg) {
  static_cast<EventDispatcher*>(arg)->Run();
  return nullptr;
}

void EventDispatcher::ParkOnEpollFd() {
  // Park the fiber (not the worker) until the epoll fd is readable.
  // Level-triggered on the epoll fd, so events that arrive between the
  // caller's poll and the wait are not missed.
  if (bthread_fd_wait(epfd_, EPOLLIN) != 0 && errno != EINTR && errno != EAGAIN) {
    // A transient failure (the runtime's poller could not get an fd:
    // EMFILE) must not end the dispatcher: poll again shortly.
    WEFT_NET_WARN("waiting on epoll fd %d failed: %s; retrying", epfd_, strerror(errno));
    bthread_usleep(1000);
  }
}

void EventDispatcher::Run() {
  epoll_event events[kMaxEvents];
  const int block_ms = FLAGS_weft_event_dispatcher_block_us > 0
                           ? (FLAGS_weft_event_dispatcher_block_us + 999) / 1000
                           : 0;
  // kWorker: whether the last blocking wait found nothing. Then the
  // traffic has stopped and the fiber parks instead, so an idle runtime
  // holds no worker; the next burst brings it back to blocking.
  bool idle = false;
  // kFiber: how long to keep polling after an event (Spin), and when the
  // last one came.
  const int64_t spin_ns = static_cast<int64_t>(FLAGS_weft_event_dispatcher_spin_us) * 1000;
  int64_t last_event_ns = base::monotonic_ns();
  while (!stop_.load(std::memory_order_acquire)) {
    int n = epoll_wait(epfd_, events, kMaxEvents, 0);
    if (n == 0 && mode_ == DispatchMode::kWorker && !idle && block_ms > 0 &&
        sched::worker_may_block()) {
      // Nothing else is ready on this worker and another worker is idle or
      // searching (worker_may_block): waiting here costs one syscall where
      // parking costs the poller's epoll_wait, a butex wake (and a futex
      // wake of a parked worker), two polls and a re-arm. Fibers woken on
      // this worker cannot appear meanwhile (it runs nothing else); fibers
      // made ready elsewhere go to the idle worker. The timeout bounds the
      // wait when that worker got busy in between.
      n = epoll_wait(epfd_, events, kMaxEvents, block_ms);
      if (n == 0) idle = true;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "weft net: epoll_wait(%d) failed: %s\n", epfd_, strerror(errno));
      break;
    }
    if (n == 0) {
      if (mode_ == DispatchMode::kFiber && Spin(spin_ns, last_event_ns)) continue;
      ParkOnEpollFd();
      idle = false;
      last_event_ns = base::monotonic_ns();  // woken by an event: a new burst
      continue;
    }
    idle = false;
    if (spin_ns > 0) last_event_ns = base::monotonic_ns();
    Dispatch(events, n);
    // The readers Dispatch queued run before the next epoll_wait: the
    // dispatcher resumes from the run-next slot ahead of them, and without
    // this a steady stream of events on one worker would keep starting
    // readers (thousands alive at once) faster than they run.
    sched::yield_quietly();
  }
}

bool EventDispatcher::Spin(int64_t spin_ns, int64_t last_event_ns) {
  // Polling instead of parking saves, per event, what a parked dispatcher
  // pays: the runtime poller's epoll_wait and re-arm, a remote wake of this
  // fiber and usually a futex wake of a parked worker (~50-100 us of
  // cross-CPU round trip on a small VM). The price is this worker's CPU for
  // at most spin_ns after the last event, so an idle runtime still parks.
  if (spin_ns <= 0 || base::monotonic_ns() - last_event_ns > spin_ns) return false;
  if (sched::worker_has_other_ready()) {
    // Fibers ready here (readers this dispatcher started, fibers they
    // woke) run first; the dispatcher goes behind them without waking
    // another worker for itself.
    sched::yield_quietly();
  } else if (sched::cpus_scarce()) {
    // The peer we wait for (another process on this CPU, or another
    // worker of ours) may need this CPU: hand it over between polls.
    sched_yield();
  } else {
    for (int i = 0; i < 64; ++i) base::cpu_relax();
  }
  return true;
}

void EventDispatcher::RunInPthread() {
  epoll_event events[kMaxEvents];
  while (!stop_.load(std::memory_order_acquire)) {
    // Not a worker: blocking here holds no fiber back. Reading fibers are
    // started remotely (the remote queue, waking a parked worker).
    const int n = epoll_wait(epfd_, events, kMaxEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "weft net: epoll_wait(%d) failed: %s\n", epfd_, strerror(errno));
      break;
    }
    Dispatch(events, n);
  }
}

void EventDispatcher::Dispatch(const epoll_event* events, int n) {
  nevents_.fetch_add(n, std::memory_order_relaxed);
  // Stop() may have woken us; the check at the loop head sees its store
  // (the flag is set before the wake-up fd is added).
  // One input event: its reader runs here at once, with no wake-up (the
  // round-trip path). Several: all but the last are queued and one flush
  // wakes idle workers to take them, so many connections' reads spread
  // over the workers instead of queueing behind this one; the last runs
  // here.
  int last_input = -1;
  for (int i = 0; i < n; ++i) {
    if (events[i].data.u64 != kWakeupId && (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))) {
      last_input = i;
    }
  }
  bool queued = false;
  for (int i = 0; i < last_input; ++i) {
    if (events[i].data.u64 == kWakeupId) continue;
    if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
      Socket::StartInputEvent(events[i].data.u64, events[i].events, consumer_thread_attr_,
                              /*urgent=*/false);
      queued = true;
    }
  }
  if (queued) bthread_flush();
  if (last_input >= 0) {
    Socket::StartInputEvent(events[last_input].data.u64, events[last_input].events,
                            consumer_thread_attr_);
  }
  for (int i = 0; i < n; ++i) {
    if (events[i].data.u64 == kWakeupId) continue;
    if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
      Socket::HandleEpollOut(events[i].data.u64);
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
  if (thread_.joinable()) thread_.join();
}

int EventDispatcher::AddConsumer(SocketId socket_id, int fd) {
  if (epfd_ < 0) {
    errno = EINVAL;
    return -1;
  }
  epoll_event evt{};
  evt.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
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
    evt.events |= EPOLLIN | EPOLLRDHUP;
    // ENOENT when the consumer was already removed.
    return epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &evt);
  }
  return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &evt);
}

int EventDispatcher::RemoveEpollOut(SocketId socket_id, int fd, bool pollin) {
  if (pollin) {
    epoll_event evt{};
    evt.data.u64 = socket_id;
    evt.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    return epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &evt);
  }
  return epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
}

// ---- the global dispatchers ----

namespace {
EventDispatcher* g_edisp = nullptr;
int g_edisp_num = 0;
std::once_flag g_edisp_once;

// At exit the dispatching fibers are only told to stop, not joined: the
// process is going away and nothing they use is destroyed (everything is
// leaked on purpose), while joining a fiber from an exit handler would wait
// on workers that may be busy with fibers that never end. A dispatching
// pthread is joined: it waits on nothing but its epoll fd, which Stop makes
// readable, and starting or waking fibers never blocks it.
void StopGlobalDispatchers() {
  for (int i = 0; i < g_edisp_num; ++i) g_edisp[i].Stop();
  for (int i = 0; i < g_edisp_num; ++i) {
    if (g_edisp[i].mode() == DispatchMode::kPthread) g_edisp[i].Join();
  }
}

void InitializeGlobalDispatchers() {
  g_edisp_num = FLAGS_weft_event_dispatcher_num > 0 ? FLAGS_weft_event_dispatcher_num : 1;
  // Leaked on purpose: sockets may be recycled (and call RemoveConsumer)
  // from threads still running during exit.
  g_edisp = new EventDispatcher[g_edisp_num];
  DispatchMode mode = DispatchMode::kFiber;
  if (!ParseDispatchMode(FLAGS_weft_event_dispatcher_mode.c_str(), &mode)) {
    fprintf(stderr, "weft net: unknown --weft_event_dispatcher_mode=%s; using fiber\n",
            FLAGS_weft_event_dispatcher_mode.c_str());
  }
  for (int i = 0; i < g_edisp_num; ++i) {
    if (g_edisp[i].Start(nullptr, mode) != 0) {
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
