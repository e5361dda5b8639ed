// http_server.cpp: see http_server.hpp.
//
// Design notes:
// - Every socket is non-blocking and every wait is a poll(2) that also watches the read end
//   of a "wake" pipe. stop() writes one byte into the pipe and never drains it, so the pipe
//   stays readable and every current and future poll returns at once: one write wakes all.
// - Writes use MSG_NOSIGNAL (no SIGPIPE when a client vanishes) and give up when they make
//   no progress for idle_timeout_ms, so a client that stops reading cannot pin a thread.
// - After an error response the connection is closed "lingering": we shut down our side and
//   drain what the client still sends for a moment, because closing a socket with unread
//   input makes the kernel send RST, which can destroy the response before it is read.
#include "core/http_server.hpp"

#include "core/error.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>

#ifdef POLLRDHUP
#define KODO_POLLRDHUP POLLRDHUP
#else
#define KODO_POLLRDHUP 0  // without it, a half-close shows only once a write fails
#endif

namespace kodo {

using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kReadSize = size_t{64} * 1024;
constexpr size_t kMaxReadSize = 1 << 20;     // when a large body is known to be coming
constexpr size_t kMaxLingerBytes = 1 << 20;  // drained before closing after an error
constexpr int kLingerMs = 2000;
constexpr size_t kMaxRejectedLingering = 64;  // 503'd sockets the acceptor drains at once
constexpr int kPauseMs = 5;  // a chunked upload that goes quiet this long is parsed again

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_token_char(unsigned char c) {
  if (c == 0) return false;  // strchr below would match the terminator
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool valid_header_name(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_token_char(static_cast<unsigned char>(c))) return false;
  return true;
}

// No CR, LF, NUL or other controls: a handler must not be able to inject header lines.
bool valid_header_value(std::string_view s) {
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  }
  return true;
}

const char *reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: break;
  }
  if (status < 300) return "OK";
  if (status < 400) return "Redirect";
  if (status < 500) return "Client Error";
  return "Server Error";
}

// IMF-fixdate, formatted by hand so the process locale cannot change it.
std::string http_date() {
  static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  if (gmtime_r(&now, &tm) == nullptr || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
      tm.tm_mon > 11)
    return "Thu, 01 Jan 1970 00:00:00 GMT";
  char out[64];
  const int n = std::snprintf(out, sizeof out, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                              days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
                              tm.tm_hour, tm.tm_min, tm.tm_sec);
  if (n <= 0 || static_cast<size_t>(n) >= sizeof out) return "Thu, 01 Jan 1970 00:00:00 GMT";
  return std::string(out, static_cast<size_t>(n));
}

std::string json_error(std::string_view message) {
  return "{\"error\": \"" + json_escape(message) + "\"}";
}

int remaining_ms(Clock::time_point deadline) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 1000000000 ? 1000000000 : static_cast<int>(left);
}

// The server whose connection this thread serves, if any. (A lookup in the connection map
// would race: a thread may run its first request before the acceptor has recorded it.)
thread_local const void *serving_server = nullptr;

