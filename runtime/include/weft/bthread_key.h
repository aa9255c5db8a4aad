// weft/bthread_key.h: fiber-local storage (part of the C API of
// weft/bthread.h, which includes this header).
//
// Keys work in fibers and in pthreads (a pthread that is not running a
// fiber has its own table). A fiber's values are destroyed by the key's
// destructor when it ends, unless its attr names a keytable pool: then the
// table goes back to the pool, values kept, and a later fiber started with
// that pool picks it up. Keys are versioned: a deleted key reads NULL, and a
// key created later never sees values stored under an old one.
//
// Destructors run as pthreads run them, on the ending fiber (or exiting
// pthread) itself: up to PTHREAD_DESTRUCTOR_ITERATIONS rounds over the same
// table, each non-null value cleared just before its destructor is called.
// Inside a destructor, getspecific of another key still returns its value
// until that key's destructor ran, and a value set there is destroyed in the
// next round.
#ifndef WEFT_BTHREAD_KEY_H_
#define WEFT_BTHREAD_KEY_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bthread_key_t {
  uint32_t index;
  uint32_t version;
} bthread_key_t;

// A pool of key tables shared by the fibers started with it.
struct bthread_keytable_pool_t {
  void* impl;
};

// Up to 1024 keys at once; EAGAIN when all are taken. dtor may be NULL.
int bthread_key_create(bthread_key_t* key, void (*dtor)(void*));
// EINVAL when the key is not alive. Values stored under it are not
// destroyed (as pthread_key_delete); they just become invisible.
int bthread_key_delete(bthread_key_t key);
// EINVAL for a deleted key; ENOMEM when no table could be allocated.
int bthread_setspecific(bthread_key_t key, void* data);
// NULL when unset or the key was deleted. A few loads.
void* bthread_getspecific(bthread_key_t key);

int bthread_keytable_pool_init(bthread_keytable_pool_t* pool);
// Destroys the pooled tables (running destructors). Call it only after every
// fiber started with the pool has ended (as in bthread).
int bthread_keytable_pool_destroy(bthread_keytable_pool_t* pool);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // WEFT_BTHREAD_KEY_H_
