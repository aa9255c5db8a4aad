// Test-only fault injection for dump_fibers (observe/fiber_dump.cpp).
#ifndef WEFT_OBSERVE_FIBER_DUMP_HOOKS_H_
#define WEFT_OBSERVE_FIBER_DUMP_HOOKS_H_

#include <stdint.h>

namespace weft::observe {

// When set, dump_fibers calls it with a slot's index right after reading
// that slot's version as live, before anything else of the slot: a test
// can end and reuse the fiber there to widen the window a real worker
// leaves. Set and cleared by the thread that calls dump_fibers, with no
// dump running.
extern void (*g_dump_after_version_read)(uint32_t slot);

}  // namespace weft::observe

#endif  // WEFT_OBSERVE_FIBER_DUMP_HOOKS_H_