void close_fd(int &fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

namespace http_detail {

// One client socket, as seen by its thread (and by the acceptor for a 503).
struct Connection {
  int fd = -1;
  int wake_fd = -1;  // read end of the server's wake pipe: readable once stopping
  const std::atomic<bool> *stopping = nullptr;
  int io_timeout_ms = 30000;  // a write making no progress this long fails; <= 0: none
  bool broken = false;        // a write failed or the peer left: no more output

  bool is_stopping() const { return stopping->load(std::memory_order_acquire); }

  // Sends all of data. False (and broken) when the peer is gone, a write stalls past the
  // timeout, or the server stops while we wait for the socket to drain.
  bool write_all(std::string_view data) {
    if (broken) return false;
    while (!data.empty()) {
      ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd p[2] = {{fd, POLLOUT, 0}, {wake_fd, POLLIN, 0}};
        int r = ::poll(p, 2, io_timeout_ms > 0 ? io_timeout_ms : -1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || (p[1].revents & POLLIN) || (p[0].revents & POLLNVAL)) break;
        continue;  // writable, or an error that the next send() will report
      }
      break;
    }
    if (!data.empty()) broken = true;
    return !broken;
  }

  // True when the client closed or shut down its side (or the socket failed).
  bool peer_gone() {
    pollfd p{fd, KODO_POLLRDHUP, 0};
    int r = ::poll(&p, 1, 0);
    if (r > 0 && (p.revents & (KODO_POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) broken = true;
    return broken;
  }

  // Waits up to timeout_ms for nothing in particular; false as soon as the client leaves
  // or the server stops. Input from the client is deliberately not watched (POLLIN): a
  // pipelined request waiting in the socket must not end a stream.
  bool wait_open(int timeout_ms) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms > 0 ? timeout_ms : 0);
    while (true) {
      if (broken || is_stopping()) return false;
      pollfd p[2] = {{fd, KODO_POLLRDHUP, 0}, {wake_fd, POLLIN, 0}};
      int r = ::poll(p, 2, remaining_ms(deadline));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return false;
      if (p[0].revents & (KODO_POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) broken = true;
      if (r == 0) return !broken && !is_stopping();
      if (broken || (p[1].revents & POLLIN)) return false;
    }
  }

  // Shuts our side down and drains the client's input for a moment before the close, so
  // the response is not wiped out by a reset (see the note at the top).
  void linger() {
    if (broken) return;
    ::shutdown(fd, SHUT_WR);
    auto deadline = Clock::now() + std::chrono::milliseconds(kLingerMs);
    size_t drained = 0;
    char sink[4096];
    while (drained < kMaxLingerBytes) {
      int left = remaining_ms(deadline);
      if (left <= 0) break;
      pollfd p[2] = {{fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
      int r = ::poll(p, 2, left);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0 || (p[1].revents & POLLIN)) break;
      ssize_t n = ::recv(fd, sink, sizeof sink, 0);
      if (n > 0) {
        drained += static_cast<size_t>(n);
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
        break;
      }
    }
  }

  // Sends an error response with a JSON body and marks the connection for closing.
  void fail(int status, const std::string &message) {
    HttpRequest none;
    none.method = "GET";
    none.keep_alive = false;
    HttpResponder res(*this, none);
    try {
      res.send(status, "application/json", json_error(message));
    } catch (...) {
      // Cannot happen with these arguments; and we are closing anyway.
    }
  }

  // Runs the handler for one request; true if the connection may carry another one.
  bool run(const HttpRequest &request, const HttpServer::Handler &handler) {
    HttpResponder res(*this, request);
    std::string failure;
    bool threw = false;
    try {
      handler(request, res);
    } catch (const std::exception &e) {
      threw = true;
      failure = e.what();
      if (failure.empty()) failure = "the request handler failed";
    } catch (...) {
      threw = true;
      failure = "the request handler threw a non-standard exception";
    }
    if (!res.responded()) {
      if (!threw) failure = "the request handler returned without responding";
      try {
        res.send(500, "application/json", json_error(failure));
      } catch (...) {
        return false;
      }
    } else if (threw) {
      // The status line is already out: all we can do is cut the response short, so the
      // client sees a truncated body rather than a clean end.
      return false;
    }
    return res.finish();
  }
};

}  // namespace http_detail

// ---------------------------------------------------------------------------------------
// HttpResponder

HttpResponder::HttpResponder(http_detail::Connection &conn, const HttpRequest &request)
    : conn_(conn),
      head_request_(request.method == "HEAD"),
      http_minor_(request.http_minor),
      keep_alive_(request.keep_alive) {}

std::string HttpResponder::head(int status, std::string_view content_type, const HttpHeaders &extra,
                                const std::string &framing) {
  if (state_ != State::None) throw Error("HTTP response already started", KODO_ERR_INTERNAL);
  if (status < 200 || status > 599)
    throw Error("invalid HTTP response status " + std::to_string(status),
                KODO_ERR_INVALID_ARGUMENT);
  if (!valid_header_value(content_type))
    throw Error("invalid character in response Content-Type", KODO_ERR_INVALID_ARGUMENT);
  // Check everything before changing any state, so a refused call leaves the responder
  // usable for the server's 500.
  bool close_requested = false;
  for (const auto &h : extra) {
    if (!valid_header_name(h.first) || !valid_header_value(h.second))
      throw Error("invalid response header '" + json_escape(h.first) + "'",
                  KODO_ERR_INVALID_ARGUMENT);
    if (iequals(h.first, "content-length") || iequals(h.first, "transfer-encoding"))
      throw Error("response header '" + h.first + "' is set by the server",
                  KODO_ERR_INVALID_ARGUMENT);
    if (iequals(h.first, "connection")) {
      std::string_view v = h.second;
      while (!v.empty()) {
        size_t comma = v.find(',');
        if (iequals(trim(v.substr(0, comma)), "close")) close_requested = true;
        v.remove_prefix(comma == std::string_view::npos ? v.size() : comma + 1);
      }
    }
  }
  if (close_requested || conn_.is_stopping()) keep_alive_ = false;

  std::string h;
  h.reserve(160 + framing.size() + content_type.size());
  h += "HTTP/1.1 ";
  h += std::to_string(status);
  h += ' ';
  h += reason_phrase(status);
  h += "\r\nDate: ";
  h += http_date();
  h += "\r\n";
  if (!content_type.empty()) {
    h += "Content-Type: ";
    h += content_type;
    h += "\r\n";
  }
  for (const auto &x : extra) {
    if (iequals(x.first, "connection")) continue;  // ours, below, says the final word
    h += x.first;
    h += ": ";
    h += x.second;
    h += "\r\n";
  }
  h += framing;
  if (!keep_alive_)
    h += "Connection: close\r\n";
  else if (http_minor_ == 0)
    h += "Connection: keep-alive\r\n";  // HTTP/1.0 persists only when told
  h += "\r\n";
  return h;
}

void HttpResponder::send(int status, std::string_view content_type, std::string_view body,
                         const HttpHeaders &extra_headers) {
  // 204 and 304 never carry a body (RFC 9110 6.4.1).
  bool bodyless = status == 204 || status == 304;
  std::string framing =
      bodyless ? std::string() : "Content-Length: " + std::to_string(body.size()) + "\r\n";
  std::string out = head(status, content_type, extra_headers, framing);
  state_ = State::Sent;
  if (bodyless || head_request_) {
    conn_.write_all(out);
  } else if (body.size() <= size_t{64} * 1024) {
    out.append(body.data(), body.size());  // one send for the common small response
    conn_.write_all(out);
  } else if (conn_.write_all(out)) {
    conn_.write_all(body);
  }
}

bool HttpResponder::start_stream(int status, std::string_view content_type,
                                 const HttpHeaders &extra_headers) {
  // HTTP/1.0 has no chunked coding: the stream's end is the connection's close.
  bool chunked = http_minor_ >= 1;
  if (!chunked) keep_alive_ = false;
  std::string out = head(status, content_type, extra_headers,
                         chunked ? "Transfer-Encoding: chunked\r\n" : std::string());
  chunked_ = chunked;
  state_ = State::Streaming;
  if (!conn_.write_all(out)) return false;
  if (head_request_) return false;  // HEAD: the headers are the whole answer
  return !conn_.is_stopping();
}

bool HttpResponder::write(std::string_view chunk) {
  if (state_ != State::Streaming)
    throw Error("HttpResponder::write() called without start_stream()", KODO_ERR_INTERNAL);
  if (head_request_ || conn_.broken || conn_.is_stopping()) return false;
  // A client that closed its side would accept this write into the kernel and only reset
  // the next one; asking first ends a stream one event earlier.
  if (conn_.peer_gone()) return false;
  if (chunk.empty()) return true;  // an empty chunk would end a chunked body
  if (!chunked_) return conn_.write_all(chunk);
  char size_line[24];
  int n = std::snprintf(size_line, sizeof size_line, "%zx\r\n", chunk.size());
  std::string framed;
  framed.reserve(static_cast<size_t>(n) + chunk.size() + 2);
  framed.append(size_line, static_cast<size_t>(n));
  framed.append(chunk.data(), chunk.size());
  framed += "\r\n";
  return conn_.write_all(framed);
}

bool HttpResponder::wait(int timeout_ms) {
  return conn_.wait_open(timeout_ms);
}

bool HttpResponder::stopping() const {
  return conn_.is_stopping();
}

bool HttpResponder::responded() const {
  return state_ != State::None;
}

bool HttpResponder::finish() {
  if (state_ == State::Streaming && chunked_ && !head_request_ && !conn_.broken)
    conn_.write_all("0\r\n\r\n");
  return keep_alive_ && !conn_.broken && !conn_.is_stopping();
}

// ---------------------------------------------------------------------------------------
// Listen address

ListenAddress parse_listen_address(std::string_view address) {
  auto bad = [&](const std::string &why) {
    return Error("invalid listen address '" + json_escape(address) + "': " + why +
                     " (expected host:port, http://host:port or [ipv6]:port)",
                 KODO_ERR_INVALID_ARGUMENT);
  };
  std::string_view s = address;
  if (istarts_with(s, "https://")) throw bad("TLS is not supported");
  if (istarts_with(s, "http://")) s.remove_prefix(7);
  if (s.find("://") != std::string_view::npos) throw bad("unsupported scheme");
  if (!s.empty() && s.back() == '/') s.remove_suffix(1);
  if (s.find('/') != std::string_view::npos) throw bad("a path is not allowed");
  if (s.empty()) throw bad("it is empty");

  ListenAddress out;
  std::string_view port;
  if (s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos) throw bad("missing ']'");
    out.host.assign(s.substr(1, close - 1));
    if (out.host.empty()) throw bad("empty IPv6 address");
    std::string_view rest = s.substr(close + 1);
    if (rest.empty() || rest.front() != ':') throw bad("missing port");
    port = rest.substr(1);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) throw bad("missing port");
    out.host.assign(s.substr(0, colon));
    if (out.host.find(':') != std::string::npos)
      throw bad("an IPv6 address must be in brackets, e.g. [::1]:3370");
    port = s.substr(colon + 1);
  }
  for (char c : out.host) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f || c == '[' || c == ']' || c == '@') throw bad("invalid host");
  }
  if (port.empty() || port.size() > 5) throw bad("invalid port");
  unsigned value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') throw bad("invalid port");
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) throw bad("port out of range");
  out.port = static_cast<uint16_t>(value);
  return out;
}

