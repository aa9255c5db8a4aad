// weft/errno.h: error codes weft adds to the system's errno values.
#ifndef WEFT_ERRNO_H_
#define WEFT_ERRNO_H_

// Returned (through errno) by bthread_usleep in a fiber that was stopped with
// bthread_stop. Chosen above every Linux errno so it never aliases one.
#define ESTOP 1019

// Net-layer errors (weft::Socket and the protocols). Values follow brpc's
// where brpc has the same error, so logs read the same.
// The socket was SetFailed without a specific error.
#define EFAILEDSOCKET 1009
// Too many bytes are queued for writing on the socket (see
// --weft_socket_max_unwritten_bytes); the write was not accepted.
#define EOVERCROWDED 1011
// The peer closed the connection.
#define EEOF 1014
// The server side is stopping (Acceptor::StopAccept).
#define ELOGOFF 2001

#endif  // WEFT_ERRNO_H_
