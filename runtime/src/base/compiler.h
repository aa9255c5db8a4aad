// Small compiler and CPU helpers shared by the runtime.
#ifndef WEFT_BASE_COMPILER_H_
#define WEFT_BASE_COMPILER_H_

#include <atomic>

#define WEFT_LIKELY(x) __builtin_expect(!!(x), 1)
#define WEFT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define WEFT_NOINLINE __attribute__((noinline))

// A thread-local known to be constant-initialized. Without it, every read of
// an `extern thread_local` from another translation unit first tests for a
// dynamic-initialization function (a possible call: a frame and register
// spills on the fastest paths, e.g. bthread_getspecific).
#if defined(__GNUC__) && !defined(__clang__)
#define WEFT_CONSTINIT __constinit
#else
#define WEFT_CONSTINIT
#endif

#if defined(__SANITIZE_THREAD__)
#define WEFT_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define WEFT_ASAN 1
#endif
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) && !defined(WEFT_TSAN)
#define WEFT_TSAN 1
#endif
#if __has_feature(address_sanitizer) && !defined(WEFT_ASAN)
#define WEFT_ASAN 1
#endif
#endif

namespace weft::base {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// A full store-load barrier. ThreadSanitizer does not model
// std::atomic_thread_fence, so under TSan the barrier is a seq_cst
// read-modify-write on a private word, which it does understand and which
// gives the same ordering for the Dekker-style handshakes that use it.
inline void full_fence() {
#if defined(WEFT_TSAN)
  static std::atomic<int> word{0};
  word.fetch_add(0, std::memory_order_seq_cst);
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

// The calling pthread's errno. glibc declares __errno_location() const, so
// a compiler may compute &errno once and reuse it across a call that
// suspends the fiber, after which the fiber may run on another pthread and
// the cached address is another thread's errno. This accessor is opaque
// (never inlined, with a compiler barrier), so every call really asks. Use
// it for errno reads and writes that follow a possible suspension in the
// same function.
int* errno_location();

}  // namespace weft::base

#endif  // WEFT_BASE_COMPILER_H_
