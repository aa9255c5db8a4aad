// epoll_echo_server: the floor for weft-echo. One thread, one epoll set,
// edge-triggered, non-blocking sockets, no framework: per readiness event it
// reads until EAGAIN, answers every complete weft_std frame of what it read
// with a single write, and keeps any partial frame for the next read. Any
// weft RPC stack does at least this work per message, so its QPS is the
// ceiling weft is measured against.
//
//   epoll_echo_server [--port N]     # 0 picks a free port; prints
//                                    # "listening on 127.0.0.1:PORT"
//
// SIGINT / SIGTERM end it with status 0.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <unordered_map>

#include "weft_std_frame.h"

namespace {

struct Connection {
  int fd = -1;
  std::string in;   // bytes read, not yet cut into frames
  std::string out;  // responses not yet accepted by the kernel
};

// Writes as much of c->out as the kernel takes. False: the peer is gone.
// What stays is sent on the next EPOLLOUT (the fd is registered for it from
// the start, so with edge triggering we hear when space frees up).
bool flush(Connection* c) {
  size_t done = 0;
  while (done < c->out.size()) {
    const ssize_t n = send(c->fd, c->out.data() + done, c->out.size() - done, MSG_NOSIGNAL);
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
  c->out.erase(0, done);
  return true;
}

// Edge-triggered: drain the socket entirely, or no further event comes.
// False: close the connection (EOF, error or a bad frame).
bool on_readable(Connection* c) {
  char buf[64 * 1024];
  bool eof = false;
  for (;;) {
    const ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
    if (n > 0) {
      c->in.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      eof = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    return false;
  }
  // Every complete frame of this read in one write.
  const long used = echo_baseline::answer_frames(c->in.data(), c->in.size(), &c->out);
  if (used < 0) return false;
  c->in.erase(0, static_cast<size_t>(used));
  if (!flush(c)) return false;
  return !eof;
}

int listen_on(int port) {
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

}  // namespace

int main(int argc, char** argv) {
  int port = 8000;
  int threads = 1;  // accepted for a uniform command line; always one thread
  if (!echo_baseline::parse_int_flags(argc, argv, &port, &threads)) {
    fprintf(stderr, "usage: epoll_echo_server [--port N]\n");
    return 2;
  }
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  const int sfd = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
  const int lfd = listen_on(port);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (sfd < 0 || lfd < 0 || ep < 0) {
    perror("epoll_echo_server");
    return 1;
  }
  sockaddr_in bound{};
  socklen_t len = sizeof(bound);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&bound), &len);
  // Every registration carries its fd (never a pointer): the listener and
  // the signalfd are level-triggered, connections edge-triggered and found
  // in `conns` (one thread: nothing else touches it).
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  ev.data.fd = sfd;
  epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
  printf("listening on 127.0.0.1:%d\n", ntohs(bound.sin_port));
  fflush(stdout);

  std::unordered_map<int, std::unique_ptr<Connection>> conns;
  epoll_event events[256];
  for (;;) {
    const int n = epoll_wait(ep, events, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      perror("epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == sfd) return 0;  // SIGINT / SIGTERM
      if (events[i].data.fd == lfd) {
        for (;;) {
          const int cfd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) break;  // EAGAIN (drained), or EMFILE and friends: retry next event
          // Small frames answered at once: Nagle would hold them for an ACK.
          const int on = 1;
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
          auto c = std::make_unique<Connection>();
          c->fd = cfd;
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
          cev.data.fd = cfd;
          epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
          conns.emplace(cfd, std::move(c));
        }
        continue;
      }
      const auto it = conns.find(events[i].data.fd);
      if (it == conns.end()) continue;
      Connection* c = it->second.get();
      bool ok = true;
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ok = on_readable(c);
      if (ok && (events[i].events & EPOLLOUT) && !c->out.empty()) ok = flush(c);
      if (!ok) {
        // An fd appears at most once per epoll_wait result, so no later
        // event of this batch names this one, even if accept reuses it.
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, nullptr);
        close(c->fd);
        conns.erase(c->fd);
      }
    }
  }
}
