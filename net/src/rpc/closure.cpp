#include "weft/rpc/closure.h"

#include <stdio.h>
#include <stdlib.h>

namespace weft::rpc {

void Closure::operator()() {
  if (impl_ == nullptr) {
    fprintf(stderr, "weft rpc: a Closure was called twice (or never set)\n");
    abort();
  }
  // Take it out first: the callable may destroy the object that holds this
  // Closure (a reply's last step frees the call).
  std::unique_ptr<Base> impl = std::move(impl_);
  impl->Run();
}

}  // namespace weft::rpc
