// The Host allowlist (DNS rebinding) and the refusal of cross-site state changes, as tables:
// Host header variants, and every state-changing route of the API against a set of origins.
#include "core/request_guard.hpp"
#include <kodo/host/error.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kodo {
namespace {

HttpRequest request(const std::string &method, const std::string &target,
                    const std::vector<std::string> &headers) {
  std::string text = method + " " + target + " HTTP/1.1\r\n";
  for (const auto &h : headers) text += h + "\r\n";
  text += "Content-Length: 0\r\n\r\n";
  HttpRequest req;
  const ParseResult r = parse_http_request(text, HttpLimits{}, req);
  EXPECT_EQ(r.status, ParseStatus::Complete) << text << r.error;
  return req;
}

// 0 when served, else the refusal's status.
int verdict(const RequestGuard &guard, const HttpRequest &req, std::string *message = nullptr) {
  auto refusal = guard.check(req);
  if (refusal && message != nullptr) *message = refusal->message;
  return refusal ? refusal->status : 0;
}

TEST(ParseHost, Normalizes) {
  EXPECT_EQ(parse_host("LocalHost.:3370")->name, "localhost");
  EXPECT_EQ(*parse_host("LocalHost.:3370")->port, 3370);
  EXPECT_EQ(parse_host("[0:0:0:0:0:0:0:1]")->name, "::1");
  EXPECT_EQ(parse_host("[::FFFF:127.0.0.1]:80")->name, "::ffff:127.0.0.1");
  EXPECT_FALSE(parse_host("localhost:")->port);
  for (const char *bad : {"", ":80", "[::1", "[::1]x", "[nope]", "::1", "local host", "a@b",
                          "x:99999", "x:8o", "x:123456", ".", "a/b"})
    EXPECT_FALSE(parse_host(bad)) << bad;
}

TEST(RequestGuard, HostVariants) {
  const RequestGuard guard({}, "127.0.0.1:3370");
  struct Case {
    std::string host;
    int status;
  };
  const std::vector<Case> cases = {
      {"localhost", 0},
      {"localhost:3370", 0},
      {"LOCALHOST:3370", 0},
      {"localhost.", 0},
      {"127.0.0.1", 0},
      {"127.0.0.1:1", 0},
      {"[::1]", 0},
      {"[::1]:3370", 0},
      {"[0:0:0:0:0:0:0:1]:3370", 0},
      {"evil.example", 421},
      {"evil.example:3370", 421},
      {"localhost.evil.example", 421},
      {"127.0.0.2", 421},
      {"[::2]:3370", 421},
      {"0.0.0.0", 421},
      {"[::1", 400},
      {"::1", 400},
      {"local host", 400},
      {"localhost:99999", 400},
      {"localhost:x", 400},
      {"user@localhost", 400},
  };
  for (const auto &c : cases) {
    std::string message;
    EXPECT_EQ(verdict(guard, request("GET", "/health", {"Host: " + c.host}), &message), c.status)
        << c.host << ": " << message;
    if (c.status == 421) {
      EXPECT_NE(message.find("is not a name this host answers to"), std::string::npos) << message;
      EXPECT_NE(message.find("--allowed-hosts"), std::string::npos) << message;
    }
  }
  std::string message;
  EXPECT_EQ(verdict(guard, request("GET", "/health", {"Host: localhost", "Host: evil.example"}),
                    &message),
            400);
  EXPECT_NE(message.find("more than one Host"), std::string::npos) << message;
  // An absolute-form target's host counts too.
  EXPECT_EQ(verdict(guard, request("GET", "http://evil.example/health", {"Host: localhost"})), 421);
  EXPECT_EQ(verdict(guard, request("GET", "http://localhost:3370/health", {"Host: localhost"})), 0);
  // No Host at all: not a browser, nothing to rebind.
  EXPECT_EQ(verdict(guard, request("GET", "/health", {})), 0);
}

TEST(RequestGuard, AllowedHostsReplaceTheDefaultsAndStarAcceptsAny) {
  const RequestGuard listen_ip({}, "10.1.2.3:3370");  // the listen address is its own name
  EXPECT_EQ(verdict(listen_ip, request("GET", "/", {"Host: 10.1.2.3:3370"})), 0);
  EXPECT_EQ(listen_ip.describe(), "localhost, 127.0.0.1, ::1, 10.1.2.3");
  EXPECT_EQ(RequestGuard({}, "127.0.0.1:3370").describe(), "localhost, 127.0.0.1, ::1");
  const RequestGuard any_interface({}, ":3370");
  EXPECT_EQ(verdict(any_interface, request("GET", "/", {"Host: 10.1.2.3:3370"})), 421);
  EXPECT_EQ(verdict(any_interface, request("GET", "/", {"Host: localhost"})), 0);
  const RequestGuard v6({}, "[fd00::1]:3370");
  EXPECT_EQ(verdict(v6, request("GET", "/", {"Host: [FD00::1]:3370"})), 0);

  const RequestGuard configured({"kodo.example.com", "::1", "Other.Example."}, "127.0.0.1:3370");
  EXPECT_EQ(verdict(configured, request("GET", "/", {"Host: KODO.example.com"})), 0);
  EXPECT_EQ(verdict(configured, request("GET", "/", {"Host: other.example:443"})), 0);
  EXPECT_EQ(verdict(configured, request("GET", "/", {"Host: [::1]"})), 0);
  EXPECT_EQ(verdict(configured, request("GET", "/", {"Host: localhost"})), 421);
  EXPECT_EQ(configured.describe(), "kodo.example.com, ::1, other.example");

  const RequestGuard any({"*"}, "127.0.0.1:3370");
  EXPECT_EQ(verdict(any, request("GET", "/", {"Host: anything.example"})), 0);
  EXPECT_EQ(verdict(any, request("GET", "/", {"Host: not a host"})), 400);
  EXPECT_EQ(any.describe(), "*");

  for (const char *bad : {"kodo.example.com:443", "http://kodo.example.com", "a b", "[::1]:80"}) {
    try {
      RequestGuard guard({bad}, "127.0.0.1:3370");
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error &e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos)
          << e.what();
    }
  }
}

