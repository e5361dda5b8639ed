// HTTPS: the server on Asio's SSL streams, with a certificate made at test time. Routes,
// kept-alive connections and both kinds of stream over TLS; a plain-HTTP client at the TLS
// port; handshakes that never complete; the modern-only protocol and suites; certificate and
// key files that cannot be used, named in the error. Waits have generous bounds only so that
// a bug fails the test instead of hanging it; no test asserts a duration.
#include <kodo/host/error.hpp>
#include "core/http_server.hpp"
#include "test_certificate.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace kodo {
namespace {

namespace http = boost::beast::http;
using test::TlsClient;

class TlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kodo-tls-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    files_ = test::make_test_certificate(dir_, "server");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  HttpServer::Options options() const {
    HttpServer::Options o;
    o.address = "127.0.0.1:0";
    o.tls_cert = files_.cert;
    o.tls_key = files_.key;
    return o;
  }

  std::string dir_;
  test::CertificateFiles files_;
};

// Routes that say what they saw.
void routes(const HttpRequest &req, HttpResponder &res) {
  if (req.path == "/echo") {
    res.send(200, "text/plain", req.method + " " + req.body + (req.tls ? " tls" : " plain"));
  } else if (req.path == "/events") {  // a stream held by the handler, as an SSE route is
    if (!res.start_stream(200, "text/event-stream")) return;
    for (int i = 0; i < 3; ++i)
      if (!res.write("data: " + std::to_string(i) + "\n\n")) return;
  } else {
    res.send(404, "application/json", "{\"error\": \"not found\"}");
  }
}

http::response<http::string_body> exchange(TlsClient &client, boost::beast::flat_buffer &buffer,
                                           http::verb method, const std::string &target,
                                           const std::string &body = "") {
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "localhost");
  req.body() = body;
  req.prepare_payload();
  http::write(client, req);
  http::response<http::string_body> res;
  http::read(client, buffer, res);
  return res;
}

// Reads until the peer closes; false if it stays open for the whole bound.
bool closed_by_server(int fd) {
  char sink[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 30000) <= 0) return false;
    const ssize_t n = ::recv(fd, sink, sizeof sink, 0);
    if (n <= 0) return true;
  }
}

int connect_plain(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST_F(TlsServerTest, RoutesAnswerOverTlsOnAKeptAliveConnection) {
  HttpServer server(options(), routes);
  server.start();
  TlsClient client(server.port(), files_.cert);
  std::string error;
  ASSERT_TRUE(client.handshake(&error)) << error;
  EXPECT_EQ(SSL_version(client.ssl()), TLS1_3_VERSION);
  boost::beast::flat_buffer buffer;
  auto res = exchange(client, buffer, http::verb::post, "/echo", "hello");
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res.body(), "POST hello tls");  // the handler knows the request came over TLS
  res = exchange(client, buffer, http::verb::get, "/nowhere");
  EXPECT_EQ(res.result_int(), 404);
  res = exchange(client, buffer, http::verb::get, "/echo");
  EXPECT_EQ(res.body(), "GET  tls");
}

TEST_F(TlsServerTest, PlainServerTellsHandlersSo) {
  HttpServer::Options o = options();
  o.tls_cert.clear();
  o.tls_key.clear();
  HttpServer server(o, routes);
  server.start();
  const int fd = connect_plain(server.port());
  ASSERT_GE(fd, 0);
  const std::string request = "GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, size_t(n));
  ::close(fd);
  EXPECT_NE(answer.find("GET  plain"), std::string::npos) << answer;
}

TEST_F(TlsServerTest, StreamsWorkOverTls) {
  std::shared_ptr<HttpStream> handed_off;
  std::mutex mu;
  HttpServer server(options(), [&](const HttpRequest &req, HttpResponder &res) {
    if (req.path != "/watch") return routes(req, res);
    auto stream = res.start_async_stream(200, "text/event-stream");
    ASSERT_NE(stream, nullptr);
    std::lock_guard<std::mutex> lock(mu);
    handed_off = std::move(stream);
  });
  server.start();

  // A stream its handler holds, to the end.
  TlsClient client(server.port(), files_.cert);
  ASSERT_TRUE(client.handshake());
  boost::beast::flat_buffer buffer;
  auto res = exchange(client, buffer, http::verb::get, "/events");
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res[http::field::content_type], "text/event-stream");
  EXPECT_EQ(res.body(), "data: 0\n\ndata: 1\n\ndata: 2\n\n");

  // A handed-off stream, fed from another thread while the client reads.
  TlsClient viewer(server.port(), files_.cert);
  ASSERT_TRUE(viewer.handshake());
  http::request<http::string_body> req{http::verb::get, "/watch", 11};
  req.set(http::field::host, "localhost");
  http::write(viewer, req);
  for (int i = 0; i < 1000; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (handed_off) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::thread feeder([&] {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_NE(handed_off, nullptr);
    for (int i = 0; i < 100; ++i)
      EXPECT_TRUE(handed_off->write("data: " + std::to_string(i) + "\n\n"));
    handed_off->end();
  });
  http::response<http::string_body> streamed;
  boost::beast::flat_buffer viewer_buffer;
  http::read(viewer, viewer_buffer, streamed);
  feeder.join();
  EXPECT_EQ(streamed.result_int(), 200);
  EXPECT_NE(streamed.body().find("data: 0\n\n"), std::string::npos);
  EXPECT_NE(streamed.body().find("data: 99\n\n"), std::string::npos);
  std::lock_guard<std::mutex> lock(mu);
  handed_off.reset();  // a stream is a session of the server: released before the server goes
}

