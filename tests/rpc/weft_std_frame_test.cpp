// weft_std's framing (rpc.md "weft_std wire format"): every rule of the
// table and of the bad-frame list, checked on ParseFrame directly.
#include <gtest/gtest.h>
#include <string.h>

#include <string>
#include <vector>

#include "protocols/weft_std/weft_std_protocol.h"
#include "weft/rpc/errno.h"

namespace weft::rpc::weft_std {
namespace {

// A non-null arg: parse runs on a server (protocol.h's convention).
const int kServerTag = 0;
const void* const kAtServer = &kServerTag;

std::string Header(uint32_t body_size, uint64_t cid, uint16_t flags, uint16_t meta_size,
                   int32_t error_code) {
  FrameHeader h;
  h.body_size = body_size;
  h.correlation_id = cid;
  h.flags = flags;
  h.meta_size = meta_size;
  h.error_code = error_code;
  char buf[kHeaderSize];
  EncodeHeader(h, buf);
  return std::string(buf, sizeof(buf));
}

std::string Request(uint64_t cid, const std::string& method, const std::string& payload) {
  return Header(static_cast<uint32_t>(method.size() + payload.size()), cid, 0,
                static_cast<uint16_t>(method.size()), 0) +
         method + payload;
}

struct Cut {
  ParseError error;
  FrameHeader header;
  std::string meta;
  std::string payload;
};

Cut ParseOne(IOBuf* buf, const void* arg = kAtServer) {
  ParseResult r = ParseFrame(buf, nullptr, false, arg);
  Cut c{r.error(), {}, {}, {}};
  if (r.is_ok()) {
    auto* m = static_cast<WeftStdMessage*>(r.message());
    c.header = m->header;
    c.meta = m->meta.to_string();
    c.payload = m->payload.to_string();
    m->Destroy();
  }
  return c;
}

ParseError ParseBytes(const std::string& bytes, const void* arg = kAtServer) {
  IOBuf b;
  b.append(bytes);
  const size_t before = b.size();
  Cut c = ParseOne(&b, arg);
  if (c.error != PARSE_OK) {
    EXPECT_EQ(before, b.size()) << "an error must leave the source untouched";
  }
  return c.error;
}

TEST(WeftStdFrame, HeaderIsBigEndianAtRpcMdsOffsets) {
  const std::string h = Header(0x01020304, 0x1122334455667788ull, 0x0001, 0xa1b2,
                               static_cast<int32_t>(0xfffffc17));  // -1001
  ASSERT_EQ(24u, h.size());
  const unsigned char want[24] = {'W',  'F',  'T',  '1',  0x01, 0x02, 0x03, 0x04,
                                  0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
                                  0x00, 0x01, 0xa1, 0xb2, 0xff, 0xff, 0xfc, 0x17};
  EXPECT_EQ(0, memcmp(want, h.data(), 24));
  const FrameHeader d = DecodeHeader(h.data());
  EXPECT_EQ(0x01020304u, d.body_size);
  EXPECT_EQ(0x1122334455667788ull, d.correlation_id);
  EXPECT_TRUE(d.is_response());
  EXPECT_EQ(0xa1b2, d.meta_size);
  EXPECT_EQ(-1001, d.error_code);
}

TEST(WeftStdFrame, CutsARequestIntoMethodAndPayload) {
  IOBuf b;
  b.append(Request(42, "echo", "hello") + "WFT1");  // and the start of the next
  Cut c = ParseOne(&b);
  ASSERT_EQ(PARSE_OK, c.error);
  EXPECT_EQ(42u, c.header.correlation_id);
  EXPECT_FALSE(c.header.is_response());
  EXPECT_EQ("echo", c.meta);
  EXPECT_EQ("hello", c.payload);
  EXPECT_EQ("WFT1", b.to_string());
}

TEST(WeftStdFrame, FirstBytesThatCannotBeWft1TryOthers) {
  EXPECT_EQ(PARSE_ERROR_TRY_OTHERS, ParseBytes("GET / HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(PARSE_ERROR_TRY_OTHERS, ParseBytes("X"));
  EXPECT_EQ(PARSE_ERROR_TRY_OTHERS, ParseBytes("WF"
                                               "X"));
  EXPECT_EQ(PARSE_ERROR_TRY_OTHERS, ParseBytes("WFT2" + std::string(40, '\0')));
  EXPECT_EQ(PARSE_ERROR_TRY_OTHERS, ParseBytes("wft1" + std::string(40, '\0')));
  // A prefix of the magic may still be weft_std.
  EXPECT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, ParseBytes("W"));
  EXPECT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, ParseBytes("WFT"));
  EXPECT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, ParseBytes("WFT1"));
}

TEST(WeftStdFrame, TruncationAtEveryByteIsNotEnoughData) {
  const std::string frame = Request(7, "method", std::string(100, 'p'));
  for (size_t len = 0; len < frame.size(); ++len) {
    IOBuf b;
    b.append(frame.substr(0, len));
    ParseResult r = ParseFrame(&b, nullptr, false, kAtServer);
    EXPECT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, r.error()) << "prefix of " << len;
    EXPECT_EQ(len, b.size());
  }
  EXPECT_EQ(PARSE_OK, ParseBytes(frame));
}

