// Fiber stacks: pooled per size class, carved from large slabs, each with a
// 64 KiB guard below it (reserved address space, never memory), so a large
// frame cannot jump over the guard into the neighbouring stack.
//
// One mprotect'ed guard splits a mapping in two, so brpc-style guarded
// stacks cost two kernel mappings each and ~32,000 of them exhaust Linux's
// default vm.max_map_count (65,530). On Linux >= 6.13 weft installs guards
// with madvise(MADV_GUARD_INSTALL), which does not split the mapping: a
// slab of 64 small stacks is one mapping, whatever the guard size. Older
// kernels fall back to mprotect. See runtime/README.md.
#ifndef WEFT_SCHED_STACK_POOL_H_
#define WEFT_SCHED_STACK_POOL_H_

#include <stddef.h>

namespace weft::sched {

enum StackClass { kStackSmall = 0, kStackNormal = 1, kStackLarge = 2, kStackClasses = 3 };

struct Stack {
  void* bottom = nullptr;  // lowest usable address; the stack grows down from bottom + size
  size_t size = 0;
  int cls = -1;
};

// Takes a stack of class `cls`. Returns 0, or ENOMEM when the kernel refuses
// memory or mappings. Never blocks. Any thread.
int stack_acquire(int cls, Stack* out);

// Returns a stack to its pool. Any thread.
void stack_release(const Stack& stack);

// Usable bytes of a stack of class `cls` (flags, rounded up to pages; fixed
// at first use).
size_t stack_usable_size(int cls);

// "madvise" or "mprotect": how guard pages are installed on this kernel.
const char* stack_guard_mode();

// If `addr` lies anywhere in the guard below a pooled stack, stores that stack's
// usable size and returns true. Async-signal-safe.
bool stack_guard_hit(const void* addr, size_t* stack_size);

// Installs (once) the SIGSEGV handler that turns a guard-page hit into a
// clear message and a crash, and gives the calling thread an alternate
// signal stack to run it on. Called by every worker at start.
void stack_overflow_protect_thread();

}  // namespace weft::sched

#endif  // WEFT_SCHED_STACK_POOL_H_