// ---------------------------------------------------------------------------------------
// HttpServer

struct HttpServer::Impl {
  Options options;
  Handler handler;
  int listen_fd = -1;
  int wake_read = -1;
  int wake_write = -1;
  std::atomic<bool> stopping{false};
  uint16_t bound_port = 0;

  std::mutex lifecycle_mu;  // start() and stop()
  bool started = false;
  bool stopped = false;
  std::thread acceptor;

  std::mutex mu;  // guards the connection bookkeeping below
  std::map<uint64_t, std::thread> connections;
  std::vector<uint64_t> finished;  // threads that ended and wait to be joined
  size_t active = 0;
  uint64_t next_id = 0;

  // A refused (503) socket that the acceptor drains briefly before closing.
  struct Rejected {
    int fd;
    Clock::time_point deadline;
    size_t drained;
  };

  http_detail::Connection connection_for(int fd) const {
    http_detail::Connection c;
    c.fd = fd;
    c.wake_fd = wake_read;
    c.stopping = &stopping;
    c.io_timeout_ms = options.idle_timeout_ms;
    return c;
  }

  void reap() {
    std::vector<std::thread> done;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (uint64_t id : finished) {
        auto it = connections.find(id);
        if (it == connections.end()) continue;
        done.push_back(std::move(it->second));
        connections.erase(it);
      }
      finished.clear();
    }
    for (auto &t : done) t.join();  // they have ended; this does not wait on a client
  }

  void admit(int fd, std::vector<Rejected> &rejected) {
    bool busy = false;
    uint64_t id = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (active >= options.max_connections) {
        busy = true;
      } else {
        ++active;
        id = next_id++;
      }
    }
    std::string why =
        "too many connections (limit " + std::to_string(options.max_connections) + ")";
    if (!busy) {
      try {
        std::thread t([this, fd, id] {
          serving_server = this;
          serve(fd);
          std::lock_guard<std::mutex> lock(mu);
          --active;
          finished.push_back(id);
        });
        std::lock_guard<std::mutex> lock(mu);
        connections.emplace(id, std::move(t));
        return;
      } catch (const std::system_error &) {
        std::lock_guard<std::mutex> lock(mu);
        --active;
        why = "cannot start a connection thread";
      }
    }
    // The fresh socket's send buffer is empty, so this short answer goes out at once.
    http_detail::Connection c = connection_for(fd);
    c.fail(503, why);
    if (c.broken) {
      ::close(fd);
      return;
    }
    ::shutdown(fd, SHUT_WR);
    if (rejected.size() >= kMaxRejectedLingering) {
      ::close(rejected.front().fd);
      rejected.erase(rejected.begin());
    }
    rejected.push_back({fd, Clock::now() + std::chrono::milliseconds(kLingerMs), 0});
  }

  void accept_loop() {
    std::vector<Rejected> rejected;
    Clock::time_point pause_until{};  // after running out of descriptors, back off a moment
    std::vector<pollfd> fds;
    while (!stopping.load(std::memory_order_acquire)) {
      reap();
      auto now = Clock::now();
      bool accepting = now >= pause_until;
      fds.clear();
      fds.push_back({wake_read, POLLIN, 0});
      fds.push_back({accepting ? listen_fd : -1, POLLIN, 0});  // poll skips negative fds
      int timeout = accepting ? -1 : remaining_ms(pause_until) + 1;
      for (const auto &r : rejected) {
        fds.push_back({r.fd, POLLIN, 0});
        int left = remaining_ms(r.deadline);
        timeout = timeout < 0 ? left : std::min(timeout, left);
      }
      int n = ::poll(fds.data(), fds.size(), timeout);
      if (n < 0) {
        if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      if (fds[0].revents & POLLIN) break;

      now = Clock::now();
      for (size_t i = rejected.size(); i-- > 0;) {
        Rejected &r = rejected[i];
        bool done = now >= r.deadline;
        if (!done && fds[i + 2].revents) {
          char sink[4096];
          ssize_t got = ::recv(r.fd, sink, sizeof sink, 0);
          if (got > 0)
            r.drained += static_cast<size_t>(got);
          else if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            done = true;
          if (r.drained > kMaxLingerBytes) done = true;
        }
        if (done) {
          ::close(r.fd);
          rejected.erase(rejected.begin() + static_cast<std::ptrdiff_t>(i));
        }
      }

      if (accepting && (fds[1].revents & POLLIN)) {
        for (int k = 0; k < 64; ++k) {  // a burst, then back to poll to stay responsive
          int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
              pause_until = Clock::now() + std::chrono::milliseconds(100);
            break;
          }
          admit(fd, rejected);
        }
      }
    }
    for (auto &r : rejected) ::close(r.fd);
  }

  // One connection's life: read, parse, dispatch, repeat while keep-alive allows.
  void serve(int fd) {
    http_detail::Connection conn = connection_for(fd);
    const int idle = options.idle_timeout_ms;
    std::string buf;
    bool peer_eof = false;
    bool sent_continue = false;
    bool headers_done = false;
    // The parser is stateless, so each attempt re-reads the whole request. parse_at is the
    // size below which an attempt cannot succeed (exact for Content-Length bodies). A
    // chunked body gives no such bound: a client trickling tiny packets would make us
    // re-parse megabytes per packet. So while a chunked body grows we re-parse only after
    // geometric growth (eager_at) or once the client pauses; that keeps the work linear.
    size_t parse_at = 1;
    size_t eager_at = 0;
    bool paused = false;
    Clock::time_point request_began = Clock::now();
    try {
      while (!stopping.load(std::memory_order_acquire)) {
        if (!buf.empty() && buf.size() >= parse_at &&
            (buf.size() >= eager_at || paused || peer_eof)) {
          paused = false;
          HttpRequest request;
          ParseResult r = parse_http_request(buf, options.limits, request);
          if (r.status == ParseStatus::Complete) {
            bool again = conn.run(request, handler);
            buf.erase(0, r.consumed);
            if (buf.empty() && buf.capacity() > kMaxReadSize) std::string().swap(buf);
            sent_continue = false;
            headers_done = false;
            parse_at = 1;
            eager_at = 0;
            request_began = Clock::now();
            if (!again) break;
            continue;
          }
          if (r.status == ParseStatus::Error) {
            conn.fail(r.http_status, r.error);
            conn.linger();
            break;
          }
          headers_done = r.headers_complete;
          parse_at = std::max(r.need_bytes, buf.size() + 1);
          eager_at = 0;
          if (headers_done && request.header("transfer-encoding") != nullptr)
            eager_at = std::max(parse_at, buf.size() + std::max(kReadSize, buf.size() / 4));
          // curl and others wait (about a second) for this before sending a large body.
          if (headers_done && !sent_continue && !peer_eof && request.http_minor == 1) {
            const std::string *expect = request.header("expect");
            if (expect != nullptr && iequals(trim(*expect), "100-continue")) {
              conn.write_all("HTTP/1.1 100 Continue\r\n\r\n");
              sent_continue = true;
            }
          }
        }
        if (peer_eof || conn.broken) break;  // no more bytes will come

        // Idle between requests: the idle timeout. Inside a request's header section: the
        // same budget for the whole section, so a trickling client cannot hold us forever.
        int timeout = idle > 0 ? idle : -1;
        if (idle > 0 && !buf.empty() && !headers_done) {
          timeout = remaining_ms(request_began + std::chrono::milliseconds(idle));
          if (timeout <= 0) {
            conn.fail(408, "request not received in time");
            conn.linger();
            break;
          }
        }
        bool awaiting_pause = !buf.empty() && buf.size() >= parse_at && buf.size() < eager_at;
        if (awaiting_pause) timeout = timeout < 0 ? kPauseMs : std::min(timeout, kPauseMs);
        pollfd p[2] = {{fd, POLLIN, 0}, {wake_read, POLLIN, 0}};
        int n = ::poll(p, 2, timeout);
        if (n < 0) {
          if (errno == EINTR) continue;
          break;
        }
        if (p[1].revents & POLLIN) break;
        if (n == 0 && awaiting_pause) {
          paused = true;
          continue;
        }
        if (n == 0) {
          if (!buf.empty()) {
            conn.fail(408, "request not received in time");
            conn.linger();
          }
          break;  // an idle keep-alive connection simply ends
        }
        size_t want = kReadSize;
        if (parse_at > buf.size())
          want = std::min(std::max(want, parse_at - buf.size()), kMaxReadSize);
        size_t old = buf.size();
        buf.resize(old + want);
        ssize_t got = ::recv(fd, &buf[old], want, 0);
        buf.resize(old + (got > 0 ? static_cast<size_t>(got) : 0));
        if (got > 0) {
          if (old == 0) request_began = Clock::now();
        } else if (got == 0) {
          peer_eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          break;
        }
      }
    } catch (...) {
      // Out of memory or a bug: drop this connection, keep the server.
    }
    ::close(fd);
  }
};

