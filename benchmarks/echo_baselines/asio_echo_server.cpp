// asio_echo_server: weft-echo's server rewritten the way a Boost.Asio user
// would write it, as the framework baseline. One io_context run by
// --threads threads; each connection's handlers run on its own strand, so
// one connection is never served by two threads at once while different
// connections are. It speaks weft_std framing (every method echoes its
// payload), so `weft-echo client` drives it unchanged.
//
// Per connection, one read is always outstanding and at most one write: a
// read appends to the input, every complete frame in it is answered into
// `pending_`, and the write in flight (if none, a new one) takes everything
// pending at once. So a pipelining client gets batched answers, as from
// weft's own server and the epoll floor.
//
//   asio_echo_server [--port N] [--threads N]   # port 0 picks one; threads
//                                                # 0 (default): one per CPU
//
// Prints "listening on 127.0.0.1:PORT"; SIGINT / SIGTERM end it with 0.
#include <stdio.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "weft_std_frame.h"

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

  void start() {
    boost::system::error_code ec;
    socket_.set_option(tcp::no_delay(true), ec);
    read();
  }

 private:
  // Runs on this connection's strand (the socket's executor), as do all
  // completion handlers below, so the members need no lock.
  void read() {
    socket_.async_read_some(asio::buffer(buf_), [self = shared_from_this()](
                                                    const boost::system::error_code& ec, size_t n) {
      if (ec) return;  // EOF or error: the last reference drops, the socket closes
      self->in_.append(self->buf_, n);
      const long used =
          echo_baseline::answer_frames(self->in_.data(), self->in_.size(), &self->pending_);
      if (used < 0) return;  // bad frame: close this connection only
      self->in_.erase(0, static_cast<size_t>(used));
      if (!self->writing_ && !self->pending_.empty()) self->write();
      self->read();
    });
  }

  void write() {
    writing_ = true;
    // out_ holds the previous, fully written batch: swapped back and
    // cleared, pending_ keeps its capacity for the next one.
    out_.swap(pending_);
    pending_.clear();
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                        self->writing_ = false;
                        if (ec) return;
                        if (!self->pending_.empty()) self->write();
                      });
  }

  tcp::socket socket_;
  char buf_[64 * 1024];
  std::string in_;       // read, not yet a complete frame
  std::string pending_;  // answered, waiting for the write in flight to end
  std::string out_;      // the write in flight (stable until it completes)
  bool writing_ = false;
};

void accept_loop(asio::io_context& io, tcp::acceptor& acceptor) {
  acceptor.async_accept(asio::make_strand(io),
                        [&io, &acceptor](const boost::system::error_code& ec, tcp::socket s) {
                          if (!ec) std::make_shared<Session>(std::move(s))->start();
                          if (acceptor.is_open()) accept_loop(io, acceptor);
                        });
}

}  // namespace

int main(int argc, char** argv) {
  int port = 8000;
  int threads = 0;
  if (!echo_baseline::parse_int_flags(argc, argv, &port, &threads)) {
    fprintf(stderr, "usage: asio_echo_server [--port N] [--threads N]\n");
    return 2;
  }
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  asio::io_context io(threads);
  tcp::acceptor acceptor(io);
  boost::system::error_code ec;
  const tcp::endpoint ep(asio::ip::address_v4::loopback(), static_cast<unsigned short>(port));
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(1024, ec);
  if (ec) {
    fprintf(stderr, "asio_echo_server: cannot listen on 127.0.0.1:%d: %s\n", port,
            ec.message().c_str());
    return 1;
  }
  asio::signal_set stop(io, SIGINT, SIGTERM);
  stop.async_wait([&io](const boost::system::error_code&, int) { io.stop(); });
  accept_loop(io, acceptor);
  printf("listening on 127.0.0.1:%d\n", acceptor.local_endpoint().port());
  fflush(stdout);
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (std::thread& t : pool) t.join();
  return 0;
}
