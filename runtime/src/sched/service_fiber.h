// A flag for the fibers the runtime's own services cannot work without (the
// event dispatchers): --weft_max_fibers does not refuse them. The cap bounds
// the user's fibers; refusing a dispatcher would leave the process with no
// I/O at all (the net layer cannot run without one and aborts), and the
// first dispatcher starts lazily, on the first socket, often after the
// user's fibers have reached the cap.
#ifndef WEFT_SCHED_SERVICE_FIBER_H_
#define WEFT_SCHED_SERVICE_FIBER_H_

#include "weft/bthread.h"

namespace weft::sched {

// In bthread_attr_t::flags; a bit the public API does not define.
inline constexpr bthread_attrflags_t kServiceFiber = 0x80000000u;

}  // namespace weft::sched

#endif  // WEFT_SCHED_SERVICE_FIBER_H_
