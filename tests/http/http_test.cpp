// Tests of the HTTP request parser and the HTTP server. Server tests bind port 0 on
// loopback and talk to it over real sockets with a small client below. Waits have generous
// bounds only so that a bug fails the test instead of hanging it; no test asserts a duration.
#include <kodo/host/error.hpp>
#include "core/http_parser.hpp"
#include "core/http_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace kodo {
namespace {

using namespace std::chrono_literals;

ParseResult parse(std::string_view text, HttpRequest &req, const HttpLimits &limits = {}) {
  return parse_http_request(text, limits, req);
}

// ---------------------------------------------------------------------------------------
// Parser

TEST(HttpParser, ParsesGetWithQueryAndHeaders) {
  std::string text =
      "GET /outputs/status/abc%20def?x=1&name=a+b&plus=%2B HTTP/1.1\r\n"
      "Host: localhost\r\n"
      "X-Thing:   spaced value  \r\n"
      "ACCEPT: text/event-stream\r\n"
      "\r\n";
  HttpRequest req;
  ParseResult r = parse(text, req);
  ASSERT_EQ(r.status, ParseStatus::Complete) << r.error;
  EXPECT_EQ(r.consumed, text.size());
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.target, "/outputs/status/abc%20def?x=1&name=a+b&plus=%2B");
  EXPECT_EQ(req.path, "/outputs/status/abc def");
  EXPECT_EQ(req.raw_query, "x=1&name=a+b&plus=%2B");
  EXPECT_EQ(req.query_param("name"), "a b");
  EXPECT_EQ(req.query_param("plus"), "+");
  ASSERT_EQ(req.headers.size(), 3u);
  EXPECT_EQ(req.headers[1].first, "x-thing");
  EXPECT_EQ(req.headers[1].second, "spaced value");
  ASSERT_NE(req.header("Accept"), nullptr);
  EXPECT_EQ(*req.header("accept"), "text/event-stream");
  EXPECT_EQ(req.header("missing"), nullptr);
  EXPECT_TRUE(req.keep_alive);
  EXPECT_EQ(req.http_minor, 1);
  EXPECT_TRUE(req.body.empty());
}

TEST(HttpParser, KeepAliveSemantics) {
  HttpRequest req;
  ASSERT_EQ(parse("GET / HTTP/1.0\r\n\r\n", req).status, ParseStatus::Complete);
  EXPECT_FALSE(req.keep_alive);
  EXPECT_EQ(req.http_minor, 0);
  ASSERT_EQ(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", req).status,
            ParseStatus::Complete);
  EXPECT_TRUE(req.keep_alive);
  ASSERT_EQ(parse("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n", req).status,
            ParseStatus::Complete);
  EXPECT_FALSE(req.keep_alive);
  ASSERT_EQ(parse("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", req).status,
            ParseStatus::Complete);
  EXPECT_TRUE(req.keep_alive);
}

void expect_byte_by_byte(const std::string &text, const std::string &body) {
  HttpRequest req;
  for (size_t n = 0; n < text.size(); ++n) {
    ParseResult r = parse(std::string_view(text).substr(0, n), req);
    ASSERT_EQ(r.status, ParseStatus::Incomplete) << "at " << n << ": " << r.error;
  }
  ParseResult r = parse(text, req);
  ASSERT_EQ(r.status, ParseStatus::Complete) << r.error;
  EXPECT_EQ(r.consumed, text.size());
  EXPECT_EQ(req.body, body);
}

TEST(HttpParser, PartialInputByteByByte) {
  expect_byte_by_byte("POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "hello");
  expect_byte_by_byte(
      "POST /x HTTP/1.1\r\nTransfer-Encoding: "
      "chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
      "abcde");
  expect_byte_by_byte("GET / HTTP/1.1\r\nHost: h\r\n\r\n", "");
}

TEST(HttpParser, Pipelined) {
  std::string a = "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz";
  std::string b = "GET /b?q=1 HTTP/1.1\r\n\r\n";
  std::string c = "GET /c HTTP/1.1\r\nConnection: close\r\n\r\n";
  std::string all = a + b + c;
  HttpRequest req;
  ParseResult r = parse(all, req);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, a.size());
  EXPECT_EQ(req.path, "/a");
  EXPECT_EQ(req.body, "xyz");
  std::string_view rest = std::string_view(all).substr(r.consumed);
  r = parse(rest, req);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, b.size());
  EXPECT_EQ(req.path, "/b");
  EXPECT_EQ(req.query_param("q"), "1");
  rest = rest.substr(r.consumed);
  r = parse(rest, req);
  ASSERT_EQ(r.status, ParseStatus::Complete);
  EXPECT_EQ(r.consumed, c.size());
  EXPECT_FALSE(req.keep_alive);
}

TEST(HttpParser, ChunkedWithExtensionsTrailersAndBareLfRefused) {
  HttpRequest req;
  std::string text =
      "POST /c HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
      "A ; name=value\r\n0123456789\r\n"
      "1\r\nZ\r\n"
      "0\r\nX-Trailer: yes\r\n\r\n"
      "GET /next HTTP/1.1\r\n\r\n";
  ParseResult r = parse(text, req);
  ASSERT_EQ(r.status, ParseStatus::Complete) << r.error;
  EXPECT_EQ(req.body, "0123456789Z");
  EXPECT_EQ(text.substr(r.consumed), "GET /next HTTP/1.1\r\n\r\n");

  // A bare LF where CRLF is required is refused, in the head and inside a chunked body:
  // a proxy reading it differently would let a second request be smuggled in.
  for (const char *lf :
       {"POST /c HTTP/1.1\nTransfer-Encoding: chunked\n\n4\r\nwxyz\r\n0\r\n\r\n",
        "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\nwxyz\r\n0\r\n\r\n",
        "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\n0\r\n\r\n",
        "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\n\n",
        "GET / HTTP/1.1\r\nHost: h\n\r\n"}) {
    // Never accepted: refused at once, or (a bare LF where the last CRLF belongs) never
    // complete, so the body timeout ends it.
    r = parse(lf, req);
    EXPECT_NE(r.status, ParseStatus::Complete) << lf;
    if (r.status == ParseStatus::Error) {
      EXPECT_EQ(r.http_status, 400) << lf;
    }
  }
}

