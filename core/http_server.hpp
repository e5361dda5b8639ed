// http_server.hpp: the HTTP/1.1 server, Boost.Beast on Asio. A small fixed pool of I/O
// threads runs every connection (reading, parsing, writing, timeouts); a fixed pool of
// handler threads runs the request handlers, which may block (storage reads). Neither pool
// grows with the number of connections. Long-lived streams (Server-Sent Events) either
// block a handler thread (HttpResponder::write/wait) or, for thousands of viewers, are
// handed off as an HttpStream that any thread feeds without blocking.
#pragma once

#include "core/http_parser.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
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
class Session;
}

// A streamed response handed off by its handler (HttpResponder::start_async_stream).
// Thread-safe; write() never blocks: bytes wait in a bounded per-connection buffer, and a
// client that lets it fill is dropped (it reconnects, e.g. with Last-Event-ID).
class HttpStream {
 public:
  explicit HttpStream(std::shared_ptr<http_detail::Session> session);
  // Queues one piece. False once the stream is closed: the client left, a write timed out,
  // the buffer overflowed (the connection is then cut), end() was called, or the server is
  // stopping.
  bool write(std::string_view chunk);
  // The same, without a copy: bytes written to many streams are held once.
  bool write(std::shared_ptr<const std::string> chunk);
  // Ends the response cleanly; the connection may then carry another request.
  void end();
  bool open() const;
  // Called once (on an I/O thread, or at once if already closed) when the stream closes for
  // any reason; keep it short and non-blocking.
  void on_close(std::function<void()> callback);

 private:
  std::shared_ptr<http_detail::Session> session_;
};

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

  // Like start_stream, but the stream outlives the handler: the connection stays open
  // until the returned stream ends or closes. Null when the client is already gone, the
  // server is stopping, or the request was HEAD (the headers were then the whole answer).
  std::shared_ptr<HttpStream> start_async_stream(int status, std::string_view content_type,
                                                 const HttpHeaders &extra_headers = {});

  // Sends one piece of a stream (empty pieces are skipped), waiting while the client is
  // slow to read. Returns false once the client has gone, a write timed out, or the server
  // is stopping: the handler must then return. Throws kodo::Error if no stream was started.
  bool write(std::string_view chunk);

  // Sleeps up to timeout_ms, waking early when the client hangs up or the server stops.
  // Returns true when the stream is still usable (same meaning as write()'s result), so an
  // SSE loop can be: while (res.wait(3000)) { if (!res.write(ping)) break; }
  bool wait(int timeout_ms);

  bool stopping() const;   // the server is stopping
  bool responded() const;  // send() or a stream has been started

 private:
  friend class http_detail::Session;
  HttpResponder(std::shared_ptr<http_detail::Session> session, const HttpRequest &request);
  std::string head(int status, std::string_view content_type, const HttpHeaders &extra,
                   const std::string &framing);
  enum class State { None, Sent, Streaming, Detached };
  // Sends a stream's head; true when the stream is usable.
  bool open_stream(int status, std::string_view content_type, const HttpHeaders &extra_headers,
                   State state);

  std::shared_ptr<http_detail::Session> session_;
  bool head_request_;
  int http_minor_;
  bool keep_alive_;  // still allowed to reuse the connection
  bool chunked_ = false;
  State state_ = State::None;
};

class HttpServer {
 public:
  // Answers cheap requests on an I/O thread, without the hop to a handler thread; it must
  // not block (no storage read, no waiting). False: not answered (and nothing sent), the
  // request goes to the handler.
  using QuickHandler = std::function<bool(const HttpRequest &, HttpResponder &)>;
  struct Options {
    std::string address = "127.0.0.1:3370";  // see parse_listen_address; port 0 = any
    size_t max_connections = 512;            // beyond this, 503 and close
    // A request head (from the first byte, or from the end of the previous response on a
    // kept-alive connection) must arrive whole within this; <= 0: no limit.
    int idle_timeout_ms = 30000;
    int body_timeout_ms = 60000;   // a request body must arrive whole within this
    int write_timeout_ms = 30000;  // one write that makes no progress this long cuts the client
    size_t io_threads = 2;         // threads running every connection's I/O
    size_t handler_threads = 16;   // threads running handlers (which may block)
    size_t stream_buffer_bytes = size_t{256} << 10;  // per HttpStream, before the client is cut
    // All connections' queued bytes together: past this, a stream more than 64 KiB behind
    // is cut (counted per connection; bytes shared by many streams are held only once).
    size_t stream_buffer_total_bytes = size_t{256} << 20;
    HttpLimits limits;
    // HTTPS when both are set: PEM files, the certificate chain and its unencrypted key
    // (see tls_context.hpp). start() throws naming the file when one cannot be used.
    std::string tls_cert;
    std::string tls_key;
    QuickHandler quick_handler;  // none: every request goes to the handler
  };
  // Called on a handler thread, possibly many at once: it must be thread-safe.
  using Handler = std::function<void(const HttpRequest &, HttpResponder &)>;

  HttpServer(Options options, Handler handler);
  ~HttpServer();  // calls stop()
  HttpServer(const HttpServer &) = delete;
  HttpServer &operator=(const HttpServer &) = delete;

  // Loads the TLS files if given, binds (SO_REUSEADDR), listens and starts the threads.
  // Throws kodo::Error naming the file or the address when it cannot; throws if called twice.
  void start();
  // The bound port (useful after binding port 0); 0 before start().
  uint16_t port() const;
  // Open client connections now.
  size_t connections() const;
  // True while accepting fails for want of file descriptors (and for a moment after).
  bool out_of_descriptors() const;
  // Accepts that failed for want of file descriptors, since start.
  uint64_t descriptor_failures() const;
  // Closes the listener, lets running handlers finish their response (write()/wait()
  // report false, streams close), closes every connection and joins all threads. A handler
  // blocked elsewhere delays stop(). Idempotent; no restart afterwards. Throws kodo::Error
  // if called from one of this server's handlers (it would join itself).
  void stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
  std::mutex lifecycle_mu_;  // start() and stop()
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace kodo
