#include "weft/rpc/protocol.h"

#include <errno.h>
#include <string.h>

#include <deque>
#include <mutex>

#include "rpc/builtin_protocols.h"

namespace weft::rpc {

namespace {

// The registry: a deque so that pointers handed out by FindProtocol stay
// valid as protocols are added. Guarded by its mutex (registration is
// rare; lookups happen when servers start and channels init, not per call).
struct Registry {
  std::mutex mu;
  std::deque<Protocol> protocols;
};

Registry& registry() {
  // Never destroyed: lookups may run from other static destructors.
  static Registry* r = new Registry;
  return *r;
}

}  // namespace

bool ParseConnectionType(std::string_view text, ConnectionType* type) {
  if (text == "single") {
    *type = kSingle;
  } else if (text == "pooled") {
    *type = kPooled;
  } else if (text == "short") {
    *type = kShort;
  } else {
    return false;
  }
  return true;
}

const char* ConnectionTypeName(ConnectionType type) {
  switch (type) {
    case kSingle:
      return "single";
    case kPooled:
      return "pooled";
    case kShort:
      return "short";
  }
  return "unknown";
}

namespace internal {

int RegisterProtocolNoInit(const Protocol& p) {
  if (p.name == nullptr || p.name[0] == '\0' || p.parse == nullptr ||
      (p.process_request == nullptr && p.process_response == nullptr)) {
    return EINVAL;
  }
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const Protocol& q : r.protocols) {
    if (strcmp(q.name, p.name) == 0) return EEXIST;
  }
  r.protocols.push_back(p);
  return 0;
}

}  // namespace internal

int RegisterProtocol(const Protocol& p) {
  internal::RegisterBuiltinProtocolsOnce();
  return internal::RegisterProtocolNoInit(p);
}

const Protocol* FindProtocol(std::string_view name) {
  internal::RegisterBuiltinProtocolsOnce();
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const Protocol& q : r.protocols) {
    if (name == q.name) return &q;
  }
  return nullptr;
}

std::vector<const Protocol*> ListProtocols() {
  internal::RegisterBuiltinProtocolsOnce();
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<const Protocol*> out;
  out.reserve(r.protocols.size());
  for (const Protocol& q : r.protocols) out.push_back(&q);
  return out;
}

}  // namespace weft::rpc
