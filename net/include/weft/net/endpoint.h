// weft/net/endpoint.h: an IPv4 or IPv6 address and port.
#ifndef WEFT_NET_ENDPOINT_H_
#define WEFT_NET_ENDPOINT_H_

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include <string>
#include <string_view>

namespace weft {

class EndPoint {
 public:
  EndPoint() = default;
  // From a sockaddr_in or sockaddr_in6 (other families give an unset one).
  EndPoint(const sockaddr* addr, socklen_t len);

  // "127.0.0.1:8080" or "[::1]:8080". False (and *ep untouched) if malformed.
  static bool parse(std::string_view text, EndPoint* ep);
  // 127.0.0.1:port / [::1]:port.
  static EndPoint loopback(uint16_t port);
  static EndPoint loopback6(uint16_t port);

  bool is_set() const { return len_ != 0; }
  int family() const { return addr_.ss_family; }
  uint16_t port() const;
  const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&addr_); }
  socklen_t addr_len() const { return len_; }
  std::string to_string() const;

  bool operator==(const EndPoint& o) const;
  bool operator!=(const EndPoint& o) const { return !(*this == o); }

 private:
  sockaddr_storage addr_{};
  socklen_t len_ = 0;
};

// A listening TCP socket bound to `ep` (SO_REUSEADDR, non-blocking,
// close-on-exec). Returns the fd or -1 with errno.
int tcp_listen(const EndPoint& ep, int backlog = 1024);
// The local address of a socket fd; unset EndPoint on failure.
EndPoint get_local_side(int fd);
EndPoint get_remote_side(int fd);

}  // namespace weft

#endif  // WEFT_NET_ENDPOINT_H_
