// Fuzzes weft_std's frame parser: the input is cut into frames as a
// connection would (whole, then again fed in two pieces split where the
// first byte says), on the server side and on the client side. The parser
// must never crash, read out of bounds, allocate for a body that has not
// arrived, or return OK without consuming bytes; the two feedings must cut
// the same frames.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "protocols/weft_std/weft_std_protocol.h"
#include "weft/net/iobuf.h"

namespace {

using weft::IOBuf;
using weft::ParseResult;
using weft::rpc::weft_std::ParseFrame;
using weft::rpc::weft_std::WeftStdMessage;

// Cuts frames until the parser wants more or refuses; returns a summary of
// each frame and whether the stream was refused.
std::vector<std::string> cut_all(IOBuf* buf, const void* side, bool* refused) {
  std::vector<std::string> frames;
  for (;;) {
    const size_t before = buf->size();
    ParseResult r = ParseFrame(buf, nullptr, false, side);
    if (!r.is_ok()) {
      *refused = r.error() != weft::PARSE_ERROR_NOT_ENOUGH_DATA;
      return frames;
    }
    if (buf->size() >= before) abort();  // OK must consume
    auto* m = static_cast<WeftStdMessage*>(r.message());
    if (m == nullptr) abort();  // weft_std has no empty messages
    frames.push_back(std::to_string(m->header.correlation_id) + "/" + m->meta.to_string() + "/" +
                     std::to_string(m->payload.size()));
    m->Destroy();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int server_tag;
  for (const void* side : {static_cast<const void*>(&server_tag), static_cast<const void*>(nullptr)}) {
    IOBuf whole;
    whole.append(data, size);
    bool refused_whole = false;
    const std::vector<std::string> a = cut_all(&whole, side, &refused_whole);

    const size_t split = size == 0 ? 0 : data[0] % (size + 1);
    IOBuf parts;
    parts.append(data, split);
    bool refused_parts = false;
    std::vector<std::string> b = cut_all(&parts, side, &refused_parts);
    if (!refused_parts) {
      parts.append(data + split, size - split);
      const std::vector<std::string> rest = cut_all(&parts, side, &refused_parts);
      b.insert(b.end(), rest.begin(), rest.end());
    }
    // A refusal seen in the first piece is the whole stream's refusal too.
    if (refused_parts && !refused_whole) abort();
    if (!refused_parts && (a != b || refused_whole)) abort();
  }
  return 0;
}
