// weft/rpc/errno.h: the error codes of weft::rpc calls and their names.
//
// Values are brpc's (docs/en/error_code.md) so logs read the same, except
// ELOGOFF, which weft::net already defines as 2001 (see weft/errno.h). They
// are macros, like errno values and like weft/errno.h's net codes
// (EFAILEDSOCKET, EOVERCROWDED, EEOF, ELOGOFF, which this header re-exports),
// so that one name means one number in C and C++ and `switch (errno)` works.
// None of them collides with a Linux errno (all are above 1000).
#ifndef WEFT_RPC_ERRNO_H_
#define WEFT_RPC_ERRNO_H_

#include <errno.h>

#include "weft/errno.h"

// The server has no such service (kept for brpc parity; weft names methods
// only).
#define ENOSERVICE 1001
// The server has no method of that name.
#define ENOMETHOD 1002
// The request is malformed (a bad frame closes its connection with it).
#define EREQUEST 1003
// Authentication failed.
#define ERPCAUTH 1004
// Too many failures (retries of a call exhausted on connection errors).
#define ETOOMANYFAILS 1005
// The call's deadline passed (a connect that times out is ETIMEDOUT).
#define ERPCTIMEDOUT 1008
// EFAILEDSOCKET (1009), EOVERCROWDED (1011), EEOF (1014) and ELOGOFF (2001,
// the server is stopping) come from weft/errno.h.
// The server is at ServerOptions::max_concurrency; the handler did not run.
#define ELIMIT 2004
// ECANCELED (StartCancel) is the system's.

namespace weft::rpc {

// A short English description of `error_code`: the rpc codes above, weft's
// net codes and every system errno; "unknown error N" otherwise. The text
// is static (never freed, never overwritten), so it may be kept and read
// from any fiber or pthread; never suspends.
const char* ErrorText(int error_code);

}  // namespace weft::rpc

#endif  // WEFT_RPC_ERRNO_H_