TEST(HttpParser, BadChunkedFraming) {
  HttpRequest req;
  const char *bad[] = {
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n1\r\nz\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3 x\r\nabc\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
  };
  for (const char *t : bad) {
    ParseResult r = parse(t, req);
    EXPECT_EQ(r.status, ParseStatus::Error) << t;
    EXPECT_EQ(r.http_status, 400) << t;
    EXPECT_FALSE(r.error.empty());
  }
  std::string huge =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n";
  ParseResult r = parse(huge, req);
  EXPECT_EQ(r.status, ParseStatus::Error);
  EXPECT_TRUE(r.http_status == 400 || r.http_status == 413) << r.error;
}

TEST(HttpParser, OversizedHeaderIs431) {
  HttpLimits limits;
  limits.max_header_bytes = 256;
  HttpRequest req;
  std::string big = "GET / HTTP/1.1\r\nX-Big: " + std::string(400, 'a') + "\r\n\r\n";
  ParseResult r = parse(big, req, limits);
  EXPECT_EQ(r.status, ParseStatus::Error);
  EXPECT_EQ(r.http_status, 431);
  EXPECT_NE(r.error.find("256"), std::string::npos) << r.error;
  // Without the end in sight: refused as soon as the limit is passed, not buffered on.
  r = parse(std::string_view(big).substr(0, 300), req, limits);
  EXPECT_EQ(r.http_status, 431);
  r = parse("GET /" + std::string(300, 'p'), req, limits);
  EXPECT_EQ(r.http_status, 431);

  limits = HttpLimits();
  limits.max_headers = 3;
  r = parse("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", req, limits);
  EXPECT_EQ(r.http_status, 431);
  r = parse("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", req, limits);
  EXPECT_EQ(r.status, ParseStatus::Complete);
}

TEST(HttpParser, OversizedBodyIs413) {
  HttpLimits limits;
  limits.max_body_bytes = 10;
  HttpRequest req;
  // Refused from the headers alone, before any of the body arrives.
  ParseResult r = parse("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", req, limits);
  EXPECT_EQ(r.http_status, 413);
  r = parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n", req, limits);
  EXPECT_EQ(r.http_status, 400);  // not a number Beast can hold: invalid
  r = parse("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", req, limits);
  EXPECT_EQ(r.status, ParseStatus::Complete);
  r = parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\n", req,
            limits);
  EXPECT_EQ(r.http_status, 413);
}

TEST(HttpParser, BadMethodAndVersion) {
  HttpRequest req;
  struct Case {
    const char *text;
    int status;
  } cases[] = {
      {"G(T / HTTP/1.1\r\n\r\n", 400},  {"FROB / HTTP/1.1\r\n\r\n", 501},
      {"get / HTTP/1.1\r\n\r\n", 501},  {"CONNECT host:443 HTTP/1.1\r\n\r\n", 501},
      {"GET / HTTP/2.0\r\n\r\n", 400},  // Beast reads only HTTP/1.x
      {"GET / HTTP/1.2\r\n\r\n", 400},  {"GET / HTTP/1.x\r\n\r\n", 400},
      {"GET / http/1.1\r\n\r\n", 400},  {"GET /\r\n\r\n", 400},
      {"GET  / HTTP/1.1\r\n\r\n", 400}, {"GET / HTTP/1.1 x\r\n\r\n", 400},
      {" GET / HTTP/1.1\r\n\r\n", 400}, {"GET nothing HTTP/1.1\r\n\r\n", 400},
      {"GET * HTTP/1.1\r\n\r\n", 400},
  };
  for (const auto &c : cases) {
    ParseResult r = parse(c.text, req);
    EXPECT_EQ(r.status, ParseStatus::Error) << c.text;
    EXPECT_EQ(r.http_status, c.status) << c.text << " -> " << r.error;
    EXPECT_FALSE(r.error.empty());
  }
  ASSERT_EQ(parse("OPTIONS * HTTP/1.1\r\n\r\n", req).status, ParseStatus::Complete);
  EXPECT_EQ(req.path, "*");
}

TEST(HttpParser, BadPercentEncodingAndNul) {
  HttpRequest req;
  for (const char *t :
       {"GET /a%zz HTTP/1.1\r\n\r\n", "GET /a%2 HTTP/1.1\r\n\r\n", "GET /a% HTTP/1.1\r\n\r\n",
        "GET /a?x=%g1 HTTP/1.1\r\n\r\n", "GET /a?%=1 HTTP/1.1\r\n\r\n",
        "GET /a%00b HTTP/1.1\r\n\r\n", "GET /a?x=%00 HTTP/1.1\r\n\r\n"}) {
    ParseResult r = parse(t, req);
    EXPECT_EQ(r.status, ParseStatus::Error) << t;
    EXPECT_EQ(r.http_status, 400) << t;
  }
  // A raw NUL (or any control byte) in the request line is refused too.
  std::string raw("GET /a\0b HTTP/1.1\r\n\r\n", 22);
  EXPECT_EQ(parse(raw, req).http_status, 400);
}

