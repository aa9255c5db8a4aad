#include "weft/net/endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <charconv>

namespace weft {

EndPoint::EndPoint(const sockaddr* addr, socklen_t len) {
  if (addr == nullptr) return;
  if (addr->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    memcpy(&addr_, addr, sizeof(sockaddr_in));
    len_ = sizeof(sockaddr_in);
  } else if (addr->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    memcpy(&addr_, addr, sizeof(sockaddr_in6));
    len_ = sizeof(sockaddr_in6);
  }
}

bool EndPoint::parse(std::string_view text, EndPoint* ep) {
  std::string host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return false;
    }
    host.assign(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return false;
    host.assign(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) return false;
  EndPoint out;
  sockaddr_in* v4 = reinterpret_cast<sockaddr_in*>(&out.addr_);
  sockaddr_in6* v6 = reinterpret_cast<sockaddr_in6*>(&out.addr_);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    out.len_ = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    out.len_ = sizeof(sockaddr_in6);
  } else {
    return false;
  }
  *ep = out;
  return true;
}

EndPoint EndPoint::loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return EndPoint(reinterpret_cast<const sockaddr*>(&a), sizeof(a));
}

EndPoint EndPoint::loopback6(uint16_t port) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  a.sin6_addr = in6addr_loopback;
  return EndPoint(reinterpret_cast<const sockaddr*>(&a), sizeof(a));
}

uint16_t EndPoint::port() const {
  if (addr_.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&addr_)->sin_port);
  if (addr_.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&addr_)->sin6_port);
  }
  return 0;
}

std::string EndPoint::to_string() const {
  char host[INET6_ADDRSTRLEN] = "?";
  if (addr_.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&addr_)->sin_addr, host, sizeof(host));
    return std::string(host) + ":" + std::to_string(port());
  }
  if (addr_.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&addr_)->sin6_addr, host,
              sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(port());
  }
  return "<unset>";
}

bool EndPoint::operator==(const EndPoint& o) const {
  return len_ == o.len_ && memcmp(&addr_, &o.addr_, len_) == 0;
}

int tcp_listen(const EndPoint& ep, int backlog) {
  if (!ep.is_set()) {
    errno = EINVAL;
    return -1;
  }
  const int fd = socket(ep.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (bind(fd, ep.addr(), ep.addr_len()) != 0 || listen(fd, backlog) != 0) {
    const int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

EndPoint get_local_side(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return EndPoint();
  return EndPoint(reinterpret_cast<const sockaddr*>(&ss), len);
}

EndPoint get_remote_side(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return EndPoint();
  return EndPoint(reinterpret_cast<const sockaddr*>(&ss), len);
}

}  // namespace weft
