#include "rpc/builtin_protocols.h"

#include <stdio.h>
#include <stdlib.h>

#include <mutex>

#include "protocols/http/http_protocol.h"
#include "protocols/redis/redis_protocol.h"
#include "protocols/weft_std/weft_std_protocol.h"

namespace weft::rpc::internal {

void RegisterBuiltinProtocolsOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    // A built-in failing to register is a build defect (a duplicate name).
    if (RegisterProtocolNoInit(weft_std::MakeWeftStdProtocol()) != 0) {
      fprintf(stderr, "weft rpc: fail to register the weft_std protocol\n");
      abort();
    }
    // http before redis: an HTTP request line is also a valid inline
    // Redis command ("GET / HTTP/1.1"); redis declines those anyway.
    if (RegisterProtocolNoInit(http::MakeHttpProtocol()) != 0) {
      fprintf(stderr, "weft rpc: fail to register the http protocol\n");
      abort();
    }
    if (RegisterProtocolNoInit(redis::MakeRedisProtocol()) != 0) {
      fprintf(stderr, "weft rpc: fail to register the redis protocol\n");
      abort();
    }
  });
}

}  // namespace weft::rpc::internal