TEST_F(TlsServerTest, PlainHttpClientIsRefusedCleanly) {
  HttpServer server(options(), routes);
  server.start();
  const int fd = connect_plain(server.port());
  ASSERT_GE(fd, 0);
  const std::string request =
      "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi";
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string answer;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 30000) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  EXPECT_EQ(answer.rfind("HTTP/1.1 400 ", 0), 0u) << answer;
  EXPECT_NE(answer.find("this port speaks HTTPS"), std::string::npos) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;

  // The server is none the worse for it.
  TlsClient client(server.port(), files_.cert);
  ASSERT_TRUE(client.handshake());
}

TEST_F(TlsServerTest, HandshakeThatNeverCompletesIsTimedOut) {
  HttpServer::Options o = options();
  o.idle_timeout_ms = 200;
  HttpServer server(o, routes);
  server.start();
  // Opens TCP and says nothing.
  const int silent = connect_plain(server.port());
  ASSERT_GE(silent, 0);
  // Starts a handshake record and stops.
  const int stalled = connect_plain(server.port());
  ASSERT_GE(stalled, 0);
  const unsigned char partial[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
  ASSERT_EQ(::send(stalled, partial, sizeof partial, MSG_NOSIGNAL),
            static_cast<ssize_t>(sizeof partial));
  EXPECT_TRUE(closed_by_server(silent));
  EXPECT_TRUE(closed_by_server(stalled));
  ::close(silent);
  ::close(stalled);
  for (int i = 0; i < 1000 && server.connections() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(server.connections(), 0u);
}

TEST_F(TlsServerTest, OnlyModernProtocolsAndSuites) {
  HttpServer server(options(), routes);
  server.start();
  {  // TLS 1.1 at most: refused
    TlsClient client(server.port(), files_.cert);
    SSL_set_security_level(client.ssl(), 0);
    SSL_set_max_proto_version(client.ssl(), TLS1_1_VERSION);
    EXPECT_FALSE(client.handshake());
  }
  {  // TLS 1.2 with CBC suites only: refused
    TlsClient client(server.port(), files_.cert);
    SSL_set_max_proto_version(client.ssl(), TLS1_2_VERSION);
    ASSERT_EQ(SSL_set_cipher_list(client.ssl(), "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA"),
              1);
    EXPECT_FALSE(client.handshake());
  }
  {  // TLS 1.2 with an ECDHE AEAD suite: served
    TlsClient client(server.port(), files_.cert);
    SSL_set_max_proto_version(client.ssl(), TLS1_2_VERSION);
    std::string error;
    ASSERT_TRUE(client.handshake(&error)) << error;
    EXPECT_STREQ(SSL_get_cipher_name(client.ssl()), "ECDHE-ECDSA-AES128-GCM-SHA256");
    EXPECT_EQ(SSL_get_current_compression(client.ssl()), nullptr);
  }
}

// start() fails, naming the file and what is wrong with it.
std::string start_error(HttpServer::Options o) {
  HttpServer server(std::move(o), routes);
  try {
    server.start();
  } catch (const Error &e) {
    return e.what();
  }
  return "(started)";
}

TEST_F(TlsServerTest, UnusableFilesAreNamed) {
  const std::string missing = dir_ + "/missing.pem";
  HttpServer::Options o = options();
  o.tls_cert = missing;
  std::string error = start_error(o);
  EXPECT_NE(error.find("TLS certificate file '" + missing + "'"), std::string::npos) << error;
  EXPECT_NE(error.find("No such file"), std::string::npos) << error;

  o = options();
  o.tls_key = missing;
  error = start_error(o);
  EXPECT_NE(error.find("TLS key file '" + missing + "'"), std::string::npos) << error;

  o = options();
  o.tls_key.clear();
  error = start_error(o);
  EXPECT_NE(error.find("TLS key file: no path given"), std::string::npos) << error;

  const std::string garbage = dir_ + "/garbage.pem";
  std::ofstream(garbage) << "not a certificate\n";
  o = options();
  o.tls_cert = garbage;
  error = start_error(o);
  EXPECT_NE(error.find("TLS certificate file '" + garbage + "' holds no usable PEM certificate"),
            std::string::npos)
      << error;
  o = options();
  o.tls_key = garbage;
  error = start_error(o);
  EXPECT_NE(error.find("TLS key file '" + garbage + "' holds no usable PEM private key"),
            std::string::npos)
      << error;

  // Unreadable: a directory.
  o = options();
  o.tls_cert = dir_;
  error = start_error(o);
  EXPECT_NE(error.find("'" + dir_ + "'"), std::string::npos) << error;

  // Another certificate's key.
  const test::CertificateFiles other = test::make_test_certificate(dir_, "other");
  o = options();
  o.tls_key = other.key;
  error = start_error(o);
  EXPECT_NE(error.find("TLS key file '" + other.key + "' does not match the certificate in '" +
                       files_.cert + "'"),
            std::string::npos)
      << error;

  // An encrypted key: refused, never a prompt on the terminal.
  const test::CertificateFiles locked = test::make_test_certificate(dir_, "locked", "secret");
  o = options();
  o.tls_cert = locked.cert;
  o.tls_key = locked.key;
  error = start_error(o);
  EXPECT_NE(error.find("encrypted keys are not supported"), std::string::npos) << error;
  EXPECT_EQ(error.find("secret"), std::string::npos) << error;
}

}  // namespace
}  // namespace kodo
