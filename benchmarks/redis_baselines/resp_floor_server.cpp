// resp_floor_server: the ceiling for the Redis rows of RESULTS.md. One
// thread, one epoll set, no framework and no locks: it answers PING, SET,
// GET and CONFIG GET (what `redis-benchmark -t ping,set,get` sends) from a
// plain hash map, with one read per readiness event and one write per read,
// as redis-server does. By default it never sleeps: epoll_wait is called
// with a zero timeout in a loop, so a client's write never has to wake it.
// That is the cheapest a server can be for the client sharing the machine,
// so against the same redis-benchmark its rate is the most any server could
// reach; where that is below a target, the client, not the server, decides.
//
//   resp_floor_server [--port N] [--block]   # 0 picks a free port; prints
//                                            # "listening on 127.0.0.1:PORT"
//
// --block sleeps in epoll_wait instead (redis-server's way of waiting).
// SIGINT / SIGTERM end it with status 0. Not a Redis: no expiry, no other
// commands (-ERR unknown command), no persistence.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../baselines_common/epoll_baseline.h"

namespace {

// Bytes a connection may hold without a complete command before it is
// closed: the floor only has to serve redis-benchmark, whose commands are
// tiny, but a stray client must not grow it without bound.
constexpr size_t kMaxPendingBytes = 1 << 20;
// Replies held for a client that does not read before it is closed.
constexpr size_t kMaxUnwrittenBytes = 64 << 20;

struct Connection {
  int fd = -1;
  std::string in;         // bytes read, not yet a complete command
  std::string out;        // replies the kernel has not taken yet
  bool want_out = false;  // registered for EPOLLOUT while `out` is not empty
};

enum class Cut { kCommand, kIncomplete, kBad };

// Reads a decimal line "123\r\n" at in[*pos]; advances past it.
Cut read_number_line(std::string_view in, size_t* pos, long* value) {
  const size_t eol = in.find("\r\n", *pos);
  if (eol == std::string_view::npos) return in.size() - *pos > 32 ? Cut::kBad : Cut::kIncomplete;
  long v = 0;
  if (eol == *pos || eol - *pos > 18) return Cut::kBad;
  for (size_t i = *pos; i < eol; ++i) {
    if (in[i] < '0' || in[i] > '9') return Cut::kBad;
    v = v * 10 + (in[i] - '0');
  }
  *value = v;
  *pos = eol + 2;
  return Cut::kCommand;
}

// Cuts one command (an array of bulk strings, or an inline line) from
// in[*pos]. On kCommand, `args` views into `in` and *pos is past it.
Cut cut_command(std::string_view in, size_t* pos, std::vector<std::string_view>* args) {
  args->clear();
  size_t p = *pos;
  if (p >= in.size()) return Cut::kIncomplete;
  if (in[p] != '*') {  // inline: words up to the end of the line
    const size_t eol = in.find('\n', p);
    if (eol == std::string_view::npos) return Cut::kIncomplete;
    std::string_view line = in.substr(p, eol - p);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && line[i] == ' ') ++i;
      const size_t start = i;
      while (i < line.size() && line[i] != ' ') ++i;
      if (i > start) args->push_back(line.substr(start, i - start));
    }
    *pos = eol + 1;
    return Cut::kCommand;
  }
  ++p;
  long count = 0;
  Cut c = read_number_line(in, &p, &count);
  if (c != Cut::kCommand) return c;
  if (count > 1024) return Cut::kBad;
  for (long i = 0; i < count; ++i) {
    if (p >= in.size()) return Cut::kIncomplete;
    if (in[p] != '$') return Cut::kBad;
    ++p;
    long len = 0;
    c = read_number_line(in, &p, &len);
    if (c != Cut::kCommand) return c;
    if (static_cast<size_t>(len) > kMaxPendingBytes) return Cut::kBad;
    if (in.size() - p < static_cast<size_t>(len) + 2) return Cut::kIncomplete;
    args->push_back(in.substr(p, static_cast<size_t>(len)));
    p += static_cast<size_t>(len) + 2;
  }
  *pos = p;
  return Cut::kCommand;
}

bool name_is(std::string_view arg, const char* upper) {
  const size_t n = strlen(upper);
  if (arg.size() != n) return false;
  for (size_t i = 0; i < n; ++i) {
    const char ch = arg[i] >= 'a' && arg[i] <= 'z' ? static_cast<char>(arg[i] - 32) : arg[i];
    if (ch != upper[i]) return false;
  }
  return true;
}

void append_bulk(std::string* out, std::string_view value) {
  out->push_back('$');
  out->append(std::to_string(value.size()));
  out->append("\r\n");
  out->append(value);
  out->append("\r\n");
}

