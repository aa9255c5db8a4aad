// Internal: one word per fiber for the layers above the runtime.
//
// net/ marks a fiber with the connection whose message it is running
// (net/src/serving_connection.h), so that Acceptor::StopAccept called from
// that handler does not wait for its own connection. A bthread key would do,
// but a fiber without a key table pays two allocations for its first
// setspecific, on every message; this word lives in the fiber's TaskMeta
// and is reset to 0 when the fiber starts. Outside fibers (a plain
// pthread, a BTHREAD_ATTR_PTHREAD fiber) it is a thread-local word.
#ifndef WEFT_SCHED_FIBER_TAG_H_
#define WEFT_SCHED_FIBER_TAG_H_

#include <stdint.h>

namespace weft::sched {

// The calling fiber's tag (0 until set). Never inlined: a fiber may resume
// on another worker after any suspension, so each call finds the current
// fiber afresh.
uint64_t current_fiber_tag();
void set_current_fiber_tag(uint64_t tag);

}  // namespace weft::sched

#endif  // WEFT_SCHED_FIBER_TAG_H_