TEST(HttpParser, QueryDecoding) {
  HttpRequest req;
  ASSERT_EQ(parse("GET /p?a=1&b=x+y%21&&c&d=&a=2&e=%3D%26#frag HTTP/1.1\r\n\r\n", req).status,
            ParseStatus::Complete);
  EXPECT_EQ(req.raw_query, "a=1&b=x+y%21&&c&d=&a=2&e=%3D%26");
  ASSERT_EQ(req.query.size(), 6u);
  EXPECT_EQ(req.query_param("a"), "1");  // the first one wins
  EXPECT_EQ(req.query[4].second, "2");
  EXPECT_EQ(req.query_param("b"), "x y!");
  EXPECT_EQ(req.query_param("c"), "");
  EXPECT_EQ(req.query_param("d"), "");
  EXPECT_EQ(req.query_param("e"), "=&");
  EXPECT_EQ(req.query_param("zzz"), std::nullopt);
  // '+' in a path is a plus.
  ASSERT_EQ(parse("GET /a+b HTTP/1.1\r\n\r\n", req).status, ParseStatus::Complete);
  EXPECT_EQ(req.path, "/a+b");
}

TEST(HttpParser, AbsoluteFormTarget) {
  HttpRequest req;
  ASSERT_EQ(parse("GET http://example.com:3370/x/y?z=1 HTTP/1.1\r\n\r\n", req).status,
            ParseStatus::Complete);
  EXPECT_EQ(req.path, "/x/y");
  EXPECT_EQ(req.query_param("z"), "1");
  ASSERT_EQ(parse("GET http://example.com HTTP/1.1\r\n\r\n", req).status, ParseStatus::Complete);
  EXPECT_EQ(req.path, "/");
  ASSERT_EQ(parse("GET http://example.com?q=2 HTTP/1.1\r\n\r\n", req).status,
            ParseStatus::Complete);
  EXPECT_EQ(req.path, "/");
  EXPECT_EQ(req.query_param("q"), "2");
  EXPECT_EQ(parse("GET http:///x HTTP/1.1\r\n\r\n", req).http_status, 400);
  EXPECT_EQ(parse("GET ftp://h/x HTTP/1.1\r\n\r\n", req).http_status, 400);
}

TEST(HttpParser, FramingConflictsAndBadHeaders) {
  HttpRequest req;
  struct Case {
    const char *text;
    int status;
  } cases[] = {
      {"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
      {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nName : x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n: empty\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nA: x\ry\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nA: x\x01y\r\n\r\n", 400},
      {"\rGET / HTTP/1.1\r\n\r\n", 400},
      {"\r\n\nPOST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok", 400},
  };
  for (const auto &c : cases) {
    ParseResult r = parse(c.text, req);
    EXPECT_EQ(r.status, ParseStatus::Error) << c.text;
    EXPECT_EQ(r.http_status, c.status) << c.text << " -> " << r.error;
  }
  // An obsolete folded line becomes a space (RFC 9112 5.2), never a line break.
  ParseResult r = parse("GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n", req);
  if (r.status == ParseStatus::Complete) {
    ASSERT_NE(req.header("a"), nullptr);
    EXPECT_EQ(req.header("a")->find_first_of("\r\n"), std::string::npos);
  } else {
    EXPECT_EQ(r.http_status, 400);
  }
  // Non-ASCII (obs-text) in a value is passed through.
  r = parse("GET / HTTP/1.1\r\nX-Name: J\xc3\xb6rg\r\n\r\n", req);
  ASSERT_EQ(r.status, ParseStatus::Complete) << r.error;
  EXPECT_EQ(*req.header("x-name"), "J\xc3\xb6rg");
}

// Mutated and random inputs: the parser must never crash, and its results must stay
// self-consistent. (The real fuzzer comes later; this keeps the obvious cases honest.)
TEST(HttpParser, MutatedInputsStayConsistent) {
  const std::vector<std::string> seeds = {
      "GET /a/b%20c?x=1&y=%2B+z HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
      "POST /p HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody",
      "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nbody\r\n0\r\nT: v\r\n\r\n",
      "GET http://h:1/x?q HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
  };
  HttpLimits small;
  small.max_header_bytes = 64;
  small.max_body_bytes = 8;
  small.max_headers = 2;
  const HttpLimits limits_set[] = {HttpLimits(), small};
  std::mt19937 rng(12345);
  HttpRequest req;
  for (int iter = 0; iter < 30000; ++iter) {
    std::string s = seeds[rng() % seeds.size()];
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      size_t at = rng() % s.size();
      switch (rng() % 5) {
        case 0: s[at] = static_cast<char>(rng() & 0xff); break;
        case 1: s.insert(at, 1, static_cast<char>(rng() & 0xff)); break;
        case 2: s.erase(at, 1 + rng() % 3); break;
        case 3: s.resize(at); break;
        default: s.insert(at, s.substr(at, rng() % 16)); break;
      }
    }
    if (iter % 10 == 0) {  // and some pure noise
      s.resize(rng() % 200);
      for (char &c : s) c = static_cast<char>(rng() & 0xff);
    }
    for (const HttpLimits &limits : limits_set) {
      ParseResult r = parse_http_request(s, limits, req);
      switch (r.status) {
        case ParseStatus::Complete:
          ASSERT_GT(r.consumed, 0u);
          ASSERT_LE(r.consumed, s.size());
          ASSERT_LE(req.body.size(), limits.max_body_bytes);
          ASSERT_EQ(req.path.find('\0'), std::string::npos);
          break;
        case ParseStatus::Incomplete: break;
        case ParseStatus::Error:
          ASSERT_TRUE(r.http_status == 400 || r.http_status == 413 || r.http_status == 431 ||
                      r.http_status == 501 || r.http_status == 505)
              << r.http_status;
          ASSERT_FALSE(r.error.empty());
          for (char c : json_escape(r.error)) ASSERT_GE(static_cast<unsigned char>(c), 0x20u);
          break;
      }
    }
  }
}

TEST(HttpParser, PercentDecode) {
  bool ok = false;
  EXPECT_EQ(percent_decode("a%41%6a+b", false, ok), "aAj+b");
  EXPECT_TRUE(ok);
  EXPECT_EQ(percent_decode("a+b", true, ok), "a b");
  EXPECT_TRUE(ok);
  percent_decode("%4", false, ok);
  EXPECT_FALSE(ok);
  percent_decode("%x1", false, ok);
  EXPECT_FALSE(ok);
  EXPECT_EQ(percent_decode("", true, ok), "");
  EXPECT_TRUE(ok);
}

TEST(HttpParser, JsonEscape) {
  EXPECT_EQ(json_escape("a\"b\\c\n\t\x01"), "a\\\"b\\\\c\\n\\t\\u0001");
  EXPECT_EQ(json_escape("J\xc3\xb6rg \xe2\x82\xac \xf0\x9f\x98\x80"),
            "J\xc3\xb6rg \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(json_escape("bad \xff \xc3"), "bad \\ufffd \\ufffd");
  EXPECT_EQ(json_escape("\xc0\xaf"), "\\ufffd\\ufffd");             // overlong
  EXPECT_EQ(json_escape("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd");  // surrogate
  EXPECT_EQ(json_escape(std::string("nul\0", 4)), "nul\\u0000");
}

TEST(HttpServerAddress, ParsesForms) {
  ListenAddress a = parse_listen_address("127.0.0.1:3370");
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 3370);
  a = parse_listen_address("http://localhost:8080/");
  EXPECT_EQ(a.host, "localhost");
  EXPECT_EQ(a.port, 8080);
  a = parse_listen_address("[::1]:0");
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 0);
  a = parse_listen_address(":3370");
  EXPECT_EQ(a.host, "");
  for (const char *bad : {"", "localhost", "host:", "host:99999", "host:12a", "::1:80", "[::1]",
                          "[::1:80", "https://h:1", "http://h:1/path", "ftp://h:1"}) {
    try {
      parse_listen_address(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error &e) {
      EXPECT_EQ(e.code(), KODO_ERR_INVALID_ARGUMENT);
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos)
          << e.what();
    }
  }
}

// ---------------------------------------------------------------------------------------
// A minimal blocking HTTP client for the server tests.

struct Response {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string &name) const {
    for (const auto &h : headers)
      if (h.first == name) return h.second;
    return {};
  }
};

