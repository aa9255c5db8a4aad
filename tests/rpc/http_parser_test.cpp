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

// The refusal of an unpaired CR or LF in a head, as stated by RFC 9112
// 2.2 and written here independently of the parser: the head is up to the
// first CRLFCRLF, and its first CR not followed by LF or LF not preceded by
// CR is the reason.
const char* UnpairedCrOrLf(const std::string& bytes) {
  const size_t end = bytes.find("\r\n\r\n");
  if (end == std::string::npos) return nullptr;
  const std::string head = bytes.substr(0, end + 4);
  for (size_t i = 0; i < head.size(); ++i) {
    if (head[i] == '\n' && (i == 0 || head[i - 1] != '\r')) return "bare LF in head";
    if (head[i] == '\r' && (i + 1 == head.size() || head[i + 1] != '\n')) return "bare CR in head";
  }
  return nullptr;
}

TEST(HttpParser, UnpairedCrOrLfAnywhereInTheHeadIsRefusedWithItsReason) {
  const std::string base = "GET /x HTTP/1.1\r\nHost: a\r\nX-Y: zz\r\n\r\n";
  std::vector<std::string> cases;
  for (size_t i = 4; i < base.size(); ++i) {  // "GET " stays, so it is HTTP
    for (const char* c : {"\r", "\n", "\r\r", "\n\n", "\n\r"}) {
      cases.push_back(base.substr(0, i) + c + base.substr(i));  // inserted
      std::string replaced = base;
      replaced[i] = c[0];
      cases.push_back(replaced);
    }
  }
  int refused = 0;
  for (const std::string& bytes : cases) {
    const char* expect = UnpairedCrOrLf(bytes);
    if (expect == nullptr) continue;
    ++refused;
    // At once, and one byte at a time (the scan resumes across feeds).
    HttpRequestParser whole(SmallLimits());
    IOBuf buf;
    ASSERT_EQ(HttpRequestParser::kError, FeedAll(&whole, bytes, &buf)) << bytes;
    EXPECT_EQ(400, whole.error_status());
    EXPECT_STREQ(expect, whole.why()) << bytes;
    HttpRequestParser bytewise(SmallLimits());
    IOBuf in;
    HttpRequestParser::Status st = HttpRequestParser::kNeedMore;
    for (size_t k = 0; k < bytes.size() && st == HttpRequestParser::kNeedMore; ++k) {
      in.push_back(bytes[k]);
      st = bytewise.Feed(&in);
    }
    ASSERT_EQ(HttpRequestParser::kError, st) << bytes;
    EXPECT_STREQ(expect, bytewise.why()) << bytes;
  }
  EXPECT_GT(refused, 100);
  // Over the limit first: 431, whatever the bytes before.
  EXPECT_EQ(431, ErrorStatusOf("GET /\n HTTP/1.1\r\nX: " + std::string(5000, 'a')));
  // A reason found in one request is not carried to the next.
  HttpRequestParser p(SmallLimits());
  IOBuf buf;
  ASSERT_EQ(HttpRequestParser::kError, FeedAll(&p, "GET / HTTP/1.1\r\nA: \rb\r\n\r\n", &buf));
  p.Reset();
  EXPECT_EQ(HttpRequestParser::kDone, FeedAll(&p, "GET / HTTP/1.1\r\nA: b\r\n\r\n", &buf));
}

// Heads around --weft_http_max_head_bytes, fed at once, in chunks of 7
// bytes and one byte at a time: the scan skips runs of ordinary bytes, and
// a skip must stop at the limit exactly as the byte-by-byte scan would.
TEST(HttpParser, TheHeadLimitIsTheSameWhateverTheFeedSizes) {
  const size_t limit = SmallLimits().max_head_bytes;
  const std::string start = "GET / HTTP/1.1\r\nX: ";
  for (size_t len = limit - 3; len <= limit + 3; ++len) {
    const std::string bytes = start + std::string(len - start.size() - 4, 'a') + "\r\n\r\n";
    ASSERT_EQ(len, bytes.size());
    HttpRequestParser whole(SmallLimits());
    IOBuf buf;
    const HttpRequestParser::Status at_once = FeedAll(&whole, bytes, &buf);
    if (len <= limit) {
      EXPECT_EQ(HttpRequestParser::kDone, at_once) << len;
    }
    if (len >= limit + 2) {
      EXPECT_EQ(HttpRequestParser::kError, at_once) << len;
      EXPECT_EQ(431, whole.error_status()) << len;
    }
    for (size_t step : {size_t{7}, size_t{1}}) {
      HttpRequestParser piecewise(SmallLimits());
      IOBuf in;
      HttpRequestParser::Status st = HttpRequestParser::kNeedMore;
      for (size_t k = 0; k < bytes.size() && st == HttpRequestParser::kNeedMore; k += step) {
        in.append(bytes.substr(k, step));
        st = piecewise.Feed(&in);
      }
      EXPECT_EQ(at_once, st) << len << " bytes fed " << step << " at a time";
      if (st == HttpRequestParser::kError) {
        EXPECT_EQ(whole.error_status(), piecewise.error_status());
      }
    }
  }
}

