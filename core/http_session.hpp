// http_session.hpp: the server's inside (not for handlers): the state every connection
// shares with the server, and one connection's life as a Beast session.
//
// A session runs on its own strand of the I/O context. It reads a request head within the
// idle budget, then its body within the body budget (each budget covers the whole phase, so
// a client trickling bytes cannot stretch it), hands the request to the handler pool, and
// writes what the handler queues. Output from any thread goes through one queue guarded by
// mu_; the strand drains it with one gathered write. The queue holds shared, immutable
// pieces: the same SSE frames sent to thousands of viewers are held once, not once per
// viewer. While a stream is open a read stays pending so that a client hanging up is noticed
// at once.
#pragma once

#include "core/http_server.hpp"
#include "core/server_stream.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <array>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace kodo {

namespace asio = boost::asio;
namespace beast = boost::beast;

struct HttpServer::Impl {
  Options options;
  Handler handler;
  std::shared_ptr<asio::ssl::context> tls;  // set when serving HTTPS
  asio::io_context ioc;
  std::optional<asio::thread_pool> handler_pool;
  std::optional<asio::ip::tcp::acceptor> acceptor;
  std::optional<asio::steady_timer> accept_pause;  // after running out of descriptors
  std::vector<std::thread> io_threads;
  // Keeps the I/O threads running while a handler (on the handler pool) holds the only
  // work a connection has; released once every connection has closed.
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> io_work;
  std::atomic<bool> stopping{false};
  // Bytes queued on every connection together (counted per connection, though pieces are
  // shared): past options.stream_buffer_total_bytes, streams that are behind are cut first.
  std::atomic<size_t> queued_bytes{0};
  uint16_t bound_port = 0;
  // Seconds (steady clock) of the last accept that failed for want of descriptors.
  std::atomic<int64_t> descriptors_short_at{-1};
  std::atomic<uint64_t> descriptor_failures{0};  // accepts that failed for want of them

  std::mutex mu;  // the sessions, for stop()
  std::condition_variable all_closed;
  std::unordered_map<http_detail::Session *, std::weak_ptr<http_detail::Session>> sessions;
  size_t rejecting = 0;  // 503'd sockets still lingering
};

namespace http_detail {

// One piece of a connection's output: shared bytes, framed as a chunk when chunk_head_len > 0.
struct OutPiece {
  std::shared_ptr<const std::string> bytes;
  std::array<char, 20> chunk_head{};  // "<size hex>\r\n"; the chunk's CRLF follows the bytes
  uint8_t chunk_head_len = 0;
  size_t wire_size() const {
    return bytes->size() + (chunk_head_len > 0 ? chunk_head_len + size_t{2} : 0);
  }
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(asio::ip::tcp::socket socket, std::shared_ptr<HttpServer::Impl> server);
  ~Session();
  Session(const Session &) = delete;
  Session &operator=(const Session &) = delete;

  void start();                         // reads the first request (after the TLS handshake)
  void reject(const std::string &why);  // answers 503 and closes
  void shutdown();                      // the server is stopping (from any thread)
  bool rejected() const { return rejected_; }

  // ---- used by HttpResponder and HttpStream, from any thread ----
  bool stopping() const { return server_->stopping.load(std::memory_order_acquire); }
  // Queues bytes; false when the connection is already broken.
  bool enqueue(std::string_view bytes);
  bool enqueue(std::shared_ptr<const std::string> bytes);
  // A streamed response started (its head is queued): watch for a hang-up from now on.
  void begin_stream(bool chunked);
  // One piece of the open stream, framed as a chunk when chunked. bounded: cut the client
  // (false) when its queue would pass the stream limit, instead of waiting for it to drain.
  bool stream_write(std::shared_ptr<const std::string> chunk, bool bounded);
  // Ends the open stream (the last chunk when chunked); the response is then complete.
  void end_stream(bool keep_alive);
  // Sleeps up to timeout_ms; false as soon as the connection breaks or the server stops.
  bool wait_open(int timeout_ms);
  bool usable();  // not broken and the server not stopping
  void on_close(std::function<void()> callback);
  bool stream_open();

 private:
  // TLS: a plain-HTTP client is answered 400 in plain text; the handshake has the head's
  // time budget (http_handshake.cpp).
  void handshake();
  void read_head();
  void on_head(beast::error_code ec);
  void on_body(beast::error_code ec);
  void dispatch();
  void run_handler(const HttpRequest &request);
  bool run_quick_handler(const HttpRequest &request);  // true: answered
  // After a handler's call: answers 500 if it did not, cuts a response it broke off.
  void finish_handler(HttpResponder &res, bool threw, std::string failure);
  void kick();  // on the strand: write what is queued, or move to the next request
  void on_write(beast::error_code ec);
  void watch();  // on the strand: a pending read while a stream is open
  void next_request();
  void fail(int status, const std::string &message);  // error response, then linger
  void linger();
  void drain();
  void close();
  void post_kick();
  void arm(int timeout_ms);  // the current phase's budget; <= 0: none
  void disarm();
  void fire_close_callbacks_locked(std::unique_lock<std::mutex> &lock);
  void cut_locked(std::unique_lock<std::mutex> &lock);  // a stream's client falls behind
  // Writes piece straight to the socket without waiting; the bytes it took. Sets broken_
  // when the client is gone. Only while nothing else is queued or being written.
  size_t write_now_locked(const OutPiece &piece);
  static OutPiece unsent_part(const OutPiece &piece, size_t sent);
  void recount_locked();  // brings server_->queued_bytes up to date with this connection's

  enum class Phase { Reading, Handling, Lingering };
  ServerStream socket_;
  asio::steady_timer timer_;
  std::shared_ptr<HttpServer::Impl> server_;
  beast::flat_buffer buffer_;
  std::optional<beast::http::request_parser<beast::http::string_body>> parser_;
  std::vector<OutPiece> out_;               // being written (strand only)
  std::vector<asio::const_buffer> gather_;  // out_ as buffers (strand only)
  std::array<char, 4096> sink_{};
  size_t lingered_ = 0;
  Phase phase_ = Phase::Reading;   // strand only
  uint64_t timer_generation_ = 0;  // strand only
  bool timed_out_ = false;         // strand only: the phase's budget ran out
  bool closed_ = false;            // strand only
  bool watching_ = false;          // strand only: the hang-up read is pending
  bool want_next_ = false;         // strand only: the watch read was cancelled to read a request
  // strand only: a read returned the client's end of input. Asio (epoll, edge-triggered)
  // reports that end once: a later async read would wait for an event that never comes.
  bool input_ended_ = false;
  bool rejected_ = false;

  mutable std::mutex mu_;  // everything below
  std::condition_variable changed_;
  std::vector<OutPiece> pending_;
  size_t pending_bytes_ = 0;
  size_t counted_ = 0;  // this connection's bytes in server_->queued_bytes
  bool writing_ = false;
  bool kick_posted_ = false;  // a kick() waits in the strand's queue
  bool broken_ = false;       // client gone, write failed, or cut
  bool handler_running_ = false;
  size_t inflight_ = 0;         // bytes in out_
  bool stream_ = false;         // a streamed response is open
  bool chunked_ = false;        // ... framed as chunks
  bool keep_alive_ = false;     // the response in hand allows another request
  bool closing_after_ = false;  // close once the queue is written (error responses)
  int direct_fd_;  // the plain socket's descriptor for direct writes; -1: TLS, or closed
  std::vector<std::function<void()>> on_close_;
};

}  // namespace http_detail
}  // namespace kodo
