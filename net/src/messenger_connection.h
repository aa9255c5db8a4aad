// Internal: the InputMessenger's per-connection state, kept in the socket's
// kMessenger context slot (created by the first read of the connection,
// deleted when the socket recycles).
#ifndef WEFT_NET_MESSENGER_CONNECTION_H_
#define WEFT_NET_MESSENGER_CONNECTION_H_

#include <stddef.h>
#include <stdint.h>

#include <atomic>

#include "weft/net/socket.h"

namespace weft {
namespace net_internal {

struct MessengerConnection : public SocketContext {
  // Returns m's state, creating it on first use; nullptr when out of
  // memory. Only the reading fiber creates it; others use of_socket.
  static MessengerConnection* get_or_create(Socket* m);
  // m's state, or nullptr before its first read. Any thread.
  static MessengerConnection* of_socket(const Socket* m) {
    return static_cast<MessengerConnection*>(m->context(SocketContextSlot::kMessenger));
  }

  MessengerConnection();
  // Gives the connection's share of the process-wide read-buffer count back.
  ~MessengerConnection() override;

  // The plain fields are touched by the reading fiber only (one at a time
  // per socket: the nevent_ protocol orders consecutive readers).
  size_t avg_msg_size = 0;
  size_t last_msg_size = 0;
  int preferred_index = -1;
  bool verified = false;
  // Bytes of the read buffer counted in the process-wide total.
  size_t read_buf_accounted = 0;

  // Messages in flight + 1 until EOF was seen: the connection closes
  // (gracefully, EEOF) when it drops to 0.
  std::atomic<int> ninprocess{1};
  std::atomic<bool> eof_seen{false};
  // When the partial message began to arrive (coarse CLOCK_MONOTONIC µs),
  // 0 when none; stored by the reading fiber, read by the Acceptor's closer
  // (relaxed: a hint for a timeout).
  std::atomic<int64_t> partial_since_us{0};
  // Messages cut and not yet processed, and the reading fiber's pause: it
  // sets reader_waiting and sleeps on read_butex; a finishing message that
  // sees the flag bumps and wakes the butex (the seq_cst protocol is in
  // input_messenger.cpp, PauseReading).
  std::atomic<int> nmsg_in_flight{0};
  std::atomic<bool> reader_waiting{false};
  std::atomic<int>* read_butex = nullptr;
};

}  // namespace net_internal
}  // namespace weft

#endif  // WEFT_NET_MESSENGER_CONNECTION_H_
