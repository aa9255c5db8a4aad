// The HTTP/1.1 request parser (protocols/http/http_parser.h) and the
// protocol's stateless parse (ParseHttp with no connection): every refusal
// the issue lists, truncation at every byte, a stream fed one byte at a
// time, pipelined requests.
#include "protocols/http/http_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocols/http/http_protocol.h"

namespace weft::rpc::http {
namespace {

HttpParseLimits SmallLimits() {
  HttpParseLimits l;
  l.max_head_bytes = 4096;
  l.max_headers = 20;
  l.max_body_bytes = 1000;
  return l;
}

// Feeds all of `bytes` at once; returns the status, the parser left as is.
HttpRequestParser::Status FeedAll(HttpRequestParser* p, const std::string& bytes, IOBuf* rest) {
  rest->clear();
  rest->append(bytes);
  return p->Feed(rest);
}

int ErrorStatusOf(const std::string& bytes) {
  HttpRequestParser p(SmallLimits());
  IOBuf buf;
  const auto st = FeedAll(&p, bytes, &buf);
  if (st != HttpRequestParser::kError) return -static_cast<int>(st) - 1;
  return p.error_status();
}

TEST(HttpParser, SimpleGetWithHeaders) {
  HttpRequestParser p(SmallLimits());
  IOBuf buf;
  ASSERT_EQ(HttpRequestParser::kDone,
            FeedAll(&p, "GET /vars?x=1 HTTP/1.1\r\nHost: a\r\nX-A:  b c \r\n\r\n", &buf));
  EXPECT_TRUE(buf.empty());
  EXPECT_EQ("GET", p.head().method);
  EXPECT_EQ("/vars?x=1", p.head().target);
  EXPECT_EQ(1, p.head().version_minor);
  ASSERT_EQ(2u, p.head().headers.size());
  EXPECT_EQ("X-A", p.head().headers[1].first);
  EXPECT_EQ("b c", p.head().headers[1].second);
  EXPECT_TRUE(p.head().keep_alive);
  EXPECT_EQ(-1, p.head().content_length);
}

TEST(HttpParser, KeepAliveRulesOf10And11) {
  struct Case {
    const char* req;
    bool keep_alive;
  } cases[] = {
      {"GET / HTTP/1.1\r\n\r\n", true},
      {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false},
      {"GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n", false},
      {"GET / HTTP/1.0\r\n\r\n", false},
      {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
  };
  for (const Case& c : cases) {
    HttpRequestParser p(SmallLimits());
    IOBuf buf;
    ASSERT_EQ(HttpRequestParser::kDone, FeedAll(&p, c.req, &buf)) << c.req;
    EXPECT_EQ(c.keep_alive, p.head().keep_alive) << c.req;
  }
}

TEST(HttpParser, ContentLengthAndChunkedBodies) {
  {
    HttpRequestParser p(SmallLimits());
    IOBuf buf;
    ASSERT_EQ(HttpRequestParser::kDone,
              FeedAll(&p, "POST /e HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET", &buf));
    EXPECT_EQ("hello", p.body().to_string());
    EXPECT_EQ("GET", buf.to_string());  // the next request's bytes stay
  }
  {
    HttpRequestParser p(SmallLimits());
    IOBuf buf;
    ASSERT_EQ(HttpRequestParser::kDone,
              FeedAll(&p,
                      "POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-T: 1\r\n\r\n",
                      &buf));
    EXPECT_TRUE(p.head().chunked);
    EXPECT_EQ("hello, world!!!", p.body().to_string());
    EXPECT_TRUE(buf.empty());
  }
  {
    // Identical Content-Length values are one length (RFC 9112 6.3).
    HttpRequestParser p(SmallLimits());
    IOBuf buf;
    ASSERT_EQ(HttpRequestParser::kDone,
              FeedAll(&p, "POST / HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nhi",
                      &buf));
    EXPECT_EQ("hi", p.body().to_string());
  }
}

TEST(HttpParser, MalformedContentLengthIs400) {
  EXPECT_EQ(400, ErrorStatusOf("POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("POST / HTTP/1.1\r\nContent-Length: 1e30\r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"));
  EXPECT_EQ(400,
            ErrorStatusOf("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("POST / HTTP/1.1\r\nContent-Length: 5\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n"));
}

TEST(HttpParser, BodyOverTheLimitIs413FromTheHeadersAlone) {
  // No body byte was sent: the size is decided from the head.
  EXPECT_EQ(413, ErrorStatusOf("POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n"));
  EXPECT_EQ(413,
            ErrorStatusOf("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"));
  EXPECT_EQ(413, ErrorStatusOf("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n"));
  EXPECT_EQ(413, ErrorStatusOf("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "1f4\r\n" +
                               std::string(500, 'a') + "\r\n1f5\r\n"));
  // Exactly the limit is allowed.
  HttpRequestParser p(SmallLimits());
  IOBuf buf;
  EXPECT_EQ(HttpRequestParser::kNeedMore,
            FeedAll(&p, "POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n", &buf));
}

TEST(HttpParser, HeaderFloodsAre431) {
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 21; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(431, ErrorStatusOf(many + "\r\n"));
  // A head that never ends is refused once it passes the limit, without
  // waiting for its end.
  EXPECT_EQ(431, ErrorStatusOf("GET / HTTP/1.1\r\nX-Big: " + std::string(5000, 'a')));
  EXPECT_EQ(431, ErrorStatusOf("GET /" + std::string(5000, 'a')));
  // Trailers count against the same limit.
  EXPECT_EQ(431, ErrorStatusOf("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " +
                               std::string(5000, 'a')));
}

TEST(HttpParser, OtherMalformedRequests) {
  EXPECT_EQ(400, ErrorStatusOf("GET / HTTP/1.1\nHost: a\r\n\r\n"));          // bare LF
  EXPECT_EQ(400, ErrorStatusOf("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"));     // bare CR
  EXPECT_EQ(400, ErrorStatusOf("GET / HTTP/1.1\r\nHost : a\r\n\r\n"));       // space before ':'
  EXPECT_EQ(400, ErrorStatusOf("GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n"));  // obs-fold
  EXPECT_EQ(400, ErrorStatusOf("GET / HTTP/1.1\r\nNoColon\r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("GET  / HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("GET / HTTP/1.1 x\r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("GET x HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("GET / HTTQ/1.1\r\n\r\n"));
  EXPECT_EQ(505, ErrorStatusOf("GET / HTTP/2.0\r\n\r\n"));
  EXPECT_EQ(501, ErrorStatusOf("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"));
  EXPECT_EQ(400, ErrorStatusOf("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "2\r\nhiXX"));
  EXPECT_EQ(400, ErrorStatusOf("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "11111111111111111\r\n"));
}

TEST(HttpParser, NotHttpIsLeftToOtherProtocols) {
  for (const char* bytes : {"WFT1abcd", "*1\r\n$4\r\nPING\r\n", "get / HTTP/1.1", "GETX /",
                            "\r\nGET / HTTP/1.1\r\n\r\n"}) {
    HttpRequestParser p(SmallLimits());
    IOBuf buf;
    EXPECT_EQ(HttpRequestParser::kNotHttp, FeedAll(&p, bytes, &buf)) << bytes;
    EXPECT_EQ(std::string(bytes), buf.to_string());  // nothing consumed
  }
  // Prefixes of a method are not decided yet.
  HttpRequestParser p(SmallLimits());
  IOBuf buf;
  EXPECT_EQ(HttpRequestParser::kNeedMore, FeedAll(&p, "DELE", &buf));
}

const std::vector<std::string>& ValidRequests() {
  static const std::vector<std::string> v = {
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
      "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n4;e=f\r\ndefg\r\n0\r\nT: v\r\n\r\n",
      "HEAD /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
  };
  return v;
}

TEST(HttpParser, TruncatedAtEveryByteNeedsMore) {
  const int server_tag = 1;  // ParseHttp's arg: non-null means a server
  for (const std::string& req : ValidRequests()) {
    for (size_t k = 1; k < req.size(); ++k) {
      IOBuf buf;
      buf.append(req.substr(0, k));
      ParseResult r = ParseHttp(&buf, nullptr, false, &server_tag);
      ASSERT_EQ(PARSE_ERROR_NOT_ENOUGH_DATA, r.error()) << k << " of " << req;
      EXPECT_EQ(k, buf.size());  // stateless parse consumes nothing then
    }
    IOBuf buf;
    buf.append(req);
    ParseResult r = ParseHttp(&buf, nullptr, false, &server_tag);
    ASSERT_TRUE(r.is_ok()) << req;
    auto* msg = static_cast<HttpMessage*>(r.message());
    EXPECT_EQ(0, msg->error_status);
    EXPECT_TRUE(buf.empty());
    msg->Destroy();
  }
}

TEST(HttpParser, FedOneByteAtATime) {
  std::string stream;
  for (const std::string& req : ValidRequests()) stream += req;
  HttpRequestParser p(SmallLimits());
  IOBuf buf;
  std::vector<std::string> bodies, methods;
  for (char c : stream) {
    buf.push_back(c);
    const auto st = p.Feed(&buf);
    ASSERT_NE(HttpRequestParser::kError, st) << p.why();
    ASSERT_NE(HttpRequestParser::kNotHttp, st);
    if (st == HttpRequestParser::kDone) {
      methods.push_back(p.head().method);
      bodies.push_back(p.body().to_string());
      p.Reset();
    }
  }
  EXPECT_TRUE(buf.empty());
  ASSERT_EQ(4u, methods.size());
  EXPECT_EQ((std::vector<std::string>{"GET", "POST", "POST", "HEAD"}), methods);
  EXPECT_EQ((std::vector<std::string>{"", "hello world", "abcdefg", ""}), bodies);
}

TEST(HttpParser, PipelinedRequestsComeOutInOrder) {
  HttpRequestParser p(SmallLimits());
  IOBuf buf;
  for (int i = 0; i < 3; ++i) {
    buf.append("GET /" + std::to_string(i) + " HTTP/1.1\r\n\r\n\r\n");  // CRLF between: skipped
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(HttpRequestParser::kDone, p.Feed(&buf));
    EXPECT_EQ("/" + std::to_string(i), p.head().target);
    p.Reset();
  }
  EXPECT_EQ(HttpRequestParser::kNeedMore, p.Feed(&buf));
  EXPECT_TRUE(buf.empty());
}

TEST(HttpParser, StatelessParseAnswersRefusalsAsMessages) {
  const int server_tag = 1;
  IOBuf buf;
  buf.append("POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\nrest");
  ParseResult r = ParseHttp(&buf, nullptr, false, &server_tag);
  ASSERT_TRUE(r.is_ok());
  auto* msg = static_cast<HttpMessage*>(r.message());
  EXPECT_EQ(400, msg->error_status);
  EXPECT_FALSE(msg->keep_alive);
  EXPECT_TRUE(buf.empty());
  msg->Destroy();
  // A client's connection (arg nullptr) never speaks HTTP here.
  buf.append("GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(PARSE_ERROR_TRY_OTHERS, ParseHttp(&buf, nullptr, false, nullptr).error());
}

TEST(HttpParser, SerializedResponses) {
  HttpResponse resp;
  resp.body.append("Hello, world!");
  IOBuf out;
  SerializeResponse(resp, true, 1, false, &out);
  EXPECT_EQ(
      "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world!",
      out.to_string());
  out.clear();
  SerializeResponse(resp, false, 1, true, &out);
  EXPECT_EQ(
      "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\nConnection: "
      "close\r\n\r\n",
      out.to_string());
  out.clear();
  SerializeResponse(resp, true, 0, true, &out);
  EXPECT_NE(std::string::npos, out.to_string().find("Connection: keep-alive\r\n"));
}

}  // namespace
}  // namespace weft::rpc::http
