// Fuzzes the HTTP/1.1 request parser: the input is cut into requests as a
// connection would (the resumable parser fed the whole input, then fed it
// again in two pieces split where the first byte says, apart in memory), with small limits
// so 413 and 431 are reachable, and through the protocol's stateless parse.
// The parser must never crash, read out of bounds or hang; both feedings
// must cut the same requests and end in the same state; the stateless
// parse must agree on the first request.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "protocols/http/http_parser.h"
#include "protocols/http/http_protocol.h"
#include "weft/net/iobuf.h"

namespace {

using weft::IOBuf;
using weft::rpc::http::HttpMessage;
using weft::rpc::http::HttpParseLimits;
using weft::rpc::http::HttpRequestParser;

HttpParseLimits Limits() {
  HttpParseLimits l;
  l.max_head_bytes = 2048;
  l.max_headers = 16;
  l.max_body_bytes = 4096;
  return l;
}

// Feeds buf and cuts requests until the parser wants more or stops; each
// request is summarized, the final state appended last.
void cut_all(HttpRequestParser* p, IOBuf* buf, std::vector<std::string>* out, bool* stopped) {
  for (;;) {
    const HttpRequestParser::Status st = p->Feed(buf);
    if (st == HttpRequestParser::kDone) {
      std::string fields;
      for (const auto& [name, value] : p->head().headers) fields += " " + name + ":" + value;
      out->push_back(p->head().method + " " + p->head().target + " " +
                     std::to_string(p->body().size()) + (p->head().keep_alive ? " ka" : "") +
                     fields);
      p->Reset();
      continue;
    }
    if (st == HttpRequestParser::kError) {
      out->push_back("error " + std::to_string(p->error_status()));
      *stopped = true;
    } else if (st == HttpRequestParser::kNotHttp) {
      out->push_back("not http");
      *stopped = true;
    }
    return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> a, b;
  {
    HttpRequestParser p(Limits());
    IOBuf whole;
    whole.append(data, size);
    bool stopped = false;
    cut_all(&p, &whole, &a, &stopped);
  }
  {
    HttpRequestParser p(Limits());
    const size_t split = size == 0 ? 0 : data[0] % (size + 1);
    IOBuf parts;
    parts.append(data, split);
    bool stopped = false;
    cut_all(&p, &parts, &b, &stopped);
    if (!stopped) {
      // Bytes appended elsewhere first, so the second piece is a separate
      // reference that does not continue the first in memory (a head
      // across it is parsed from a copy, not in place).
      IOBuf gap;
      gap.append("-", 1);
      parts.append(data + split, size - split);
      cut_all(&p, &parts, &b, &stopped);
    }
  }
  if (a != b) abort();  // where the bytes were split changed the requests

  // The protocol's stateless parse (no connection) cuts the first request.
  static int server_tag;
  IOBuf buf;
  buf.append(data, size);
  const size_t before = buf.size();
  weft::ParseResult r = weft::rpc::http::ParseHttp(&buf, nullptr, false, &server_tag);
  if (r.is_ok()) {
    if (buf.size() >= before) abort();  // OK must consume
    auto* m = static_cast<HttpMessage*>(r.message());
    if (m == nullptr) abort();
    m->Destroy();
  }
  return 0;
}
