// weft_std's frame header (rpc.md "weft_std wire format", version 1):
//
//   offset size field
//   0      4    magic 'W' 'F' 'T' '1'
//   4      4    body_size: bytes after the header (meta + payload)
//   8      8    correlation_id (echoed unchanged in the response)
//   16     2    flags: bit 0 = response; other bits 0 (ignored on receipt)
//   18     2    meta_size: request: the method name (1..255 bytes);
//               response: the error text (0 when error_code is 0)
//   20     4    error_code (signed): 0 in requests (ignored on receipt)
//
// All integers big-endian. Pure functions, no state: any thread.
#ifndef WEFT_NET_SRC_PROTOCOLS_WEFT_STD_WEFT_STD_FORMAT_H_
#define WEFT_NET_SRC_PROTOCOLS_WEFT_STD_WEFT_STD_FORMAT_H_

#include <stddef.h>
#include <stdint.h>

namespace weft::rpc::weft_std {

inline constexpr size_t kHeaderSize = 24;
inline constexpr char kMagic[4] = {'W', 'F', 'T', '1'};
inline constexpr uint16_t kFlagResponse = 1u << 0;
inline constexpr size_t kMaxMethodSize = 255;

struct FrameHeader {
  uint32_t body_size = 0;
  uint64_t correlation_id = 0;
  uint16_t flags = 0;
  uint16_t meta_size = 0;
  int32_t error_code = 0;

  bool is_response() const { return (flags & kFlagResponse) != 0; }
};

namespace detail {
inline void put_be(char* p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}
inline uint64_t get_be(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
}  // namespace detail

// Writes the 24 header bytes (magic included) into out.
inline void EncodeHeader(const FrameHeader& h, char out[kHeaderSize]) {
  for (int i = 0; i < 4; ++i) out[i] = kMagic[i];
  detail::put_be(out + 4, h.body_size, 4);
  detail::put_be(out + 8, h.correlation_id, 8);
  detail::put_be(out + 16, h.flags, 2);
  detail::put_be(out + 18, h.meta_size, 2);
  detail::put_be(out + 20, static_cast<uint32_t>(h.error_code), 4);
}

// Reads the fields after the magic (the caller checked it).
inline FrameHeader DecodeHeader(const char in[kHeaderSize]) {
  FrameHeader h;
  h.body_size = static_cast<uint32_t>(detail::get_be(in + 4, 4));
  h.correlation_id = detail::get_be(in + 8, 8);
  h.flags = static_cast<uint16_t>(detail::get_be(in + 16, 2));
  h.meta_size = static_cast<uint16_t>(detail::get_be(in + 18, 2));
  h.error_code = static_cast<int32_t>(static_cast<uint32_t>(detail::get_be(in + 20, 4)));
  return h;
}

}  // namespace weft::rpc::weft_std

#endif  // WEFT_NET_SRC_PROTOCOLS_WEFT_STD_WEFT_STD_FORMAT_H_
