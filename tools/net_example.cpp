// net_example.cpp: an echo server and a client over loopback. The Acceptor
// serves connections; the client Socket connects on its first Write; 64
// fibers share the one client connection, and each side reads in a fiber
// that the event dispatcher starts when data arrives.
#include <weft/bthread.h>
#include <weft/countdown_event.h>
#include <weft/errno.h>
#include <weft/net/acceptor.h>
#include <weft/net/socket.h>

#include <cerrno>
#include <cstdio>
#include <string>

// Reads what `s` has and hands it to `consume`; returns when nothing more
// arrived meanwhile. At most one such fiber runs per socket at a time.
template <typename Consume>
void read_all(weft::Socket* s, Consume consume) {
  int progress = weft::Socket::PROGRESS_INIT;
  for (;;) {
    const ssize_t n = s->DoRead(64 * 1024);
    if (n > 0) {
      consume(s);
    } else if (n == 0) {
      s->SetFailed(EEOF, "peer closed");      // the fd closes with the last reference
      return;
    } else if (errno == EAGAIN) {
      if (!s->MoreReadEvents(&progress)) return;
    } else if (errno != EINTR) {
      s->SetFailed(errno, "read failed");
      return;
    }
  }
}

// Server side: send every byte back.
void echo(weft::Socket* s) {
  read_all(s, [](weft::Socket* conn) {
    weft::IOBuf out;
    out.append(std::move(conn->read_buf()));  // moves block references, no copy
    conn->Write(&out);
  });
}

// Client side: count the bytes that came back.
constexpr int kWriters = 64;
constexpr int kMessagesEach = 100;
constexpr size_t kMessageSize = 16;
size_t g_received = 0;                        // only the reading fiber touches it
weft::CountdownEvent g_all_back(1);

void collect(weft::Socket* s) {
  read_all(s, [](weft::Socket* conn) {
    g_received += conn->read_buf().size();
    conn->read_buf().clear();
    if (g_received == kWriters * kMessagesEach * kMessageSize) g_all_back.signal();
  });
}

void* writer(void* arg) {
  const weft::SocketId id = reinterpret_cast<weft::SocketId>(arg);
  weft::SocketUniquePtr s;
  if (weft::Socket::Address(id, &s) != 0) return nullptr;   // already failed
  for (int i = 0; i < kMessagesEach; ++i) {
    char msg[kMessageSize + 1];
    snprintf(msg, sizeof(msg), "msg %11d", i);
    weft::IOBuf buf;
    buf.append(msg, kMessageSize);
    if (s->Write(&buf) != 0) {                // wait-free: queued behind the current writer
      perror("write");
      return nullptr;
    }
  }
  return nullptr;
}

int main() {
  weft::Acceptor acceptor(echo);
  const int listen_fd = weft::tcp_listen(weft::EndPoint::loopback(0));
  const weft::EndPoint server = weft::get_local_side(listen_fd);
  if (acceptor.StartAccept(listen_fd, /*idle_timeout_sec=*/0) != 0) return 1;

  weft::SocketOptions opt;
  opt.remote_side = server;                   // no fd: connects on the first Write
  opt.on_edge_triggered_events = collect;
  opt.connect_timeout_ms = 2000;
  weft::SocketId id;
  if (weft::Socket::Create(opt, &id) != 0) return 1;

  bthread_t tids[kWriters];
  for (bthread_t& t : tids) bthread_start_background(&t, nullptr, writer, reinterpret_cast<void*>(id));
  for (bthread_t t : tids) bthread_join(t, nullptr);
  timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 10;
  const bool ok = g_all_back.timed_wait(deadline) == 0;
  std::printf("echoed %zu bytes through %s (%zu connection on the server)\n", g_received,
              server.to_string().c_str(), acceptor.ConnectionCount());

  weft::Socket::SetFailed(id);                // close the client
  acceptor.StopAccept();                      // fails every connection, waits for them
  std::printf("after StopAccept: %zu connections\n", acceptor.ConnectionCount());
  return ok ? 0 : 1;
}
