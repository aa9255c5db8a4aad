// bthread_fd_*: fibers wait for fd readiness on a per-fd butex; one poller
// pthread (not a worker) runs epoll_wait and bumps the butex of every ready
// fd. Registrations are EPOLLONESHOT: each wait arms the fd once, with
// EPOLL_CTL_MOD once the fd is known to be registered. BTHREAD_ATTR_PTHREAD
// fibers wait the same way (only plain pthreads use poll(2)).
//
// Per-fd records live in a two-level table and are never freed, so the
// poller may touch the record of an fd that was closed meanwhile.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <mutex>
#include <thread>

#include "base/time_util.h"
#include "sched/fiber_lifecycle.h"
#include "sched/task_meta.h"
#include "wait/butex_internal.h"
#include "weft/bthread.h"

namespace weft::fd {
namespace {

constexpr int kBlockBits = 12;
constexpr int kBlockSize = 1 << kBlockBits;
constexpr int kBlocks = 1 << 12;  // fds up to 16M

struct FdRecord {
  wait::Butex* events = nullptr;      // word bumped by the poller and by close
  std::atomic<int> close_seq{0};      // bumped by bthread_close
  // Whether the fd is (believed to be) in the poller's epoll set, so the
  // next wait re-arms it with one EPOLL_CTL_MOD instead of a failing ADD.
  // Only a hint, hence relaxed: the kernel drops a registration when the
  // file is closed behind our back (plain close()), and bthread_close can
  // race a waiter; arm() falls back from MOD to ADD on ENOENT and from ADD
  // to MOD on EEXIST, so a wrong hint costs one syscall, never a wait.
  std::atomic<bool> registered{false};
};

struct FdBlock {
  FdRecord records[kBlockSize];
};

std::atomic<FdBlock*> g_blocks[kBlocks];
std::mutex g_blocks_mu;

FdRecord* record_of(int fd) {
  if (fd < 0 || fd >= kBlocks * kBlockSize) return nullptr;
  std::atomic<FdBlock*>& slot = g_blocks[fd >> kBlockBits];
  // Acquire pairs with the release store below: a visible block has its
  // butexes.
  FdBlock* block = slot.load(std::memory_order_acquire);
  if (block == nullptr) {
    std::lock_guard<std::mutex> guard(g_blocks_mu);
    block = slot.load(std::memory_order_relaxed);
    if (block == nullptr) {
      block = new FdBlock;
      for (FdRecord& r : block->records) r.events = wait::butex_alloc();
      slot.store(block, std::memory_order_release);
    }
  }
  FdRecord* r = &block->records[fd & (kBlockSize - 1)];
  return r->events != nullptr ? r : nullptr;
}

void wake(FdRecord* r) {
  r->events->value.fetch_add(1, std::memory_order_release);
  wait::butex_wake_some(r->events, INT_MAX, 0);
}

class Poller {
 public:
  static Poller& instance() {
    static Poller* p = new Poller;  // leaked: polls until exit
    return *p;
  }
  // The epoll fd is made on first use, and again on a later call after a
  // failure (EMFILE): a process that ran out of fds at the wrong moment
  // must not lose fd waits for good. -1 with errno while it cannot be made.
  // The poller thread starts with the first valid fd.
  int epfd() {
    int fd = epfd_.load(std::memory_order_acquire);
    if (fd >= 0) return fd;
    std::lock_guard<std::mutex> guard(mu_);
    fd = epfd_.load(std::memory_order_relaxed);
    if (fd >= 0) return fd;
    fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return -1;
    epfd_.store(fd, std::memory_order_release);
    std::thread([this, fd] { run(fd); }).detach();
    return fd;
  }

 private:
  Poller() = default;

  void run(int epfd) {
    prctl(PR_SET_NAME, "weft_fd_poller");
    epoll_event events[64];
    for (;;) {
      const int n = epoll_wait(epfd, events, 64, -1);
      for (int i = 0; i < n; ++i) {
        FdRecord* r = record_of(static_cast<int>(events[i].data.u64));
        if (r != nullptr) wake(r);
      }
    }
  }

  std::mutex mu_;
  std::atomic<int> epfd_{-1};
};

// Arms `fd` once (EPOLLONESHOT) for `events`. 0, or -1 with errno.
int arm(int epfd, int fd, FdRecord* r, unsigned events) {
  epoll_event ev;
  ev.events = events | EPOLLONESHOT;
  ev.data.u64 = static_cast<uint64_t>(fd);
  const bool registered = r->registered.load(std::memory_order_relaxed);
  const int first = registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(epfd, first, fd, &ev) != 0) {
    const int again = registered ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (errno != (registered ? ENOENT : EEXIST) || epoll_ctl(epfd, again, fd, &ev) != 0) {
      return -1;
    }
  }
  r->registered.store(true, std::memory_order_relaxed);
  return 0;
}

void disarm(int epfd, int fd, FdRecord* r) {
  r->registered.store(false, std::memory_order_relaxed);
  epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr);
}