using Store = std::unordered_map<std::string, std::string>;

void answer(const std::vector<std::string_view>& args, Store* store, std::string* key,
            std::string* out) {
  if (args.empty()) return;  // an empty inline line: redis-server ignores it too
  if (name_is(args[0], "PING")) {
    if (args.size() == 1) {
      out->append("+PONG\r\n");
    } else {
      append_bulk(out, args[1]);
    }
  } else if (name_is(args[0], "SET") && args.size() >= 3) {
    key->assign(args[1]);
    (*store)[*key].assign(args[2]);
    out->append("+OK\r\n");
  } else if (name_is(args[0], "GET") && args.size() == 2) {
    key->assign(args[1]);
    const auto it = store->find(*key);
    if (it == store->end()) {
      out->append("$-1\r\n");
    } else {
      append_bulk(out, it->second);
    }
  } else if (name_is(args[0], "CONFIG") && args.size() == 3) {
    // redis-benchmark asks for `save` and `appendonly` at start.
    out->append("*2\r\n");
    append_bulk(out, args[2]);
    append_bulk(out, name_is(args[2], "APPENDONLY") ? "no" : "");
  } else {
    out->append("-ERR unknown command\r\n");
  }
}

// One read (level-triggered: what it leaves raises the next event), every
// complete command answered, the replies in one write. False: close.
bool on_readable(Connection* c, Store* store, std::string* key,
                 std::vector<std::string_view>* args) {
  char buf[16 * 1024];
  const ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
  if (n == 0) return false;
  if (n < 0) return errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK;
  c->in.append(buf, static_cast<size_t>(n));
  size_t pos = 0;
  for (;;) {
    const Cut cut = cut_command(c->in, &pos, args);
    if (cut == Cut::kBad) return false;
    if (cut == Cut::kIncomplete) break;
    answer(*args, store, key, &c->out);
    // Checked per command: one 16 KiB read of tiny GETs of a big value can
    // ask for gigabytes of replies.
    if (c->out.size() > kMaxUnwrittenBytes) return false;
  }
  c->in.erase(0, pos);
  if (c->in.size() > kMaxPendingBytes) return false;
  return epoll_baseline::send_pending(c->fd, &c->out) && c->out.size() <= kMaxUnwrittenBytes;
}

bool parse_args(int argc, char** argv, int* port, bool* block) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--block") {
      *block = true;
      continue;
    }
    std::string value;
    if (arg == "--port" && i + 1 < argc) {
      value = argv[++i];
    } else if (arg.rfind("--port=", 0) == 0) {
      value = arg.substr(7);
    } else {
      return false;
    }
    char* end = nullptr;
    const long v = strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || v < 0 || v > 65535) return false;
    *port = static_cast<int>(v);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 6379;
  bool block = false;
  if (!parse_args(argc, argv, &port, &block)) {
    fprintf(stderr, "usage: resp_floor_server [--port N] [--block]\n");
    return 2;
  }
  epoll_baseline::Loop loop;
  if (!epoll_baseline::open_loop(port, "resp_floor_server", &loop)) return 1;
  // Everything is level-triggered; connections are found in `conns` (one
  // thread: nothing else touches it).
  std::unordered_map<int, std::unique_ptr<Connection>> conns;
  Store store;
  std::string key;
  std::vector<std::string_view> args;
  epoll_event events[256];
  const int timeout_ms = block ? -1 : 0;
  for (;;) {
    const int n = epoll_baseline::next_events(loop, events, 256, timeout_ms);
    if (n < 0) return 1;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == loop.signals) return 0;  // SIGINT / SIGTERM
      if (events[i].data.fd == loop.listener) {
        const int cfd = epoll_baseline::accept_connection(loop.listener);
        if (cfd < 0) continue;  // level-triggered: the next event retries
        auto c = std::make_unique<Connection>();
        c->fd = cfd;
        epoll_baseline::watch(loop, cfd, EPOLLIN);
        conns.emplace(cfd, std::move(c));
        continue;
      }
      const auto it = conns.find(events[i].data.fd);
      if (it == conns.end()) continue;
      Connection* c = it->second.get();
      bool ok = true;
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ok = on_readable(c, &store, &key, &args);
      }
      if (ok && (events[i].events & EPOLLOUT)) ok = epoll_baseline::send_pending(c->fd, &c->out);
      if (ok && c->want_out == c->out.empty()) {
        // Replies the kernel did not take: hear when it has room (and stop
        // hearing it once they are gone, or a level-triggered EPOLLOUT spins).
        c->want_out = !c->out.empty();
        epoll_baseline::watch(loop, c->fd, EPOLLIN | (c->want_out ? EPOLLOUT : 0u), true);
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
