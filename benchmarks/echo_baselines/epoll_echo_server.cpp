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
#include <errno.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <unordered_map>

#include "../baselines_common/epoll_baseline.h"
#include "weft_std_frame.h"

namespace {

struct Connection {
  int fd = -1;
  std::string in;   // bytes read, not yet cut into frames
  std::string out;  // responses not yet accepted by the kernel
};

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
  if (!epoll_baseline::send_pending(c->fd, &c->out)) return false;
  return !eof;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 8000;
  int threads = 1;  // accepted for a uniform command line; always one thread
  if (!echo_baseline::parse_int_flags(argc, argv, &port, &threads)) {
    fprintf(stderr, "usage: epoll_echo_server [--port N]\n");
    return 2;
  }
  epoll_baseline::Loop loop;
  if (!epoll_baseline::open_loop(port, "epoll_echo_server", &loop)) return 1;
  // The listener and the signalfd are level-triggered, connections
  // edge-triggered and found in `conns` (one thread: nothing else touches
  // it).
  std::unordered_map<int, std::unique_ptr<Connection>> conns;
  epoll_event events[256];
  for (;;) {
    const int n = epoll_baseline::next_events(loop, events, 256, -1);
    if (n < 0) return 1;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == loop.signals) return 0;  // SIGINT / SIGTERM
      if (events[i].data.fd == loop.listener) {
        for (;;) {
          const int cfd = epoll_baseline::accept_connection(loop.listener);
          if (cfd < 0) break;  // drained (or out of fds: the next event retries)
          auto c = std::make_unique<Connection>();
          c->fd = cfd;
          // EPOLLOUT from the start: edge-triggered, it tells when the
          // kernel has room for what send_pending left.
          epoll_baseline::watch(loop, cfd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
          conns.emplace(cfd, std::move(c));
        }
        continue;
      }
      const auto it = conns.find(events[i].data.fd);
      if (it == conns.end()) continue;
      Connection* c = it->second.get();
      bool ok = true;
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ok = on_readable(c);
      if (ok && (events[i].events & EPOLLOUT) && !c->out.empty()) {
        ok = epoll_baseline::send_pending(c->fd, &c->out);
      }
      if (!ok) {
        // A copy: the key must not live in the object erase destroys.
        const int fd = c->fd;
        epoll_baseline::drop_connection(loop, fd);
        conns.erase(fd);
      }
    }
  }
}
