// weft/bthread_fd.h: fiber-aware waiting on file descriptors (part of the C
// API of weft/bthread.h, which includes this header).
//
// A fiber that waits is suspended; its worker keeps running other fibers.
// The readiness poller runs on its own pthread, never on a worker. A
// BTHREAD_ATTR_PTHREAD fiber blocks its own pthread but is otherwise served
// like any fiber (interrupts, bthread_close). A plain pthread caller blocks
// in poll(2) and is neither interruptible nor woken by bthread_close.
// Functions return 0, or -1 with errno.
#ifndef WEFT_BTHREAD_FD_H_
#define WEFT_BTHREAD_FD_H_

#include <sys/socket.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

// Waits until `fd` is ready for `epoll_events` (EPOLLIN, EPOLLOUT, ...).
// errno: EINTR (the fiber was interrupted or stopped), EBADF (closed with
// bthread_close while waiting), or epoll_ctl's errors (EINVAL, EPERM for a
// regular file, ...). One fiber at a time may wait on a given fd. The fd
// stays registered with the poller between waits (re-arming is one
// epoll_ctl); close it with bthread_close, which drops the registration. A
// plain close() works too: the kernel drops it, and the next wait on a
// reused fd number registers afresh.
int bthread_fd_wait(int fd, unsigned epoll_events);

// As bthread_fd_wait; ETIMEDOUT when `abstime` (CLOCK_REALTIME; NULL:
// forever) passes first.
int bthread_fd_timedwait(int fd, unsigned epoll_events, const struct timespec* abstime);

// connect(2) that suspends the calling fiber (not its worker) until the
// connection is established or fails. The fd's blocking mode is kept.
int bthread_connect(int sockfd, const struct sockaddr* addr, socklen_t addrlen);

// Wakes every fiber waiting on `fd` (they fail with EBADF), then closes it.
int bthread_close(int fd);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // WEFT_BTHREAD_FD_H_
