// One client InputMessenger per protocol.
#include "client_messenger.h"

#include <mutex>
#include <unordered_map>

namespace weft::rpc::internal {

InputMessenger* client_messenger(const Protocol* p) {
  static std::mutex mu;
  // Leaked with the messengers: sockets may read during exit.
  static auto* messengers = new std::unordered_map<const Protocol*, InputMessenger*>;
  std::lock_guard<std::mutex> guard(mu);
  auto it = messengers->find(p);
  if (it != messengers->end()) return it->second;
  auto* m = new InputMessenger;
  InputMessageHandler h;
  h.parse = p->parse;
  h.process = p->process_response;
  h.verify = nullptr;  // a client trusts the server it chose to call
  // The parse's arg on a client connection is nullptr (see protocol.h).
  h.arg = nullptr;
  h.name = p->name;
  m->AddHandler(h);
  messengers->emplace(p, m);
  return m;
}

}  // namespace weft::rpc::internal
