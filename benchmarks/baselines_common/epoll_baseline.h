// The plumbing the one-thread epoll baselines share (the echo floor and the
// RESP floor): a listener on 127.0.0.1, SIGINT / SIGTERM as a signalfd, one
// epoll set holding both, and a send loop for replies the kernel may take
// only part of. Everything else (framing, triggering, reads) is each
// baseline's own. No weft code: the baselines share nothing with what they
// measure.
#ifndef WEFT_BENCHMARKS_BASELINES_COMMON_EPOLL_BASELINE_H_
#define WEFT_BENCHMARKS_BASELINES_COMMON_EPOLL_BASELINE_H_

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace epoll_baseline {

// The three fds of a baseline's loop. Every registration carries its fd
// (never a pointer); the listener and the signalfd are level-triggered.
struct Loop {
  int ep = -1;
  int listener = -1;
  int signals = -1;
};

// Registers fd with `events` (EPOLL_CTL_ADD, or EPOLL_CTL_MOD when
// `change`), carrying the fd itself as the event's data.
inline void watch(const Loop& loop, int fd, uint32_t events, bool change = false) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  epoll_ctl(loop.ep, change ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
}

inline int listen_on_loopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 1024) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Blocks SIGINT / SIGTERM into a signalfd, listens on 127.0.0.1:port (0: a
// free one), puts both in a new epoll set and prints "listening on
// 127.0.0.1:PORT" (flushed: the scripts wait for it). False (after perror
// with `name`) when any step fails.
inline bool open_loop(int port, const char* name, Loop* loop) {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  loop->signals = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
  loop->listener = listen_on_loopback(port);
  loop->ep = epoll_create1(EPOLL_CLOEXEC);
  if (loop->signals < 0 || loop->listener < 0 || loop->ep < 0) {
    perror(name);
    return false;
  }
  sockaddr_in bound{};
  socklen_t len = sizeof(bound);
  getsockname(loop->listener, reinterpret_cast<sockaddr*>(&bound), &len);
  watch(*loop, loop->listener, EPOLLIN);
  watch(*loop, loop->signals, EPOLLIN);
  printf("listening on 127.0.0.1:%d\n", ntohs(bound.sin_port));
  fflush(stdout);
  return true;
}

// One accepted connection, non-blocking, with TCP_NODELAY (small replies
// are answered at once: Nagle would hold them for an ACK). -1: none
// (EAGAIN, or EMFILE and friends: a later event retries).
inline int accept_connection(int listener) {
  const int fd = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return -1;
  const int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  return fd;
}

// The next batch of ready events, EINTR retried. -1 (after perror) on any
// other failure: the loop gives up.
inline int next_events(const Loop& loop, epoll_event* events, int max, int timeout_ms) {
  for (;;) {
    const int n = epoll_wait(loop.ep, events, max, timeout_ms);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    perror("epoll_wait");
    return -1;
  }
}

// Sends as much of *out as the kernel takes and drops what it took. False:
// the peer is gone. What stays waits for the fd's next EPOLLOUT.
inline bool send_pending(int fd, std::string* out) {
  size_t done = 0;
  while (done < out->size()) {
    const ssize_t n = send(fd, out->data() + done, out->size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      return false;
    }
  }
  out->erase(0, done);
  return true;
}

// Takes fd out of the epoll set and closes it. An fd appears at most once
// per epoll_wait result, so no later event of the same batch names it, even
// if accept reuses the number.
inline void drop_connection(const Loop& loop, int fd) {
  epoll_ctl(loop.ep, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
}

}  // namespace epoll_baseline

#endif  // WEFT_BENCHMARKS_BASELINES_COMMON_EPOLL_BASELINE_H_
