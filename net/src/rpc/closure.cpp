#include "weft/rpc/closure.h"

#include <stdio.h>
#include <stdlib.h>

namespace weft::rpc {

void Closure::operator()() {
  if (ops_ == nullptr) {
    fprintf(stderr, "weft rpc: a Closure was called twice (or never set)\n");
    abort();
  }
  // Move the callable out first: it may destroy the object that holds this
  // Closure (a reply's last step frees the call), and with it the inline
  // storage. The local copy lives on this stack until the call returns.
  alignas(std::max_align_t) unsigned char local[kInlineBytes];
  const Ops* ops = ops_;
  ops->move(storage_, local);
  ops_ = nullptr;
  struct Destroy {
    const Ops* ops;
    void* at;
    ~Destroy() { ops->destroy(at); }
  } destroy{ops, local};
  ops->run(local);
}

}  // namespace weft::rpc
