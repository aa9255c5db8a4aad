// weft/errno.h: error codes weft adds to the system's errno values.
#ifndef WEFT_ERRNO_H_
#define WEFT_ERRNO_H_

// Returned (through errno) by bthread_usleep in a fiber that was stopped with
// bthread_stop. Chosen above every Linux errno so it never aliases one.
#define ESTOP 1019

#endif  // WEFT_ERRNO_H_
