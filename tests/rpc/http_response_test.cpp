// SerializeResponse byte for byte: the status line of every status the
// server emits (and of codes it has no phrase for), Content-Length at every
// digit count up to a multi-megabyte body, the field order, HEAD, the
// Connection field, and heads too long for the serializer's stack buffer.
// The expected bytes are built here with std::to_string and literals, never
// with the code under test.
#include "protocols/http/http_response.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace weft::rpc::http {
namespace {

std::string Serialize(const HttpResponse& resp, bool keep_alive = true, int version_minor = 1,
                      bool head_only = false) {
  IOBuf out;
  SerializeResponse(resp, keep_alive, version_minor, head_only, &out);
  return out.to_string();
}

std::string Expected(int status, const std::string& reason, size_t length,
                     const std::string& rest_of_head, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Length: " + std::to_string(length) + "\r\n" + rest_of_head + "\r\n" + body;
}

TEST(HttpResponse, StatusLineOfEveryStatusTheServerEmitsIsExact) {
  // The handlers' usual codes and every refusal the server answers itself.
  const std::vector<std::pair<int, std::string>> statuses = {
      {100, "Continue"},
      {200, "OK"},
      {201, "Created"},
      {204, "No Content"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {304, "Not Modified"},
      {400, "Bad Request"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {408, "Request Timeout"},
      {411, "Length Required"},
      {413, "Content Too Large"},
      {414, "URI Too Long"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {503, "Service Unavailable"},
      {505, "HTTP Version Not Supported"},
  };
  for (const auto& [status, reason] : statuses) {
    SCOPED_TRACE(status);
    EXPECT_STREQ(reason.c_str(), HttpReasonPhrase(status));
    HttpResponse resp;
    resp.status = status;
    resp.body.append("x\n");
    EXPECT_EQ(Expected(status, reason, 2, "Content-Type: text/plain\r\n", "x\n"), Serialize(resp));
  }
}

TEST(HttpResponse, StatusWithoutAPhraseIsWrittenAsItsNumber) {
  // A handler may set any int; it is written in decimal as given.
  for (const int status :
       {0, 7, 99, 299, 599, 999, 1000, 123456, -1, -404, 2147483647, -2147483647 - 1}) {
    SCOPED_TRACE(status);
    HttpResponse resp;
    resp.status = status;
    resp.content_type.clear();
    EXPECT_EQ(Expected(status, "Unknown", 0, "", ""), Serialize(resp));
  }
}

TEST(HttpResponse, ContentLengthIsExactAtEveryDigitCount) {
  // 0, 9, 10, 99, 100, ... and a body of several megabytes (the body is
  // shared, not copied, above the inline size: its bytes must still follow
  // the head exactly).
  std::vector<size_t> lengths = {0,     1,     9,      10,     99,      100,
                                 255,   256,   257,    999,    1000,    4095,
                                 4096,  8191,  8192,   9999,   10000,   65535,
                                 65536, 99999, 100000, 999999, 1000000, 3 * 1024 * 1024 + 7};
  for (const size_t n : lengths) {
    SCOPED_TRACE(n);
    std::string body(n, 'b');
    for (size_t i = 0; i < n; i += 997) body[i] = static_cast<char>('0' + i % 10);
    HttpResponse resp;
    resp.body.append(body);
    EXPECT_EQ(Expected(200, "OK", n, "Content-Type: text/plain\r\n", body), Serialize(resp));
    // HEAD: the same head, no body.
    EXPECT_EQ(Expected(200, "OK", n, "Content-Type: text/plain\r\n", ""),
              Serialize(resp, true, 1, true));
  }
}

TEST(HttpResponse, FieldsKeepTheirOrderAndConnectionComesLast) {
  HttpResponse resp;
  resp.status = 405;
  resp.content_type = "application/json";
  resp.headers.emplace_back("Allow", "GET, HEAD");
  resp.headers.emplace_back("X-A", "");
  resp.headers.emplace_back("X-B", "b");
  resp.body.append("{}");
  const std::string fields =
      "Content-Type: application/json\r\nAllow: GET, HEAD\r\nX-A: \r\nX-B: b\r\n";
  EXPECT_EQ(Expected(405, "Method Not Allowed", 2, fields, "{}"), Serialize(resp));
  EXPECT_EQ(Expected(405, "Method Not Allowed", 2, fields + "Connection: close\r\n", "{}"),
            Serialize(resp, false, 1));
  EXPECT_EQ(Expected(405, "Method Not Allowed", 2, fields + "Connection: close\r\n", "{}"),
            Serialize(resp, false, 0));
  EXPECT_EQ(Expected(405, "Method Not Allowed", 2, fields + "Connection: keep-alive\r\n", "{}"),
            Serialize(resp, true, 0));
  EXPECT_EQ(Expected(405, "Method Not Allowed", 2, fields + "Connection: keep-alive\r\n", ""),
            Serialize(resp, true, 0, true));
}

TEST(HttpResponse, HeadLongerThanTheStackBufferIsExact) {
  // Fields of every size around and far past any fixed buffer, with a small
  // body (which is copied behind the head when it fits).
  for (const size_t value_size :
       {0u, 1u, 100u, 200u, 255u, 256u, 300u, 500u, 511u, 512u, 1000u, 5000u, 20000u}) {
    SCOPED_TRACE(value_size);
    HttpResponse resp;
    resp.content_type = std::string(value_size, 't');
    // An empty Content-Type is left out.
    std::string fields = value_size == 0 ? "" : "Content-Type: " + resp.content_type + "\r\n";
    for (int i = 0; i < 5; ++i) {
      const std::string name = "X-Field-" + std::to_string(i);
      const std::string value(value_size / (i + 1), static_cast<char>('a' + i));
      resp.headers.emplace_back(name, value);
      fields += name + ": " + value + "\r\n";
    }
    resp.body.append("small body");
    EXPECT_EQ(Expected(200, "OK", 10, fields, "small body"), Serialize(resp));
    EXPECT_EQ(Expected(200, "OK", 10, fields + "Connection: close\r\n", "small body"),
              Serialize(resp, false));
  }
}

TEST(HttpResponse, AppendsToWhatTheOutputAlreadyHolds) {
  HttpResponse resp;
  resp.body.append("Hello, world!");
  IOBuf out;
  out.append("before|");
  SerializeResponse(resp, true, 1, false, &out);
  EXPECT_EQ("before|" + Expected(200, "OK", 13, "Content-Type: text/plain\r\n", "Hello, world!"),
            out.to_string());
  // The response is left as it was (a handler's response may be reused).
  EXPECT_EQ("Hello, world!", resp.body.to_string());
}

}  // namespace
}  // namespace weft::rpc::http