TEST(WeftStdFrame, AStreamFedOneByteAtATimeCutsTheSameFrames) {
  std::string stream;
  std::vector<Cut> want;
  for (uint64_t i = 0; i < 20; ++i) {
    const std::string method = "m" + std::to_string(i);
    const std::string payload(static_cast<size_t>(i * 37 % 300), static_cast<char>('a' + i));
    stream += Request(i * 1000003, method, payload);
    want.push_back({PARSE_OK, {}, method, payload});
    want.back().header.correlation_id = i * 1000003;
  }
  // Whole stream at once.
  std::vector<Cut> whole;
  {
    IOBuf b;
    b.append(stream);
    for (;;) {
      Cut c = ParseOne(&b);
      if (c.error != PARSE_OK) {
        EXPECT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, c.error);
        break;
      }
      whole.push_back(c);
    }
    EXPECT_TRUE(b.empty());
  }
  // One byte at a time, parsing after each.
  std::vector<Cut> trickled;
  IOBuf b;
  for (const char ch : stream) {
    b.push_back(ch);
    for (;;) {
      Cut c = ParseOne(&b);
      if (c.error != PARSE_OK) {
        ASSERT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, c.error);
        break;
      }
      trickled.push_back(c);
    }
  }
  EXPECT_TRUE(b.empty());
  ASSERT_EQ(want.size(), whole.size());
  ASSERT_EQ(want.size(), trickled.size());
  for (size_t i = 0; i < want.size(); ++i) {
    for (const auto* got : {&whole[i], &trickled[i]}) {
      EXPECT_EQ(want[i].header.correlation_id, got->header.correlation_id) << i;
      EXPECT_EQ(want[i].meta, got->meta) << i;
      EXPECT_EQ(want[i].payload, got->payload) << i;
    }
  }
}

TEST(WeftStdFrame, BodySizeExactlyMaxIsAllowedOneMoreIsTooBig) {
  ASSERT_EQ(64 * 1024 * 1024, max_body_size());  // the default of rpc.md
  const uint32_t max = static_cast<uint32_t>(max_body_size());
  // Only the header: a frame claiming max bytes is waited for (never
  // allocated), one claiming max + 1 is refused at once.
  EXPECT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, ParseBytes(Header(max, 1, 0, 4, 0) + "echo"));
  EXPECT_EQ(PARSE_ERROR_TOO_BIG_DATA, ParseBytes(Header(max + 1, 1, 0, 4, 0) + "echo"));
  EXPECT_EQ(PARSE_ERROR_TOO_BIG_DATA, ParseBytes(Header(0xffffffffu, 1, 0, 4, 0)));
}

TEST(WeftStdFrame, MetaSizeOverBodySizeIsAbsolutelyWrong) {
  EXPECT_EQ(PARSE_ERROR_ABSOLUTELY_WRONG, ParseBytes(Header(3, 1, 0, 4, 0) + "ech"));
  // Even a response (at a client).
  EXPECT_EQ(PARSE_ERROR_ABSOLUTELY_WRONG, ParseBytes(Header(0, 1, 1, 1, 5), nullptr));
  // meta_size == body_size is fine: an empty payload.
  EXPECT_EQ(PARSE_OK, ParseBytes(Header(4, 1, 0, 4, 0) + "echo"));
}