class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0)
      throw std::runtime_error("connect failed");
  }
  ~Client() { close(); }
  int fd() const { return fd_; }
  Client(const Client &) = delete;
  Client &operator=(const Client &) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads more bytes into the pending buffer. False on EOF, error or timeout.
  bool fill(int timeout_ms = 10000) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[8192];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    pending_.append(buf, static_cast<size_t>(n));
    return true;
  }

  // Reads until the pending buffer contains needle (or the peer closes / times out).
  bool read_until(const std::string &needle, int timeout_ms = 10000) {
    while (pending_.find(needle) == std::string::npos)
      if (!fill(timeout_ms)) return false;
    return true;
  }

  // True once the server has closed the connection (all pending data is kept).
  bool read_to_eof(int timeout_ms = 10000) {
    while (!eof_)
      if (!fill(timeout_ms) && !eof_) return false;
    return true;
  }

  // Reads one response (skipping 1xx ones, which are recorded in interim).
  bool read_response(Response &out, bool head_request = false) {
    while (true) {
      out = Response();
      if (!read_until("\r\n\r\n")) return false;
      size_t end = pending_.find("\r\n\r\n");
      std::string head = pending_.substr(0, end);
      pending_.erase(0, end + 4);
      size_t line_end = head.find("\r\n");
      std::string status_line = head.substr(0, line_end);
      if (status_line.compare(0, 9, "HTTP/1.1 ") != 0) return false;
      out.status = std::stoi(status_line.substr(9, 3));
      size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
      while (pos < head.size()) {
        size_t e = head.find("\r\n", pos);
        if (e == std::string::npos) e = head.size();
        std::string line = head.substr(pos, e - pos);
        size_t colon = line.find(':');
        std::string name = line.substr(0, colon);
        for (char &c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        out.headers.emplace_back(name, value);
        pos = e + 2;
      }
      if (out.status >= 100 && out.status < 200) {
        interim.push_back(out.status);
        continue;
      }
      if (head_request || out.status == 204 || out.status == 304) return true;
      if (out.header("transfer-encoding") == "chunked") {
        while (true) {
          if (!read_until("\r\n")) return false;
          size_t e = pending_.find("\r\n");
          size_t size = std::stoul(pending_.substr(0, e), nullptr, 16);
          while (pending_.size() < e + 2 + size + 2)
            if (!fill()) return false;
          out.body += pending_.substr(e + 2, size);
          pending_.erase(0, e + 2 + size + 2);
          if (size == 0) return true;
        }
      }
      std::string length = out.header("content-length");
      if (!length.empty()) {
        size_t n = std::stoul(length);
        while (pending_.size() < n)
          if (!fill()) return false;
        out.body = pending_.substr(0, n);
        pending_.erase(0, n);
        return true;
      }
      read_to_eof();  // close-delimited
      out.body = pending_;
      pending_.clear();
      return true;
    }
  }

  std::string pending_;
  std::vector<int> interim;

 private:
  int fd_ = -1;
  bool eof_ = false;
};

