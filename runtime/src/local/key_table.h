// Fiber-local storage internals.
#ifndef WEFT_LOCAL_KEY_TABLE_H_
#define WEFT_LOCAL_KEY_TABLE_H_

namespace weft::sched {
struct TaskMeta;
}

namespace weft::local {

class KeyTable;

// Called on the ending fiber's own stack (destructors may block), after its
// function returned: returns its table to its pool or destroys it.
void on_fiber_exit(sched::TaskMeta* m);

}  // namespace weft::local

#endif  // WEFT_LOCAL_KEY_TABLE_H_
