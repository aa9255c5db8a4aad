// weft/fiber_dump.h: a view of every live fiber, for when a process
// misbehaves.
#ifndef WEFT_FIBER_DUMP_H_
#define WEFT_FIBER_DUMP_H_

#include <ostream>

namespace weft {

// Writes one block per live fiber. Its first line is
//   fiber <id> <state>
// with <id> the decimal bthread_t and <state> one of running, ready,
// suspended; then what it waits on (butex address, deadline, fd) and for
// how long, and for a suspended fiber its call stack, one frame per line
// (walked through frame pointers from the saved context: frames compiled
// without them end the walk early). The last line counts the fibers.
//
// Safe from any thread at any time: it never stops the fibers, reads
// another fiber's stack only within that stack's mapped bounds, and at
// worst shows a frame that changed while it was read. It takes no lock the
// scheduler needs.
void dump_fibers(std::ostream& os);

}  // namespace weft

#endif  // WEFT_FIBER_DUMP_H_
