// The weft_std frame header (rpc.md, "weft_std wire format", version 1),
// written again here on purpose: the baseline echo servers must not link
// weft, so they are a second, independent reading of the wire format, and
// weft-echo's client talking to them checks both readings agree.
//
//   offset size field
//   0      4    magic "WFT1"
//   4      4    body_size (meta + payload)
//   8      8    correlation_id
//   16     2    flags (bit 0: response)
//   18     2    meta_size (request: method name; response: error text)
//   20     4    error_code
//
// Big-endian. Pure functions: any thread.
#ifndef WEFT_BENCHMARKS_ECHO_BASELINES_WEFT_STD_FRAME_H_
#define WEFT_BENCHMARKS_ECHO_BASELINES_WEFT_STD_FRAME_H_

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <initializer_list>
#include <string>
#include <utility>

namespace echo_baseline {

inline constexpr size_t kHeaderSize = 24;
// rpc.md's default --weft_max_body_size; a baseline refuses larger bodies
// too, so a corrupt length closes the connection instead of buffering GBs.
inline constexpr uint32_t kMaxBodySize = 64u << 20;

inline uint64_t load_be(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

inline void store_be(char* p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

// What the servers need from a request header.
struct RequestHeader {
  uint32_t body_size = 0;
  uint16_t meta_size = 0;
  const char* correlation_id = nullptr;  // 8 raw bytes, echoed unchanged
};

// Reads the header at p (kHeaderSize bytes). False on a frame the server
// must close the connection for: bad magic, an oversized body, a meta
// larger than the body, or a response sent to a server.
inline bool parse_request_header(const char* p, RequestHeader* h) {
  if (memcmp(p, "WFT1", 4) != 0) return false;
  h->body_size = static_cast<uint32_t>(load_be(p + 4, 4));
  h->correlation_id = p + 8;
  const uint16_t flags = static_cast<uint16_t>(load_be(p + 16, 2));
  h->meta_size = static_cast<uint16_t>(load_be(p + 18, 2));
  return h->body_size <= kMaxBodySize && h->meta_size <= h->body_size && (flags & 1u) == 0;
}

// Appends a successful response frame (no error text) carrying payload.
inline void append_response(std::string* out, const char* correlation_id, const char* payload,
                            size_t payload_size) {
  char hdr[kHeaderSize];
  memcpy(hdr, "WFT1", 4);
  store_be(hdr + 4, payload_size, 4);
  memcpy(hdr + 8, correlation_id, 8);
  store_be(hdr + 16, 1, 2);  // flags: response
  store_be(hdr + 18, 0, 2);  // meta_size: no error text
  store_be(hdr + 20, 0, 4);  // error_code: 0
  out->append(hdr, kHeaderSize);
  out->append(payload, payload_size);
}

// Answers every complete request at the front of in[0, size) into *out
// (the method name is ignored: every method echoes). Returns the bytes
// consumed, or -1 on a frame that must close the connection.
inline long answer_frames(const char* in, size_t size, std::string* out) {
  size_t pos = 0;
  while (size - pos >= kHeaderSize) {
    RequestHeader h;
    if (!parse_request_header(in + pos, &h)) return -1;
    if (size - pos - kHeaderSize < h.body_size) break;
    const char* body = in + pos + kHeaderSize;
    append_response(out, h.correlation_id, body + h.meta_size, h.body_size - h.meta_size);
    pos += kHeaderSize + h.body_size;
  }
  return static_cast<long>(pos);
}

// "--name=value" / "--name value" for the two integer flags the servers
// take. Returns false on anything else.
inline bool parse_int_flags(int argc, char** argv, int* port, int* threads) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    int* target = nullptr;
    for (auto [name, dst] : {std::pair<const char*, int*>{"--port", port}, {"--threads", threads}}) {
      const size_t n = strlen(name);
      if (arg.compare(0, n, name) != 0 || dst == nullptr) continue;
      if (arg.size() == n && i + 1 < argc) {
        value = argv[++i];
      } else if (arg.size() > n && arg[n] == '=') {
        value = arg.substr(n + 1);
      } else {
        continue;
      }
      target = dst;
      break;
    }
    if (target == nullptr || value.empty()) return false;
    char* end = nullptr;
    const long v = strtol(value.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v > 65535) return false;
    *target = static_cast<int>(v);
  }
  return true;
}

}  // namespace echo_baseline

#endif  // WEFT_BENCHMARKS_ECHO_BASELINES_WEFT_STD_FRAME_H_
