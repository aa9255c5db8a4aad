// Annotations that let AddressSanitizer and ThreadSanitizer follow fiber
// switches. Every jump between stacks goes through these; without them ASan
// reports false stack-buffer errors and TSan mixes up happens-before across
// fibers. All are no-ops in an uninstrumented build.
#ifndef WEFT_BASE_SANITIZER_H_
#define WEFT_BASE_SANITIZER_H_

#include <stddef.h>

#include "base/compiler.h"

#if defined(WEFT_ASAN)
extern "C" {
void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                     size_t* size_old);
}
#endif
#if defined(WEFT_TSAN)
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
}
#endif

namespace weft::base {

// Before a jump. `fake_stack_save` is NULL when the current stack is being
// abandoned for good (a fiber that ended).
inline void asan_start_switch(void** fake_stack_save, const void* bottom, size_t size) {
#if defined(WEFT_ASAN)
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

// After a jump lands; reports the bounds of the stack we came from.
inline void asan_finish_switch(void* fake_stack_save, const void** old_bottom, size_t* old_size) {
#if defined(WEFT_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack_save, old_bottom, old_size);
#else
  (void)fake_stack_save, (void)old_bottom, (void)old_size;
#endif
}

inline void* tsan_current_fiber() {
#if defined(WEFT_TSAN)
  return __tsan_get_current_fiber();
#else
  return nullptr;
#endif
}

inline void* tsan_create_fiber() {
#if defined(WEFT_TSAN)
  return __tsan_create_fiber(0);
#else
  return nullptr;
#endif
}

inline void tsan_destroy_fiber(void* fiber) {
#if defined(WEFT_TSAN)
  if (fiber != nullptr) __tsan_destroy_fiber(fiber);
#else
  (void)fiber;
#endif
}

// Flags 0: the switch synchronises the two fibers (happens-before).
inline void tsan_switch_to_fiber(void* fiber) {
#if defined(WEFT_TSAN)
  __tsan_switch_to_fiber(fiber, 0);
#else
  (void)fiber;
#endif
}

}  // namespace weft::base

#endif  // WEFT_BASE_SANITIZER_H_