// A plain pthread (not running a fiber): nobody can interrupt it, so it
// simply blocks in poll(2).
int wait_in_pthread(int fd, unsigned events, const timespec* abstime) {
  pollfd p{fd, static_cast<short>(events & 0xffff), 0};
  for (;;) {
    int timeout_ms = -1;
    if (abstime != nullptr) {
      const int64_t left = base::timespec_to_ns(*abstime) - base::realtime_ns();
      if (left <= 0) {
        errno = ETIMEDOUT;
        return -1;
      }
      timeout_ms = static_cast<int>((left + 999999) / 1000000);
    }
    const int rc = poll(&p, 1, timeout_ms);
    if (rc > 0) {
      if (p.revents & POLLNVAL) {
        errno = EBADF;
        return -1;
      }
      return 0;
    }
    if (rc == 0) continue;  // re-check the deadline
    if (errno != EINTR) return -1;
  }
}

// A fiber, on a worker or on its own pthread (BTHREAD_ATTR_PTHREAD): it
// waits on the fd's butex, which the poller bumps on readiness and
// bthread_close bumps on close, so both kinds end the wait the same way on
// bthread_interrupt/bthread_stop (EINTR; the butex's pthread waiters honour
// the fiber's interrupt token) and on bthread_close (EBADF). `self` is the
// calling fiber.
int wait_as_fiber(int fd, unsigned events, const timespec* abstime, sched::TaskMeta* self) {
  FdRecord* r = record_of(fd);
  if (r == nullptr) {
    errno = EBADF;
    return -1;
  }
  const int64_t deadline =
      abstime == nullptr ? base::kNoDeadline : base::realtime_to_monotonic_deadline(*abstime);
  const int close_seq = r->close_seq.load(std::memory_order_acquire);
  // Read the sequence before arming: an event between arming and waiting
  // moves it, and the wait returns at once.
  const int seq = r->events->value.load(std::memory_order_acquire);
  const int epfd = Poller::instance().epfd();
  if (epfd < 0) return -1;
  if (arm(epfd, fd, r, events) != 0) return -1;
  self->wait_fd.store(fd, std::memory_order_relaxed);
  const int rc = wait::butex_wait_until(r->events, seq, deadline);
  const int err = errno;
  self->wait_fd.store(-1, std::memory_order_relaxed);
  if (r->close_seq.load(std::memory_order_acquire) != close_seq) {
    errno = EBADF;
    return -1;
  }
  if (rc == 0 || err == EWOULDBLOCK) return 0;
  // Timed out or interrupted: disarm so a later event does not wake the
  // next waiter of this fd spuriously.
  disarm(epfd, fd, r);
  errno = err;
  return -1;
}

}  // namespace
}  // namespace weft::fd

extern "C" {

int bthread_fd_wait(int fd, unsigned epoll_events) {
  return bthread_fd_timedwait(fd, epoll_events, nullptr);
}

int bthread_fd_timedwait(int fd, unsigned epoll_events, const struct timespec* abstime) {
  if (fd < 0) {
    errno = EINVAL;
    return -1;
  }
  weft::sched::TaskMeta* self = weft::sched::current_fiber();
  if (self != nullptr) return weft::fd::wait_as_fiber(fd, epoll_events, abstime, self);
  return weft::fd::wait_in_pthread(fd, epoll_events, abstime);
}

int bthread_connect(int sockfd, const struct sockaddr* addr, socklen_t addrlen) {
  const int flags = fcntl(sockfd, F_GETFL);
  if (flags < 0) return -1;
  const bool was_blocking = !(flags & O_NONBLOCK);
  if (was_blocking && fcntl(sockfd, F_SETFL, flags | O_NONBLOCK) != 0) return -1;
  int rc = connect(sockfd, addr, addrlen);
  int err = rc == 0 ? 0 : errno;
  if (rc != 0 && err == EINPROGRESS) {
    if (bthread_fd_wait(sockfd, EPOLLOUT) != 0) {
      err = errno;
    } else {
      socklen_t len = sizeof(err);
      if (getsockopt(sockfd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
  }
  if (was_blocking) fcntl(sockfd, F_SETFL, flags);
  if (err != 0) {
    errno = err;
    return -1;
  }
  return 0;
}

int bthread_close(int fd) {
  weft::fd::FdRecord* r = weft::fd::record_of(fd);
  if (r != nullptr) {
    weft::fd::disarm(weft::fd::Poller::instance().epfd(), fd, r);
    r->close_seq.fetch_add(1, std::memory_order_release);
    weft::fd::wake(r);
  }
  return close(fd);
}

}  // extern "C"
