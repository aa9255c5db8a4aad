// The per-fiber tag word (fiber_tag.h).
#include "sched/fiber_tag.h"

#include "base/compiler.h"
#include "sched/task_group.h"
#include "sched/task_meta.h"

namespace weft::sched {

namespace {
// The tag of code that runs outside a worker's fibers.
thread_local uint64_t tls_pthread_tag = 0;
}  // namespace

WEFT_NOINLINE uint64_t current_fiber_tag() {
  asm volatile("" ::: "memory");
  const TaskGroup* const g = tls_current_group;
  if (g == nullptr) return tls_pthread_tag;
  return g->current_task()->user_tag;
}

WEFT_NOINLINE void set_current_fiber_tag(uint64_t tag) {
  asm volatile("" ::: "memory");
  TaskGroup* const g = tls_current_group;
  if (g == nullptr) {
    tls_pthread_tag = tag;
    return;
  }
  // Only the fiber itself writes or reads its tag (plain field).
  g->current_task()->user_tag = tag;
}

}  // namespace weft::sched
