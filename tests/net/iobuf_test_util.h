// Helpers shared by the IOBuf tests.
#ifndef WEFT_TESTS_NET_IOBUF_TEST_UTIL_H_
#define WEFT_TESTS_NET_IOBUF_TEST_UTIL_H_

#include <stddef.h>
#include <stdint.h>

#include <string>

namespace weft::test {

// Pseudo-random bytes: shifted, reordered or stale copies show.
inline std::string pattern(size_t n, uint32_t seed = 1) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 12345;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

}  // namespace weft::test

#endif  // WEFT_TESTS_NET_IOBUF_TEST_UTIL_H_
