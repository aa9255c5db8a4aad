// The README's "write your own protocol" example: a complete text RPC
// protocol in one file, a server and a client. Built and run by ctest.
#include <weft/net/input_messenger.h>
#include <weft/rpc/call_completion.h>
#include <weft/rpc/channel.h>
#include <weft/rpc/protocol.h>
#include <weft/rpc/server.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

// Wire format, one frame per message:
//   request:  "Q <id> <method> <n>\n" then n payload bytes
//   response: "R <id> <error_code> <n>\n" then n bytes (payload, or error text)
namespace line_rpc {

struct Frame : weft::InputMessageBase {
  bool response = false;
  uint64_t id = 0;
  int code = 0;
  std::string method;
  weft::IOBuf payload;
};

// Cut one frame off the connection's bytes (runs in its reading fiber).
weft::ParseResult Parse(weft::IOBuf* in, weft::Socket*, bool, const void* server) {
  char head[320];
  const size_t n = in->copy_to(head, sizeof(head) - 1);
  head[n] = '\0';
  if (n > 0 && head[0] != 'Q' && head[0] != 'R') {
    return weft::ParseResult::Error(weft::PARSE_ERROR_TRY_OTHERS);  // not ours
  }
  char* nl = static_cast<char*>(memchr(head, '\n', n));
  if (nl == nullptr) {
    return n < sizeof(head) - 1 ? weft::ParseResult::Error(weft::PARSE_ERROR_NOT_ENOUGH_DATA)
                                : weft::ParseResult::Error(weft::PARSE_ERROR_ABSOLUTELY_WRONG,
                                                           "header line too long");
  }
  *nl = '\0';
  auto f = std::make_unique<Frame>();
  char word[256];
  uint64_t size = 0;
  f->response = head[0] == 'R';
  const bool ok = f->response
      ? sscanf(head, "R %" SCNu64 " %d %" SCNu64, &f->id, &f->code, &size) == 3
      : sscanf(head, "Q %" SCNu64 " %255s %" SCNu64, &f->id, word, &size) == 3;
  if (!ok || size > static_cast<uint64_t>(weft::max_body_size()) ||
      (f->response && server != nullptr)) {
    return weft::ParseResult::Error(weft::PARSE_ERROR_ABSOLUTELY_WRONG, "bad line_rpc frame");
  }
  const size_t header = static_cast<size_t>(nl - head) + 1;
  if (in->size() < header + size) return weft::ParseResult::Error(weft::PARSE_ERROR_NOT_ENOUGH_DATA);
  if (!f->response) f->method = word;
  in->pop_front(header);
  in->cutn(&f->payload, size);
  return weft::ParseResult::Ok(f.release());
}

void PackRequest(weft::IOBuf* out, uint64_t id, const char* method, weft::rpc::Controller*,
                 const weft::IOBuf& body) {
  out->append("Q " + std::to_string(id) + " " + method + " " + std::to_string(body.size()) + "\n");
  out->append(body);
}

// Server side: run the method, answer when its done() runs (any fiber).
void ProcessRequest(weft::InputMessageBase* m) {
  struct Call {
    std::unique_ptr<Frame, void (*)(Frame*)> frame{nullptr, [](Frame* f) { f->Destroy(); }};
    weft::rpc::Controller cntl;
    weft::IOBuf response;
  };
  auto call = std::make_shared<Call>();
  call->frame.reset(static_cast<Frame*>(m));
  auto* server = static_cast<weft::rpc::Server*>(const_cast<void*>(m->arg()));
  server->ProcessCall(call->frame->method, &call->cntl, call->frame->payload, &call->response,
                      m->received_us(), [call] {
                        const std::string body = call->cntl.Failed() ? call->cntl.ErrorText()
                                                                     : call->response.to_string();
                        weft::IOBuf out;
                        out.append("R " + std::to_string(call->frame->id) + " " +
                                   std::to_string(call->cntl.ErrorCode()) + " " +
                                   std::to_string(body.size()) + "\n" + body);
                        call->frame->socket()->Write(&out);
                      });
}

// Client side: hand the reply to the call its id names.
void ProcessResponse(weft::InputMessageBase* m) {
  auto* f = static_cast<Frame*>(m);
  const std::string text = f->code != 0 ? f->payload.to_string() : std::string();
  weft::rpc::CompleteCall(f->id, f->socket(), f->code, text, &f->payload);
  f->Destroy();
}

int Register() {
  weft::rpc::Protocol p;
  p.parse = Parse;
  p.process_request = ProcessRequest;
  p.process_response = ProcessResponse;
  p.pack_request = PackRequest;
  p.supported_connection_types = weft::rpc::kSingle | weft::rpc::kPooled | weft::rpc::kShort;
  p.name = "line_rpc";
  return weft::rpc::RegisterProtocol(p);
}

}  // namespace line_rpc

int main() {
  if (line_rpc::Register() != 0) return 1;

  weft::rpc::Server server;  // speaks every registered protocol, line_rpc too
  server.AddMethod("upper", [](weft::rpc::Controller*, const weft::IOBuf& req, weft::IOBuf* resp,
                               weft::rpc::Closure done) {
    std::string s = req.to_string();
    for (char& c : s) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
    resp->append(s);
    done();
  });
  if (server.Start("127.0.0.1:0", nullptr) != 0) return 1;

  weft::rpc::ChannelOptions opt;
  opt.protocol = "line_rpc";
  weft::rpc::Channel channel;
  if (channel.Init(server.listen_address(), &opt) != 0) return 1;
  weft::rpc::Controller cntl;
  weft::IOBuf req, resp;
  req.append("hello, protocol");
  channel.CallMethod("upper", &cntl, req, &resp, nullptr);
  printf("upper: %s (error %d)\n", resp.to_string().c_str(), cntl.ErrorCode());

  weft::rpc::Controller missing;
  channel.CallMethod("lower", &missing, req, &resp, nullptr);
  printf("lower: error %d, %s\n", missing.ErrorCode(), missing.ErrorText().c_str());

  server.Stop();
  server.Join();
  return cntl.Failed() ? 1 : 0;
}
