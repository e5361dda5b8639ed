// A minimal blocking HTTP client and shared routes for the server tests. Server tests bind
// port 0 on loopback and talk to it over real sockets. Waits have generous bounds only so that
// a bug fails the test instead of hanging it; no test asserts a duration.
#ifndef KODO_TESTS_HTTP_TEST_CLIENT_HPP
#define KODO_TESTS_HTTP_TEST_CLIENT_HPP

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

namespace kodo::http_test {

using namespace std::chrono_literals;

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

inline HttpServer::Options local_options() {
  HttpServer::Options o;
  o.address = "127.0.0.1:0";
  return o;
}

inline std::string get(const std::string &path, const std::string &extra = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: test\r\n" + extra + "\r\n";
}

// Routes shared by several tests.
inline void basic_routes(const HttpRequest &req, HttpResponder &res) {
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
}  // namespace kodo::http_test

#endif  // KODO_TESTS_HTTP_TEST_CLIENT_HPP
