#include <errno.h>

#include "base/compiler.h"

namespace weft::base {

WEFT_NOINLINE int* errno_location() {
  // The barrier keeps the compiler from treating this function as const
  // (as it may treat glibc's __errno_location) and merging calls.
  asm volatile("" ::: "memory");
  return &errno;
}

}  // namespace weft::base