// bytes as an IOBuf of two references that are not contiguous in memory,
// split at `at` (so the head cannot be read in place).
IOBuf SplitAt(const std::string& bytes, size_t at) {
  IOBuf first, gap, second;
  first.append(bytes.substr(0, at));
  gap.append("gap");  // keeps the second piece from continuing the first
  second.append(bytes.substr(at));
  first.append(second);
  return first;
}

TEST(HttpParser, HeadSplitAcrossBlocksParsesAsAtOnce) {
  const std::string req =
      "GET /a/b?x=1 HTTP/1.1\r\nHost: example\r\nX-Long: " + std::string(40, 'v') +
      "\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\n\r\n";
  for (size_t at = 1; at < req.size(); ++at) {
    SCOPED_TRACE(at);
    IOBuf buf = SplitAt(req, at);
    HttpRequestParser p(SmallLimits());
    HttpRequestParser::Status st;
    // The first piece alone may already hold the whole head.
    while ((st = p.Feed(&buf)) == HttpRequestParser::kNeedMore) {
      ASSERT_FALSE(buf.empty());
    }
    ASSERT_EQ(HttpRequestParser::kDone, st) << p.why();
    EXPECT_EQ("GET", p.head().method);
    EXPECT_EQ("/a/b?x=1", p.head().target);
    ASSERT_EQ(3u, p.head().headers.size());
    EXPECT_EQ("Host", p.head().headers[0].first);
    EXPECT_EQ("example", p.head().headers[0].second);
    EXPECT_EQ(std::string(40, 'v'), p.head().headers[1].second);
    EXPECT_EQ("abc", p.body().to_string());
    p.Reset();
    ASSERT_EQ(HttpRequestParser::kDone, p.Feed(&buf));
    EXPECT_EQ("/next", p.head().target);
    EXPECT_TRUE(buf.empty());
  }
}

TEST(HttpParser, MessageTakesTheRequestsFieldsAndLeavesTheParserClean) {
  const int server_tag = 1;
  struct Case {
    std::string bytes, method, path, query;
  };
  const std::vector<Case> cases = {
      {"GET / HTTP/1.1\r\n\r\n", "GET", "/", ""},
      {"GET /very/long/path/beyond/small/string/storage HTTP/1.1\r\n\r\n", "GET",
       "/very/long/path/beyond/small/string/storage", ""},
      {"GET /p?q=1&r HTTP/1.1\r\n\r\n", "GET", "/p", "q=1&r"},
      {"GET /p? HTTP/1.1\r\n\r\n", "GET", "/p", ""},
      {"OPTIONS * HTTP/1.1\r\n\r\n", "OPTIONS", "*", ""},
      {"GET http://h:1/abs/p?z HTTP/1.1\r\n\r\n", "GET", "/abs/p", "z"},
      {"GET https://h HTTP/1.1\r\n\r\n", "GET", "/", ""},
      {"PATCH /x HTTP/1.0\r\nA: 1\r\nB: two words\r\nA: 3\r\n\r\n", "PATCH", "/x", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.bytes);
    IOBuf buf;
    buf.append(c.bytes);
    ParseResult r = ParseHttp(&buf, nullptr, false, &server_tag);
    ASSERT_TRUE(r.is_ok());
    auto* msg = static_cast<HttpMessage*>(r.message());
    EXPECT_EQ(0, msg->error_status);
    EXPECT_EQ(c.method, msg->request.method);
    EXPECT_EQ(c.path, msg->request.path);
    EXPECT_EQ(c.query, msg->request.query);
    msg->Destroy();
  }
  // Fields in order, names as sent, through a parser reused across requests.
  HttpRequestParser p(SmallLimits());
  IOBuf buf;
  buf.append("GET /1 HTTP/1.1\r\nA: 1\r\nbB: two words\r\n\r\nGET /2 HTTP/1.1\r\nC: 3\r\n\r\n");
  ASSERT_EQ(HttpRequestParser::kDone, p.Feed(&buf));
  HttpRequestHead first = std::move(p.mutable_head());
  p.Reset();
  ASSERT_EQ(HttpRequestParser::kDone, p.Feed(&buf));
  EXPECT_EQ((std::vector<std::pair<std::string, std::string>>{{"A", "1"}, {"bB", "two words"}}),
            first.headers);
  EXPECT_EQ((std::vector<std::pair<std::string, std::string>>{{"C", "3"}}), p.head().headers);
  EXPECT_EQ("/2", p.head().target);
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
