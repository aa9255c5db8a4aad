// weft/bthread_id.h: correlation ids (part of the C API of weft/bthread.h,
// which includes this header), with bthread's semantics.
//
// An id names some `data` and an `on_error` handler. One party at a time
// holds the id locked; others block in bthread_id_lock. An error raised
// while the id is locked is queued and delivered (on_error is called with
// the id locked) when the holder unlocks. bthread_id_join waits until the
// id is destroyed. All calls are safe on destroyed or stale ids (EINVAL).
#ifndef WEFT_BTHREAD_ID_H_
#define WEFT_BTHREAD_ID_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bthread_id_t {
  uint64_t value;
} bthread_id_t;

#define INVALID_BTHREAD_ID {0}

// on_error(id, data, error_code) runs with the id locked and must end by
// unlocking it (bthread_id_unlock) or destroying it
// (bthread_id_unlock_and_destroy). NULL means "destroy on error".
int bthread_id_create(bthread_id_t* id, void* data,
                      int (*on_error)(bthread_id_t id, void* data, int error_code));
// Locks the id, waiting (suspending, in fibers) while another party holds
// it; *pdata (if not NULL) gets the data. EINVAL: destroyed.
int bthread_id_lock(bthread_id_t id, void** pdata);
// Unlocks; if errors were queued meanwhile, the first is delivered now (the
// id stays locked for on_error). EINVAL: destroyed; EPERM: not locked.
int bthread_id_unlock(bthread_id_t id);
// Destroys a locked id: lockers waiting get EINVAL, joiners return.
int bthread_id_unlock_and_destroy(bthread_id_t id);
// Raises an error: runs on_error now if the id is unlocked (locking it for
// the handler), else queues it for the unlock. EINVAL: destroyed.
int bthread_id_error(bthread_id_t id, int error_code);
// Waits until the id is destroyed. 0 (also for an id destroyed already).
int bthread_id_join(bthread_id_t id);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // WEFT_BTHREAD_ID_H_
