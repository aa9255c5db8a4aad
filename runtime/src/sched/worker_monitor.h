// The worker monitor: a pthread that, while any worker is awake, looks at
// every worker each tick (kMonitorTickNs, 200 us), in the style of Go's
// sysmon.
//
// - A worker whose switch count did not move since the previous tick while
//   fibers wait in its queue or run-next slot is stuck: its fiber blocks
//   the pthread (a blocking system call, a std::mutex, a foreign library)
//   or computes without yielding. If no worker is searching, the monitor
//   wakes a parked one, which steals the waiting fibers (the run-next one
//   after the thieves' grace, task_control.cpp). A ready fiber thus waits
//   at most about two ticks plus a wake-up while a worker is idle.
// - When every worker has run the same fiber for longer than
//   --weft_worker_stall_warn_ms with work queued, it logs one warning per
//   episode naming those fibers (their fiber-dump blocks) and counts it in
//   weft_worker_stalls.
//
// When every worker is parked the monitor sleeps on a futex; the first
// worker to leave the idle list wakes it (worker_unparked), so an idle
// runtime costs no CPU. With a single worker nothing can be stranded: the
// monitor then only looks for stalls, on a slow tick (at most 50 ms, a
// quarter of the warning's threshold), and never parks, so the worker's
// unparks wake nobody.
//
// The monitor's pthread runs at nice 19 (--weft_worker_monitor_nice): a
// tick never preempts a worker or another process on wake-up, so it costs
// spare CPU time. A worker blocked in a system call leaves its CPU free, so
// the monitor still runs within a tick there; when other processes keep
// every CPU busy it gets its 1.5% CFS share, a few ms.
#ifndef WEFT_SCHED_WORKER_MONITOR_H_
#define WEFT_SCHED_WORKER_MONITOR_H_

#include <stdint.h>

namespace weft::sched {

class TaskControl;

// Each tick wakes the monitor's pthread, which on a small VM costs a
// context switch on a CPU the workers want (at 100 us it was ~6% of an
// echo server's samples). 200 us halves that and still bounds a stranded
// fiber's wait to about two ticks plus a wake-up, under 1 ms.
constexpr int64_t kMonitorTickNs = 200 * 1000;

// Starts the monitor thread for `c`. Once, from TaskControl::get().
void start_worker_monitor(TaskControl* c);

// Called by a worker that left the idle list (woken, or its re-check found
// work): wakes the monitor if it sleeps because every worker was parked.
void worker_unparked();

// Called after workers were added at run time: a monitor that slept for
// the lone worker starts its stranding ticks.
void workers_added();

// Stall episodes reported so far (the weft_worker_stalls metric).
uint64_t worker_stalls();

}  // namespace weft::sched

#endif  // WEFT_SCHED_WORKER_MONITOR_H_