// Every state-changing route of the API, against browsers' origins. The guard does not look
// at the route: the table makes sure none is forgotten.
TEST(RequestGuard, CrossSiteStateChangesAreRefusedOnEveryRoute) {
  const std::string fid = "65a0c0ffee00000000000001";
  struct Route {
    std::string method, target;
  };
  const std::vector<Route> changing = {
      {"POST", "/api/v1/executions"},
      {"POST", "/api/v1/executions/" + fid + "/pause"},
      {"POST", "/api/v1/executions/" + fid + "/resume"},
      {"POST", "/api/v1/executions/" + fid + "/cancel"},
      {"DELETE", "/api/v1/executions/" + fid},
      {"DELETE", "/outputs/" + fid},
      {"POST", "/lock/" + fid + "/lid"},
      {"PUT", "/api/v1/executions/" + fid},
      {"PATCH", "/api/v1/executions/" + fid},
  };
  const std::vector<Route> reading = {
      {"GET", "/health"},
      {"GET", "/api/v1/executions"},
      {"GET", "/outputs/stream/" + fid},
      {"HEAD", "/outputs/status/" + fid},
      {"OPTIONS", "/api/v1/executions"},
  };
  struct Origin {
    std::vector<std::string> headers;
    bool cross_site;
    std::string named;  // what the refusal must quote
  };
  const std::vector<Origin> origins = {
      {{}, false, ""},  // curl, kodosumi's clients
      {{"Origin: http://localhost:3370"}, false, ""},
      {{"Origin: http://LOCALHOST:8080"}, false, ""},     // the same host on another port
      {{"Origin: https://kodo.example.com"}, false, ""},  // configured with --allowed-hosts
      {{"Referer: http://localhost:3370/admin/flows?x=1"}, false, ""},
      {{"Origin: https://evil.example"}, true, "Origin 'https://evil.example'"},
      {{"Origin: http://127.0.0.1:3370"}, true, "Origin 'http://127.0.0.1:3370'"},
      {{"Origin: null"}, true, "Origin 'null'"},
      {{"Origin: evil.example"}, true, "Origin 'evil.example'"},
      {{"Origin: http://localhost.evil.example"}, true, "localhost.evil.example"},
      {{"Referer: http://attacker.example/page?token=abc"},
       true,
       "Referer 'http://attacker.example'"},
      {{"Origin: https://evil.example", "Referer: http://localhost:3370/"}, true, "evil.example"},
      {{"Origin: ", "Referer: https://evil.example/"}, true, "Referer 'https://evil.example'"},
  };
  const RequestGuard guard({"localhost", "kodo.example.com"}, "127.0.0.1:3370");
  for (const auto &origin : origins) {
    for (const auto &route : changing) {
      std::vector<std::string> headers = origin.headers;
      headers.insert(headers.begin(), "Host: localhost:3370");
      headers.emplace_back("Content-Type: text/plain");  // a form a page may send unasked
      std::string message;
      const int status = verdict(guard, request(route.method, route.target, headers), &message);
      const std::string what = route.method + " " + route.target + " with " +
                               (origin.headers.empty() ? "no origin" : origin.headers[0]);
      if (!origin.cross_site) {
        EXPECT_EQ(status, 0) << what << ": " << message;
        continue;
      }
      EXPECT_EQ(status, 403) << what;
      EXPECT_NE(message.find("cross-site " + route.method + " refused"), std::string::npos)
          << message;
      EXPECT_NE(message.find(origin.named), std::string::npos) << message;
      EXPECT_EQ(message.find("token=abc"), std::string::npos) << message;  // only the origin
    }
    for (const auto &route : reading) {
      std::vector<std::string> headers = origin.headers;
      headers.insert(headers.begin(), "Host: localhost:3370");
      EXPECT_EQ(verdict(guard, request(route.method, route.target, headers)), 0)
          << route.method << " " << route.target;
    }
  }
}

TEST(RequestGuard, BehindAProxyTheConfiguredNameIsTheOrigin) {
  // nginx passes Host as the public name ($host); the page is served under that name.
  const RequestGuard guard({"kodo.example.com"}, "127.0.0.1:3370");
  EXPECT_EQ(verdict(guard, request("POST", "/api/v1/executions",
                                   {"Host: kodo.example.com", "Origin: https://kodo.example.com"})),
            0);
  EXPECT_EQ(verdict(guard, request("POST", "/api/v1/executions",
                                   {"Host: kodo.example.com", "Origin: https://evil.example"})),
            403);
  // X-Forwarded-Host is not trusted: it cannot make a foreign origin our own.
  EXPECT_EQ(verdict(guard, request("POST", "/api/v1/executions",
                                   {"Host: kodo.example.com", "X-Forwarded-Host: evil.example",
                                    "Origin: https://evil.example"})),
            403);
}

}  // namespace
}  // namespace kodo
