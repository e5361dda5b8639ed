// http_server.hpp: a small HTTP/1.1 server on POSIX sockets. One acceptor thread plus one
// thread per connection (capped), non-blocking sockets driven by poll(2) with a shared
// wake pipe, so idle connections time out and stop() reaches every thread promptly.
// Long-lived streams (Server-Sent Events) are first-class: HttpResponder::write() notices
// a departed client or a stopping server and tells the handler to return.
#pragma once

#include "core/http_parser.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kodo {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// "127.0.0.1:3370", "http://localhost:3370", "[::1]:3370", ":3370" (all interfaces).
struct ListenAddress {
  std::string host;  // without brackets; empty = all interfaces
  uint16_t port = 0;
};
// Throws kodo::Error(KODO_ERR_INVALID_ARGUMENT) naming the address when it is malformed.
ListenAddress parse_listen_address(std::string_view address);

namespace http_detail {
struct Connection;
}

// Answers one request. Handed to the handler by reference; valid only during the call.
// Not thread-safe: use it from the handler's thread only.
class HttpResponder {
 public:
  HttpResponder(const HttpResponder &) = delete;
  HttpResponder &operator=(const HttpResponder &) = delete;
  ~HttpResponder() = default;

  // A whole response with Content-Length. extra_headers must not set Content-Length or
  // Transfer-Encoding; "Connection: close" is honoured. Throws kodo::Error on misuse
  // (a second response, a status outside 200..599, CR/LF in a header). A failed write
  // is not an error here: the connection is simply closed afterwards.
  void send(int status, std::string_view content_type, std::string_view body,
            const HttpHeaders &extra_headers = {});

  // Starts a streamed response and sends its headers: chunked for HTTP/1.1 clients,
  // close-delimited for HTTP/1.0. Returns false if the client is already gone or the
  // server is stopping (the handler should then return). Same misuse rules as send().
  bool start_stream(int status, std::string_view content_type,
                    const HttpHeaders &extra_headers = {});

  // Sends one piece of a stream (empty pieces are skipped). Returns false once the client
  // has gone (closed, reset or shut down its side), a write timed out, or the server is
  // stopping: the handler must then return. Throws kodo::Error if no stream was started.
  bool write(std::string_view chunk);

  // Sleeps up to timeout_ms, waking early when the client hangs up or the server stops.
  // Returns true when the stream is still usable (same meaning as write()'s result), so an
  // SSE loop can be: while (res.wait(3000)) { if (!res.write(ping)) break; }
  bool wait(int timeout_ms);

  bool stopping() const;   // the server is stopping
  bool responded() const;  // send() or start_stream() has been called

 private:
  friend struct http_detail::Connection;
  HttpResponder(http_detail::Connection &conn, const HttpRequest &request);
  std::string head(int status, std::string_view content_type, const HttpHeaders &extra,
                   const std::string &framing);
  bool finish();  // ends the response; true if the connection may carry another request

  enum class State { None, Sent, Streaming };
  http_detail::Connection &conn_;
  bool head_request_;
  int http_minor_;
  bool keep_alive_;  // still allowed to reuse the connection
  bool chunked_ = false;
  State state_ = State::None;
};

class HttpServer {
 public:
  struct Options {
    std::string address = "127.0.0.1:3370";  // see parse_listen_address; port 0 = any
    size_t max_connections = 512;            // beyond this, 503 and close
    int idle_timeout_ms = 30000;             // idle keep-alive / slow request; <= 0: none
    HttpLimits limits;
  };
  // Called on a connection's thread, possibly many at once: it must be thread-safe.
  using Handler = std::function<void(const HttpRequest &, HttpResponder &)>;

  HttpServer(Options options, Handler handler);
  ~HttpServer();  // calls stop()
  HttpServer(const HttpServer &) = delete;
  HttpServer &operator=(const HttpServer &) = delete;

  // Binds (SO_REUSEADDR), listens and starts the acceptor. Throws kodo::Error naming the
  // address when it cannot; throws if called twice.
  void start();
  // The bound port (useful after binding port 0); 0 before start().
  uint16_t port() const;
  // Closes the listener, wakes every connection (their writes fail, waits end) and joins
  // all threads. Handlers must return once write()/wait() report false or stopping() is
  // true; a handler blocked elsewhere delays stop(). Idempotent; no restart afterwards.
  // Throws kodo::Error if called from one of this server's handlers (it would join itself).
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kodo
