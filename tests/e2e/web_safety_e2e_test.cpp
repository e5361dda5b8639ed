// The real kodo-host against what browsers and HTTPS clients send: a cross-site text/plain
// launch refused (and nothing launched) while a launch without Origin works; a foreign Host
// refused; the API, a launch and its event stream over HTTPS with a certificate made at test
// time; unusable TLS files named at start.
#include "host_process.hpp"
#include "test_certificate.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace kodo::e2e {
namespace {

namespace fs = std::filesystem;
namespace http = boost::beast::http;

class WebSafetyE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kodo-web-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "--- kodo-host log ---\n" << host_.log();
    host_.stop();
    fs::remove_all(dir_);
  }

  std::vector<std::string> args(std::vector<std::string> extra = {}) const {
    std::vector<std::string> all = {
        "--plugin-dir",    KODO_PLUGIN_DIR,   "--exec-dir", dir_ + "/exec",     "--flow",
        "hello=/bin/true", "--sse-keepalive", "0.5",        "--shutdown-grace", "2"};
    all.insert(all.end(), extra.begin(), extra.end());
    return all;
  }

  // One HTTP/1.0 request with exactly these header lines.
  HttpResult raw(const std::string &method, const std::string &target,
                 const std::vector<std::string> &headers, const std::string &body = "") const {
    std::string text = method + " " + target + " HTTP/1.0\r\n";
    for (const auto &h : headers) text += h + "\r\n";
    text += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    return host_.exchange(text);
  }

  size_t executions() const {
    auto r = host_.request("GET", "/api/v1/executions");
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    EXPECT_TRUE(d.IsObject() && d.HasMember("executions")) << r.body;
    return d.IsObject() && d.HasMember("executions") ? d["executions"].Size() : 0;
  }

  std::string dir_;
  HostProcess host_;
};

TEST_F(WebSafetyE2E, CrossSiteLaunchIsRefusedAndProgramsStillLaunch) {
  ASSERT_TRUE(host_.start(args())) << host_.log();
  const std::string host = "Host: 127.0.0.1:" + std::to_string(host_.port());
  const std::string launch = "{\"flow\": \"hello\", \"inputs\": {}}";
  // What a page elsewhere can make a browser send without a preflight.
  auto r = raw("POST", "/api/v1/executions",
               {host, "Origin: https://evil.example", "Content-Type: text/plain"}, launch);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("Origin 'https://evil.example'"), std::string::npos) << r.body;
  r = raw("DELETE", "/outputs/65a0c0ffee00000000000001",
          {host, "Referer: http://evil.example/x?y=z"});
  EXPECT_EQ(r.status, 403) << r.body;

  // curl and kodosumi's clients send no Origin; a page of the host's own sends its own.
  r = raw("POST", "/api/v1/executions", {host, "Content-Type: application/json"}, launch);
  EXPECT_EQ(r.status, 201) << r.body;
  r = raw("POST", "/api/v1/executions",
          {host, "Origin: http://127.0.0.1:" + std::to_string(host_.port())}, launch);
  EXPECT_EQ(r.status, 201) << r.body;
  // These two are stored; the refused launch, sent before them, never was.
  EXPECT_TRUE(eventually([&] { return executions() >= 2; }));
  EXPECT_EQ(executions(), 2u);

  // DNS rebinding: a foreign name at the loopback address.
  r = raw("GET", "/health", {"Host: rebind.attacker.example:" + std::to_string(host_.port())});
  EXPECT_EQ(r.status, 421) << r.body;
  EXPECT_NE(r.body.find("rebind.attacker.example"), std::string::npos) << r.body;
  r = raw("GET", "/health", {"Host: [::1]:" + std::to_string(host_.port())});
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(WebSafetyE2E, AllowedHostsReplaceTheDefaults) {
  ASSERT_TRUE(host_.start(args({"--allowed-hosts", "kodo.example.com"}))) << host_.log();
  EXPECT_EQ(raw("GET", "/health", {"Host: kodo.example.com"}).status, 200);
  EXPECT_EQ(raw("GET", "/health", {"Host: localhost"}).status, 421);
  EXPECT_NE(host_.log().find("for host names kodo.example.com"), std::string::npos);
}

TEST_F(WebSafetyE2E, ServesTheApiAndStreamsOverHttps) {
  const test::CertificateFiles files = test::make_test_certificate(dir_, "host");
  ASSERT_TRUE(host_.start(args({"--tls-cert", files.cert, "--tls-key", files.key}))) << host_.log();
  EXPECT_NE(host_.log().find("serving on https://127.0.0.1:"), std::string::npos);

  auto exchange = [&](http::verb method, const std::string &target, const std::string &body) {
    test::TlsClient client(static_cast<uint16_t>(host_.port()), files.cert);
    std::string error;
    EXPECT_TRUE(client.handshake(&error)) << error;
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "localhost");
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::write(client, req);
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(client, buffer, res);
    return res;
  };
  auto health = exchange(http::verb::get, "/health", "");
  EXPECT_EQ(health.result_int(), 200) << health.body();
  auto launched = exchange(http::verb::post, "/api/v1/executions", "{\"flow\": \"hello\"}");
  ASSERT_EQ(launched.result_int(), 201) << launched.body();
  rapidjson::Document d;
  d.Parse(launched.body().c_str());
  ASSERT_TRUE(d.IsObject() && d.HasMember("fid")) << launched.body();
  const std::string fid = d["fid"].GetString();
  // kodosumi's event stream, to its end.
  auto streamed = exchange(http::verb::get, "/outputs/stream/" + fid, "");
  EXPECT_EQ(streamed.result_int(), 200);
  EXPECT_NE(streamed.body().find("event: status"), std::string::npos) << streamed.body();
  EXPECT_NE(streamed.body().find("event: eof"), std::string::npos) << streamed.body();

  // Plain HTTP to the HTTPS port: a readable refusal.
  auto plain = host_.request("GET", "/health");
  EXPECT_EQ(plain.status, 400) << plain.body;
  EXPECT_NE(plain.body.find("HTTPS"), std::string::npos) << plain.body;
}

TEST_F(WebSafetyE2E, UnusableTlsFilesStopTheStartNamingThem) {
  const test::CertificateFiles files = test::make_test_certificate(dir_, "host");
  const std::string missing = dir_ + "/nowhere.key";
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> all = {KODO_HOST_BINARY, "--address", "127.0.0.1:0"};
    for (const auto &a : args(std::move(extra))) all.push_back(a);
    all.push_back("serve");
    return run_command(all);
  };
  auto r = run({"--tls-cert", files.cert, "--tls-key", missing});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("TLS key file '" + missing + "'"), std::string::npos) << r.output;
  r = run({"--tls-cert", files.cert});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--tls-cert and --tls-key go together"), std::string::npos) << r.output;
  r = run({"--allowed-hosts", "kodo.example.com:443"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("'kodo.example.com:443'"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace kodo::e2e