TEST(WeftStdFrame, RequestMethodNameIsOneTo255Bytes) {
  EXPECT_EQ(PARSE_ERROR_ABSOLUTELY_WRONG, ParseBytes(Header(5, 1, 0, 0, 0) + "hello"));
  EXPECT_EQ(PARSE_ERROR_ABSOLUTELY_WRONG,
            ParseBytes(Header(256, 1, 0, 256, 0) + std::string(256, 'm')));
  EXPECT_EQ(PARSE_OK, ParseBytes(Request(1, std::string(255, 'm'), "")));
  EXPECT_EQ(PARSE_OK, ParseBytes(Request(1, "m", "")));
  // Refused from the header alone, before the body arrived.
  EXPECT_EQ(PARSE_ERROR_ABSOLUTELY_WRONG, ParseBytes(Header(1000, 1, 0, 0, 0)));
}

TEST(WeftStdFrame, AResponseAtAServerIsAbsolutelyWrongAtAClientFine) {
  const std::string resp = Header(2, 9, kFlagResponse, 0, 0) + "ok";
  EXPECT_EQ(PARSE_ERROR_ABSOLUTELY_WRONG, ParseBytes(resp, kAtServer));
  IOBuf b;
  b.append(resp);
  Cut c = ParseOne(&b, nullptr);
  ASSERT_EQ(PARSE_OK, c.error);
  EXPECT_TRUE(c.header.is_response());
  EXPECT_EQ("ok", c.payload);
}

TEST(WeftStdFrame, OtherFlagBitsAndARequestsErrorCodeAreIgnored) {
  IOBuf b;
  b.append(Header(6, 3, 0xfffe, 4, 12345) + "echohi");
  Cut c = ParseOne(&b);
  ASSERT_EQ(PARSE_OK, c.error);
  EXPECT_FALSE(c.header.is_response());
  EXPECT_EQ("echo", c.meta);
  EXPECT_EQ("hi", c.payload);
}

TEST(WeftStdFrame, PackRequestThenParseRoundTrips) {
  IOBuf body;
  body.append("payload bytes");
  IOBuf out;
  Controller cntl;
  PackRequest(&out, 0xdeadbeefcafeull, "sleep", &cntl, body);
  EXPECT_FALSE(cntl.Failed());
  Cut c = ParseOne(&out);
  ASSERT_EQ(PARSE_OK, c.error);
  EXPECT_EQ(0xdeadbeefcafeull, c.header.correlation_id);
  EXPECT_EQ(0, c.header.error_code);
  EXPECT_EQ(0, c.header.flags);
  EXPECT_EQ("sleep", c.meta);
  EXPECT_EQ("payload bytes", c.payload);
  EXPECT_TRUE(out.empty());

  IOBuf none;
  PackRequest(&none, 1, "", &cntl, body);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(EREQUEST, cntl.ErrorCode());
  cntl.Reset();
  PackRequest(&none, 1, std::string(256, 'x').c_str(), &cntl, body);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(EREQUEST, cntl.ErrorCode());
}

TEST(WeftStdFrame, PackResponseCarriesPayloadOrErrorText) {
  IOBuf payload;
  payload.append("result");
  IOBuf ok;
  PackResponse(&ok, 5, 0, "", payload);
  Cut c = ParseOne(&ok, nullptr);
  ASSERT_EQ(PARSE_OK, c.error);
  EXPECT_TRUE(c.header.is_response());
  EXPECT_EQ(5u, c.header.correlation_id);
  EXPECT_EQ(0, c.header.error_code);
  EXPECT_EQ(0, c.header.meta_size);
  EXPECT_EQ("result", c.payload);

  IOBuf err;
  PackResponse(&err, 6, ENOMETHOD, "no method named 'x'", payload);
  c = ParseOne(&err, nullptr);
  ASSERT_EQ(PARSE_OK, c.error);
  EXPECT_EQ(ENOMETHOD, c.header.error_code);
  EXPECT_EQ("no method named 'x'", c.meta);
  EXPECT_EQ("", c.payload);  // errors carry no payload

  IOBuf noname;
  PackResponse(&noname, 7, ELIMIT, "", payload);
  c = ParseOne(&noname, nullptr);
  ASSERT_EQ(PARSE_OK, c.error);
  EXPECT_EQ(std::string(ErrorText(ELIMIT)), c.meta);  // never an empty text
}

}  // namespace
}  // namespace weft::rpc::weft_std