// A flag that a test can wait on with a bound.
class Signal {
 public:
  void set() {
    std::lock_guard<std::mutex> lock(mu_);
    set_ = true;
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds bound = 10s) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, bound, [&] { return set_; });
  }
  bool is_set() {
    std::lock_guard<std::mutex> lock(mu_);
    return set_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

HttpServer::Options local_options() {
  HttpServer::Options o;
  o.address = "127.0.0.1:0";
  return o;
}

std::string get(const std::string &path, const std::string &extra = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: test\r\n" + extra + "\r\n";
}

// Routes shared by several tests.
void basic_routes(const HttpRequest &req, HttpResponder &res) {
  if (req.path == "/hello") {
    res.send(200, "text/plain", "hello " + req.query_param("name").value_or("nobody"));
  } else if (req.path == "/echo") {
    res.send(200, "application/octet-stream", req.body, {{"X-Method", req.method}});
  } else if (req.path == "/boom") {
    throw std::runtime_error("boom \"quoted\"");
  } else if (req.path == "/silent") {
    // returns without responding
  } else if (req.path == "/empty") {
    res.send(204, "", "");
  } else {
    res.send(404, "application/json", "{\"error\": \"not found\"}");
  }
}

// ---------------------------------------------------------------------------------------
// Server

TEST(HttpServer, KeepAliveServesTwoRequestsOnOneConnection) {
  HttpServer server(local_options(), basic_routes);
  server.start();
  ASSERT_NE(server.port(), 0);
  Client c(server.port());
  Response r;
  ASSERT_TRUE(c.send(get("/hello?name=a+b")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello a b");
  EXPECT_EQ(r.header("content-type"), "text/plain");
  EXPECT_FALSE(r.header("date").empty());
  ASSERT_TRUE(c.send(get("/hello?name=again")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello again");
  // Pipelined: both requests in one write, answered in order.
  ASSERT_TRUE(c.send(get("/hello?name=1") + get("/hello?name=2", "Connection: close\r\n")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.body, "hello 1");
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.body, "hello 2");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.read_to_eof());
  server.stop();
}

TEST(HttpServer, Http10ClosesUnlessKeepAlive) {
  HttpServer server(local_options(), basic_routes);
  server.start();
  {
    Client c(server.port());
    ASSERT_TRUE(c.send("GET /hello HTTP/1.0\r\n\r\n"));
    Response r;
    ASSERT_TRUE(c.read_response(r));
    EXPECT_EQ(r.body, "hello nobody");
    EXPECT_EQ(r.header("connection"), "close");
    EXPECT_TRUE(c.read_to_eof());
  }
  Client c(server.port());
  ASSERT_TRUE(c.send("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  Response r;
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.header("connection"), "keep-alive");
  ASSERT_TRUE(c.send("GET /hello?name=x HTTP/1.0\r\n\r\n"));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.body, "hello x");
}

TEST(HttpServer, PostBodies) {
  HttpServer server(local_options(), basic_routes);
  server.start();
  Client c(server.port());
  Response r;
  std::string body(100000, 'q');
  body[5] = '\0';
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\n\r\n" + body));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, body);
  EXPECT_EQ(r.header("x-method"), "POST");

  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.body, "hello world");

  // Expect: 100-continue gets the interim answer before the body is sent.
  ASSERT_TRUE(c.send("PUT /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"));
  ASSERT_TRUE(c.read_until("HTTP/1.1 100 Continue\r\n\r\n"));
  ASSERT_TRUE(c.send("data"));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(c.interim, std::vector<int>{100});
  EXPECT_EQ(r.body, "data");
  EXPECT_EQ(r.header("x-method"), "PUT");
}

TEST(HttpServer, ChunkedUploadArrivingInPieces) {
  HttpServer server(local_options(), basic_routes);
  server.start();
  Client c(server.port());
  Response r;
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(c.send("lo\r\n6\r\n world\r\n"));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(c.send("0\r\n\r\n"));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.body, "hello world");

  // Many small chunks in many writes: the body is assembled whole and in order.
  std::string expected;
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
  for (int w = 0; w < 50; ++w) {
    std::string piece;
    for (int k = 0; k < 40; ++k) {
      std::string data(1 + (w * 40 + k) % 97, static_cast<char>('a' + (w + k) % 26));
      expected += data;
      char size[16];
      std::snprintf(size, sizeof size, "%zx\r\n", data.size());
      piece += size + data + "\r\n";
    }
    ASSERT_TRUE(c.send(piece));
    if (w % 10 == 0) std::this_thread::sleep_for(2ms);
  }
  ASSERT_TRUE(c.send("0\r\n\r\n"));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, expected);
}

TEST(HttpServer, StopFromAHandlerIsRefused) {
  HttpServer *self = nullptr;
  HttpServer server(local_options(), [&](const HttpRequest &, HttpResponder &) { self->stop(); });
  self = &server;
  server.start();
  Client c(server.port());
  Response r;
  ASSERT_TRUE(c.send(get("/stop")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("request handlers"), std::string::npos) << r.body;
}

TEST(HttpServer, HandlerStatusesAndFailures) {
  HttpServer server(local_options(), basic_routes);
  server.start();
  Client c(server.port());
  Response r;
  ASSERT_TRUE(c.send(get("/nowhere")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, "{\"error\": \"not found\"}");

  ASSERT_TRUE(c.send(get("/boom")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.body, "{\"error\": \"boom \\\"quoted\\\"\"}");

  ASSERT_TRUE(c.send(get("/silent")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("without responding"), std::string::npos) << r.body;

  ASSERT_TRUE(c.send(get("/empty")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.header("content-length"), "");

  ASSERT_TRUE(c.send("HEAD /hello HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(c.read_response(r, /*head_request=*/true));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), "12");
  // The connection survived all of that (no body bytes leaked after HEAD).
  ASSERT_TRUE(c.send(get("/hello")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.body, "hello nobody");
}

TEST(HttpServer, MisuseOfResponderBecomes500) {
  HttpServer server(local_options(), [](const HttpRequest &req, HttpResponder &res) {
    if (req.path == "/inject") res.send(200, "text/plain", "x", {{"X-A", "1\r\nSet-Cookie: evil"}});
    if (req.path == "/length") res.send(200, "text/plain", "x", {{"Content-Length", "5"}});
    if (req.path == "/status") res.send(99, "text/plain", "x");
    if (req.path == "/write") res.write("x");
  });
  server.start();
  Client c(server.port());
  for (const char *path : {"/inject", "/length", "/status", "/write"}) {
    Response r;
    ASSERT_TRUE(c.send(get(path)));
    ASSERT_TRUE(c.read_response(r));
    EXPECT_EQ(r.status, 500) << path;
    EXPECT_EQ(r.header("set-cookie"), "");
  }
}

TEST(HttpServer, ParseErrorGetsJsonAndClose) {
  HttpLimits limits;
  HttpServer server(local_options(), basic_routes);
  server.start();
  struct Case {
    std::string request;
    int status;
  } cases[] = {
      {"GET /a%zz HTTP/1.1\r\n\r\n", 400},
      {"BREW /pot HTTP/1.1\r\n\r\n", 501},
      {"GET / HTTP/3.0\r\n\r\n", 400},  // Beast reads only HTTP/1.x
      {"GET / HTTP/1.1\r\nX: " + std::string(limits.max_header_bytes, 'x') + "\r\n\r\n", 431},
      {"POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", 413},
  };
  for (const auto &cs : cases) {
    Client c(server.port());
    ASSERT_TRUE(c.send(cs.request));
    Response r;
    ASSERT_TRUE(c.read_response(r));
    EXPECT_EQ(r.status, cs.status);
    EXPECT_EQ(r.header("connection"), "close");
    EXPECT_EQ(r.body.rfind("{\"error\": \"", 0), 0u) << r.body;
    EXPECT_TRUE(c.read_to_eof());
  }
}

TEST(HttpServer, StreamingDetectsClientClose) {
  Signal gone;
  std::atomic<int> written{0};
  HttpServer server(local_options(), [&](const HttpRequest &, HttpResponder &res) {
    if (!res.start_stream(200, "text/event-stream", {{"Cache-Control", "no-cache"}})) return;
    for (int i = 0;; ++i) {
      if (!res.write("event: status\nid: " + std::to_string(i) + "\ndata: 1.5:running\n\n")) break;
      written = i + 1;
      std::this_thread::sleep_for(5ms);
    }
    gone.set();
  });
  server.start();
  {
    Client c(server.port());
    ASSERT_TRUE(c.send(get("/outputs/stream/x")));
    ASSERT_TRUE(c.read_until("id: 2\n"));
    EXPECT_NE(c.pending_.find("Transfer-Encoding: chunked"), std::string::npos);
    EXPECT_NE(c.pending_.find("Content-Type: text/event-stream"), std::string::npos);
    EXPECT_NE(c.pending_.find("event: status\nid: 0\ndata: 1.5:running\n\n"), std::string::npos);
  }  // the client closes here
  EXPECT_TRUE(gone.wait());
  server.stop();
}

TEST(HttpServer, WaitWakesWhenClientLeaves) {
  Signal started, gone;
  HttpServer server(local_options(), [&](const HttpRequest &, HttpResponder &res) {
    res.start_stream(200, "text/event-stream");
    res.write(": hello\n\n");
    started.set();
    while (res.wait(60000)) {
    }
    gone.set();
  });
  server.start();
  {
    Client c(server.port());
    ASSERT_TRUE(c.send(get("/s")));
    ASSERT_TRUE(started.wait());
  }
  EXPECT_TRUE(gone.wait());
}

TEST(HttpServer, StreamEndsCleanlyAndConnectionIsReused) {
  HttpServer server(local_options(), [](const HttpRequest &req, HttpResponder &res) {
    if (req.path != "/s") return basic_routes(req, res);
    ASSERT_TRUE(res.start_stream(200, "text/event-stream"));
    EXPECT_TRUE(res.write("data: a\n\n"));
    EXPECT_TRUE(res.write(""));
    EXPECT_TRUE(res.write("data: b\n\n"));
  });
  server.start();
  Client c(server.port());
  Response r;
  ASSERT_TRUE(c.send(get("/s")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.body, "data: a\n\ndata: b\n\n");
  ASSERT_TRUE(c.send(get("/hello")));
  ASSERT_TRUE(c.read_response(r));
  EXPECT_EQ(r.body, "hello nobody");

  // HTTP/1.0 clients get a close-delimited stream.
  Client old(server.port());
  ASSERT_TRUE(old.send("GET /s HTTP/1.0\r\n\r\n"));
  ASSERT_TRUE(old.read_response(r));
  EXPECT_EQ(r.header("transfer-encoding"), "");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_EQ(r.body, "data: a\n\ndata: b\n\n");
}

TEST(HttpServer, StopWhileStreamingReturns) {
  Signal started, ended;
  auto server =
      std::make_unique<HttpServer>(local_options(), [&](const HttpRequest &, HttpResponder &res) {
        res.start_stream(200, "text/event-stream");
        res.write(": alive\n\n");
        started.set();
        // Waits far longer than the test: only stop() can end this promptly.
        while (res.wait(600000) && res.write(": alive\n\n")) {
        }
        EXPECT_TRUE(res.stopping());
        ended.set();
      });
  server->start();
  Client c(server->port());
  ASSERT_TRUE(c.send(get("/outputs/stream/x")));
  ASSERT_TRUE(started.wait());
  Client idle(server->port());  // an idle keep-alive connection must not hold stop() up

  auto stopped = std::async(std::launch::async, [&] { server->stop(); });
  ASSERT_EQ(stopped.wait_for(60s), std::future_status::ready) << "stop() did not return";
  EXPECT_TRUE(ended.is_set());
  EXPECT_TRUE(c.read_to_eof());
  EXPECT_TRUE(idle.read_to_eof());
  // After stop, nothing listens any more.
  EXPECT_THROW(Client(server->port()), std::runtime_error);
  server.reset();  // the destructor after stop() is fine
}

TEST(HttpServer, ConnectionCapAnswers503) {
  Signal holding, release;
  HttpServer::Options o = local_options();
  o.max_connections = 1;
  HttpServer server(o, [&](const HttpRequest &req, HttpResponder &res) {
    if (req.path == "/hold") {
      holding.set();
      release.wait(30s);
    }
    res.send(200, "text/plain", "done");
  });
  server.start();
  Client first(server.port());
  ASSERT_TRUE(first.send(get("/hold")));
  ASSERT_TRUE(holding.wait());

  Client second(server.port());
  second.send(get("/"));  // may fail if the server already closed; the answer is what counts
  Response r;
  ASSERT_TRUE(second.read_response(r));
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("too many connections"), std::string::npos) << r.body;
  EXPECT_TRUE(second.read_to_eof());

  release.set();
  ASSERT_TRUE(first.read_response(r));
  EXPECT_EQ(r.body, "done");
  first.close();
  // Once the first connection is gone, a new one is served (the slot frees asynchronously,
  // so allow a few attempts).
  bool served = false;
  for (int attempt = 0; attempt < 200 && !served; ++attempt) {
    Client next(server.port());
    next.send(get("/"));
    Response again;
    if (next.read_response(again) && again.status == 200) {
      served = true;
    } else {
      std::this_thread::sleep_for(20ms);
    }
  }
  EXPECT_TRUE(served);
}

TEST(HttpServer, IdleConnectionIsClosed) {
  HttpServer::Options o = local_options();
  o.idle_timeout_ms = 100;
  HttpServer server(o, basic_routes);
  server.start();
  Client idle(server.port());
  EXPECT_TRUE(idle.read_to_eof(30000));
  EXPECT_TRUE(idle.pending_.empty());

  // A request left half-sent gets a 408 when the time runs out.
  Client slow(server.port());
  ASSERT_TRUE(slow.send("GET /hello HTTP/1.1\r\nHost: x\r\n"));
  Response r;
  ASSERT_TRUE(slow.read_response(r));
  EXPECT_EQ(r.status, 408);
  EXPECT_TRUE(slow.read_to_eof(30000));
}

// A client trickling a head or a body one byte at a time used to reset the clock with each
// byte (only the header section had a budget): 520 such clients held every slot. Each
// phase's budget now covers the whole phase, however the bytes arrive.
TEST(HttpServer, SlowHeadsAndSlowBodiesAreTimedOutAsAWhole) {
  HttpServer::Options o = local_options();
  o.idle_timeout_ms = 300;
  o.body_timeout_ms = 300;
  HttpServer server(o, basic_routes);
  server.start();
  auto trickle_until_closed = [](Client &c, const std::string &bytes) {
    // Never more than the budget between bytes; bounded so a bug fails instead of hanging.
    for (size_t i = 0; i < 2000; ++i) {
      if (!c.send(bytes.substr(i % bytes.size(), 1))) return true;  // closed on us
      pollfd p{c.fd(), POLLIN, 0};
      if (poll(&p, 1, 50) > 0) return true;  // the 408 (or the close) arrived
    }
    return false;
  };
  Client head(server.port());
  ASSERT_TRUE(trickle_until_closed(head, "GET /hello HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaa"));
  Response r;
  ASSERT_TRUE(head.read_response(r));
  EXPECT_EQ(r.status, 408);
  EXPECT_NE(r.body.find("head"), std::string::npos) << r.body;

  Client body(server.port());
  ASSERT_TRUE(body.send("POST /echo HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"));
  ASSERT_TRUE(trickle_until_closed(body, "x"));
  ASSERT_TRUE(body.read_response(r));
  EXPECT_EQ(r.status, 408);
  EXPECT_NE(r.body.find("body"), std::string::npos) << r.body;

  // The server is not held up by them.
  Client fresh(server.port());
  ASSERT_TRUE(fresh.send(get("/hello")));
  ASSERT_TRUE(fresh.read_response(r));
  EXPECT_EQ(r.status, 200);
}

// Streams handed off by their handler (as the SSE hub does) hold no thread: many at once
// on a pool of one handler thread, fed from another thread, and a viewer that does not read
// is cut off behind its bounded buffer while the others go on.
TEST(HttpServer, HandedOffStreamsHoldNoThreadAndSlowViewersAreDropped) {
  HttpServer::Options o = local_options();
  o.handler_threads = 1;
  o.stream_buffer_bytes = size_t{2} << 20;
  std::mutex mu;
  std::vector<std::shared_ptr<HttpStream>> streams;
  HttpServer server(o, [&](const HttpRequest &req, HttpResponder &res) {
    if (req.path != "/watch") return basic_routes(req, res);
    auto s = res.start_async_stream(200, "text/event-stream");
    ASSERT_NE(s, nullptr);
    std::lock_guard<std::mutex> lock(mu);
    streams.push_back(std::move(s));
  });
  server.start();
  std::vector<std::unique_ptr<Client>> viewers;
  constexpr size_t kViewers = 6;
  // One at a time, so streams[i] is viewers[i]'s (connections are taken on several threads).
  // Viewer 0, which never reads, gets a small receive buffer: the kernel's own (up to 32 MB
  // here) could otherwise hold all that is written to it.
  for (size_t i = 0; i < kViewers; ++i) {
    viewers.push_back(std::make_unique<Client>(server.port()));
    if (i == 0) {
      const int small = 64 * 1024;
      ::setsockopt(viewers.back()->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    }
    ASSERT_TRUE(viewers.back()->send(get("/watch")));
    for (int k = 0; k < 1000; ++k) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (streams.size() == i + 1) break;
      }
      std::this_thread::sleep_for(10ms);
    }
  }
  Response r;
  Client other(server.port());
  ASSERT_TRUE(other.send(get("/hello")));
  ASSERT_TRUE(other.read_response(r));  // the one handler thread is free
  EXPECT_EQ(r.status, 200);
  // Viewer 0 never reads; the rest read everything as it comes. 24 MB is far past what
  // its 2 MB buffer and the kernel's socket buffers hold.
  const std::string piece(8192, 'e');
  constexpr int kPieces = 3000;
  std::vector<size_t> got(kViewers, 0);
  std::vector<std::thread> readers;
  std::vector<int> ok(kViewers, 0);
  for (size_t i = 1; i < kViewers; ++i)
    readers.emplace_back([&, i] {
      // Counts the bytes as they come (keeping them would make the reader the slow one).
      std::string tail;
      char buf[65536];
      while (tail.find("\r\n0\r\n\r\n") == std::string::npos) {
        pollfd p{viewers[i]->fd(), POLLIN, 0};
        if (::poll(&p, 1, 10000) <= 0) return;
        ssize_t n = ::recv(viewers[i]->fd(), buf, sizeof buf, 0);
        if (n <= 0) return;
        got[i] += static_cast<size_t>(n);
        tail = tail.substr(tail.size() > 16 ? tail.size() - 16 : 0) +
               std::string(buf + (n > 16 ? n - 16 : 0), buf + n);
      }
      ok[i] = 1;
    });
  bool dropped = false;
  for (int k = 0; k < kPieces; ++k) {
    {
      std::lock_guard<std::mutex> lock(mu);
      for (size_t i = 0; i < streams.size(); ++i)
        if (!streams[i]->write(piece) && i == 0) dropped = true;
    }
    std::this_thread::sleep_for(1ms);  // a live source's pace: readers keep up
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto &s : streams) s->end();
  }
  for (auto &t : readers) t.join();
  streams.clear();  // a stream is a session of the server: released before the server goes
  for (size_t i = 1; i < kViewers; ++i) {
    EXPECT_EQ(ok[i], 1) << i;
    EXPECT_GT(got[i], kPieces * piece.size()) << i;  // every piece, with its framing
  }
  EXPECT_TRUE(dropped) << "the viewer that never reads was not cut off";
}

// Per-stream budgets alone let 10,000 slow viewers hold 10,000 budgets. Past the total for
// all connections, a stream already behind is cut though its own budget is far from full,
// and one that keeps up is not.
TEST(HttpServer, StreamsBehindAreCutFirstWhenAllTogetherHoldTooMuch) {
  HttpServer::Options o = local_options();
  o.stream_buffer_bytes = size_t{256} << 20;
  o.stream_buffer_total_bytes = size_t{1} << 20;
  std::mutex mu;
  std::vector<std::shared_ptr<HttpStream>> streams;
  HttpServer server(o, [&](const HttpRequest &, HttpResponder &res) {
    auto s = res.start_async_stream(200, "text/event-stream");
    ASSERT_NE(s, nullptr);
    std::lock_guard<std::mutex> lock(mu);
    streams.push_back(std::move(s));
  });
  server.start();
  auto wait_for_streams = [&](size_t n) {
    for (int i = 0; i < 1000; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (streams.size() >= n) return;
      }
      std::this_thread::sleep_for(10ms);
    }
  };
  Client slow(server.port()), keeping_up(server.port());
  ASSERT_TRUE(slow.send(get("/watch")));
  wait_for_streams(1);  // so that streams[0] is the slow one
  ASSERT_TRUE(keeping_up.send(get("/watch")));
  wait_for_streams(2);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(streams.size(), 2u);
  // The slow client never reads: once the kernel's buffers are full, its queue grows.
  const auto piece = std::make_shared<const std::string>(size_t{64} << 10, 's');
  size_t written = 0;
  while (written < o.stream_buffer_bytes && streams[0]->write(piece)) written += piece->size();
  EXPECT_LT(written, o.stream_buffer_bytes / 4) << "cut only by its own budget";
  EXPECT_FALSE(streams[0]->open());
  EXPECT_TRUE(streams[1]->write("one frame\n"));
  streams[1]->end();
  Response r;
  ASSERT_TRUE(keeping_up.read_response(r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "one frame\n");
  streams.clear();
}

// A client that sends its request and at once its end of input (shutdown(SHUT_WR)) was,
// now and then, kept until the idle timeout after a stream it got whole: the hang-up watch
// read the end of input, then the next request's read waited for an event that asio
// (edge-triggered epoll) reports only once. The api fuzz target's "stall". Racy by nature,
// so tried many times; with the idle timeout far away, each connection must close at once.
TEST(HttpServer, EndOfInputReadDuringAStreamEndsTheConnection) {
  HttpServer::Options o = local_options();
  o.idle_timeout_ms = 600000;
  HttpServer server(o, [](const HttpRequest &, HttpResponder &res) {
    auto s = res.start_async_stream(200, "text/event-stream");
    if (!s) return;
    s->write("data: x\n\n");
    s->end();
  });
  server.start();
  const std::string request = get("/stream");
  for (int i = 0; i < 200; ++i) {
    Client c(server.port());
    ASSERT_EQ(::send(c.fd(), request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    ::shutdown(c.fd(), SHUT_WR);
    std::string got;
    char buf[4096];
    for (;;) {
      pollfd p{c.fd(), POLLIN, 0};
      ASSERT_GT(::poll(&p, 1, 60000), 0) << "connection " << i << " still open; got: " << got;
      const ssize_t n = ::recv(c.fd(), buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    // The whole stream, or (the end of input read first) its head: the client left.
    EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << i << ": " << got;
  }
}

TEST(HttpServer, StartFailsNamingTheAddress) {
  HttpServer first(local_options(), basic_routes);
  first.start();
  HttpServer::Options o;
  o.address = "127.0.0.1:" + std::to_string(first.port());
  HttpServer second(o, basic_routes);
  try {
    second.start();
    ADD_FAILURE() << "bound a port that is in use";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find(o.address), std::string::npos) << e.what();
  }
  o.address = "not an address";
  HttpServer third(o, basic_routes);
  EXPECT_THROW(third.start(), Error);
  EXPECT_THROW(first.start(), Error);  // twice
}

TEST(HttpServer, ListensOnIpv6LoopbackWhenAvailable) {
  HttpServer::Options o;
  o.address = "http://[::1]:0";
  HttpServer server(o, basic_routes);
  try {
    server.start();
  } catch (const Error &e) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
  }
  EXPECT_NE(server.port(), 0);
}

}  // namespace
}  // namespace kodo