HttpServer::HttpServer(Options options, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() {
  try {
    stop();
  } catch (...) {
  }
}

void HttpServer::start() {
  Impl &s = *impl_;
  std::lock_guard<std::mutex> lock(s.lifecycle_mu);
  if (s.started) throw Error("HTTP server already started", KODO_ERR_INTERNAL);
  const std::string &address = s.options.address;
  if (!s.handler)
    throw Error("HTTP server on '" + address + "' has no handler", KODO_ERR_INVALID_ARGUMENT);
  ListenAddress where = parse_listen_address(address);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo *found = nullptr;
  std::string port_text = std::to_string(where.port);
  int rc = ::getaddrinfo(where.host.empty() ? nullptr : where.host.c_str(), port_text.c_str(),
                         &hints, &found);
  if (rc != 0)
    throw Error("cannot listen on '" + address + "': " + ::gai_strerror(rc),
                KODO_ERR_INVALID_ARGUMENT);
  int fd = -1;
  int last_errno = 0;
  for (addrinfo *ai = found; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0 ||
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
      last_errno = errno;
      close_fd(fd);
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0)
    throw Error("cannot listen on '" + address + "': " + std::system_category().message(last_errno),
                KODO_ERR_UNAVAILABLE);

  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  if (::getsockname(fd, reinterpret_cast<sockaddr *>(&bound), &len) == 0) {
    if (bound.ss_family == AF_INET)
      s.bound_port = ntohs(reinterpret_cast<sockaddr_in *>(&bound)->sin_port);
    else if (bound.ss_family == AF_INET6)
      s.bound_port = ntohs(reinterpret_cast<sockaddr_in6 *>(&bound)->sin6_port);
  }

  int wake[2];
  if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    int e = errno;
    close_fd(fd);
    throw Error(
        "cannot listen on '" + address + "': wake pipe: " + std::system_category().message(e),
        KODO_ERR_IO);
  }
  s.listen_fd = fd;
  s.wake_read = wake[0];
  s.wake_write = wake[1];
  try {
    s.acceptor = std::thread([&s] { s.accept_loop(); });
  } catch (const std::system_error &e) {
    close_fd(s.listen_fd);
    close_fd(s.wake_read);
    close_fd(s.wake_write);
    throw Error("cannot listen on '" + address + "': " + e.what(), KODO_ERR_INTERNAL);
  }
  s.started = true;
}

uint16_t HttpServer::port() const {
  return impl_->bound_port;
}

void HttpServer::stop() {
  Impl &s = *impl_;
  std::lock_guard<std::mutex> lock(s.lifecycle_mu);
  if (!s.started || s.stopped) return;
  // Joining our own thread would deadlock; say so instead.
  if (serving_server == &s)
    throw Error("HttpServer::stop() called from one of its request handlers", KODO_ERR_INTERNAL);
  s.stopped = true;
  s.stopping.store(true, std::memory_order_release);
  char byte = 1;
  while (::write(s.wake_write, &byte, 1) < 0 && errno == EINTR) {
  }
  if (s.acceptor.joinable()) s.acceptor.join();
  close_fd(s.listen_fd);  // only now: the acceptor was polling it
  std::map<uint64_t, std::thread> all;
  {
    std::lock_guard<std::mutex> guard(s.mu);
    all.swap(s.connections);
    s.finished.clear();
  }
  for (auto &entry : all) entry.second.join();
  close_fd(s.wake_read);
  close_fd(s.wake_write);
}

}  // namespace kodo
