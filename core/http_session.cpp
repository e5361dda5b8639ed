// http_session.cpp: one connection (see http_session.hpp).
#include "core/http_session.hpp"

#include "core/http_response.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/read.hpp>

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstdio>

namespace kodo {
namespace http_detail {

namespace http = beast::http;

namespace {

constexpr size_t kMaxLingerBytes = 1 << 20;  // drained before closing after an error
constexpr int kLingerMs = 2000;
constexpr size_t kLowMark = size_t{64} * 1024;  // a blocking stream write waits below this

bool is_parse_error(const beast::error_code &ec) {
  return ec.category() == make_error_code(http::error::need_more).category();
}

const std::shared_ptr<const std::string> &last_chunk() {
  static const auto bytes = std::make_shared<const std::string>("0\r\n\r\n");
  return bytes;
}

const char kCrlf[] = "\r\n";

}  // namespace

Session::Session(asio::ip::tcp::socket socket, std::shared_ptr<HttpServer::Impl> server)
    : socket_(std::move(socket), server->tls.get()),
      timer_(socket_.get_executor()),
      server_(std::move(server)),
      direct_fd_(socket_.tls() ? -1 : socket_.tcp().native_handle()) {}

Session::~Session() {
  server_->queued_bytes.fetch_sub(counted_);
  std::lock_guard<std::mutex> lock(server_->mu);
  if (server_->sessions.erase(this) != 0 && server_->sessions.empty())
    server_->all_closed.notify_all();
}

void Session::start() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    if (self->socket_.tls())
      self->handshake();
    else
      self->read_head();
  });
}

void Session::reject(const std::string &why) {
  rejected_ = true;
  asio::post(socket_.get_executor(), [self = shared_from_this(), why] {
    self->phase_ = Phase::Handling;
    self->fail(503, why);
  });
}

void Session::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    changed_.notify_all();  // blocking handlers see stopping() now
  }
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    if (self->phase_ != Phase::Handling) {
      self->close();
      return;
    }
    bool stream_open = false;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      stream_open = self->stream_ && !self->handler_running_;
    }
    if (stream_open) self->end_stream(false);  // a handed-off stream: end it cleanly
  });
}

// ---- reading a request ------------------------------------------------------------------

void Session::arm(int timeout_ms) {
  const uint64_t generation = ++timer_generation_;
  timed_out_ = false;
  if (timeout_ms <= 0) {
    timer_.cancel();
    return;
  }
  timer_.expires_after(std::chrono::milliseconds(timeout_ms));
  timer_.async_wait([self = shared_from_this(), generation](beast::error_code ec) {
    if (ec || generation != self->timer_generation_ || self->closed_) return;
    self->timed_out_ = true;
    beast::error_code ignored;
    self->socket_.cancel(ignored);  // the pending read or write ends with operation_aborted
  });
}

void Session::disarm() {
  ++timer_generation_;
  timer_.cancel();
}

void Session::read_head() {
  if (closed_) return;
  phase_ = Phase::Reading;
  if (server_->stopping.load()) {
    close();
    return;
  }
  const HttpLimits &limits = server_->options.limits;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(
      std::min<size_t>(limits.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
  parser_->body_limit(limits.max_body_bytes);
  arm(server_->options.idle_timeout_ms);
  if (input_ended_) {
    // What is buffered is all the client sent (pipelined requests before its end of input).
    // A read at the end of input returns at once, so this does not block the strand.
    beast::error_code ec;
    http::read_header(socket_, buffer_, *parser_, ec);
    on_head(ec);
    return;
  }
  http::async_read_header(
      socket_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->on_head(ec); });
}

void Session::on_head(beast::error_code ec) {
  if (closed_) return;
  if (ec) {
    disarm();
    if (timed_out_ && (buffer_.size() > 0 || parser_->got_some()))
      fail(408, "request head not received within " +
                    std::to_string(server_->options.idle_timeout_ms / 1000.0) + " s");
    else if (is_parse_error(ec) && ec != http::error::end_of_stream &&
             ec != http::error::partial_message)
      fail(parse_error_status(ec), ec.message());
    else
      close();  // the client left, an idle connection timed out, or we are stopping
    return;
  }
  if (parser_->is_done()) {
    disarm();
    dispatch();
    return;
  }
  arm(server_->options.body_timeout_ms);
  auto read_body = [self = shared_from_this()] {
    if (self->input_ended_) {  // as in read_head
      beast::error_code e;
      http::read(self->socket_, self->buffer_, *self->parser_, e);
      self->on_body(e);
      return;
    }
    http::async_read(self->socket_, self->buffer_, *self->parser_,
                     [self](beast::error_code e, size_t) { self->on_body(e); });
  };
  // curl and others wait (about a second) for this before sending a large body.
  const auto &head = parser_->get();
  const auto expect = head[http::field::expect];
  if (head.version() == 11 && beast::iequals(expect, "100-continue")) {
    static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(socket_, asio::buffer(kContinue, sizeof kContinue - 1),
                      [self = shared_from_this(), read_body](beast::error_code e, size_t) {
                        if (e || self->closed_) {
                          self->close();
                          return;
                        }
                        read_body();
                      });
    return;
  }
  read_body();
}

void Session::on_body(beast::error_code ec) {
  if (closed_) return;
  disarm();
  if (ec) {
    if (timed_out_)
      fail(408, "request body not received within " +
                    std::to_string(server_->options.body_timeout_ms / 1000.0) + " s");
    else if (is_parse_error(ec) && ec != http::error::partial_message)
      fail(parse_error_status(ec), ec.message());
    else
      close();
    return;
  }
  dispatch();
}

void Session::dispatch() {
  phase_ = Phase::Handling;
  HttpRequest request;
  ParseResult r = request_from_message(parser_->release(), server_->options.limits, request);
  parser_.reset();
  request.tls = socket_.tls();
  if (r.status != ParseStatus::Complete) {
    fail(r.http_status, r.error);
    return;
  }
  boost::system::error_code peer_ec;
  const auto peer = socket_.tcp().remote_endpoint(peer_ec);
  if (!peer_ec) request.peer = peer.address().to_string();
  {
    std::lock_guard<std::mutex> lock(mu_);
    handler_running_ = true;
    stream_ = false;
    keep_alive_ = request.keep_alive;
    closing_after_ = false;
  }
  // wrk on /health answered at 60% of nginx's rate with every request hopping to the handler
  // pool and back: the routes that never block are answered here, on the strand.
  if (server_->options.quick_handler && run_quick_handler(request)) return;
  asio::post(*server_->handler_pool, [self = shared_from_this(), request = std::move(request)] {
    self->run_handler(request);
  });
}

// ---- writing ----------------------------------------------------------------------------

bool Session::enqueue(std::string_view bytes) {
  return enqueue(std::make_shared<const std::string>(bytes));
}

bool Session::enqueue(std::shared_ptr<const std::string> bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_) return false;
    pending_bytes_ += bytes->size();
    pending_.push_back(OutPiece{std::move(bytes)});
    recount_locked();
  }
  post_kick();
  return true;
}

void Session::recount_locked() {
  const size_t now = pending_bytes_ + inflight_;
  if (now >= counted_)
    server_->queued_bytes.fetch_add(now - counted_);
  else
    server_->queued_bytes.fetch_sub(counted_ - now);
  counted_ = now;
}

// At most one kick waits in the strand's queue: a viewer fed a million small writes must not
// queue a million handlers (they held gigabytes and all the latency); what they would have
// done, the one kick or the running write's completion does with everything queued.
void Session::post_kick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (kick_posted_) return;
    kick_posted_ = true;
  }
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->kick(); });
}

void Session::kick() {
  std::unique_lock<std::mutex> lock(mu_);
  kick_posted_ = false;
  if (closed_ || phase_ != Phase::Handling) return;
  if (writing_) return;
  if (broken_) {
    lock.unlock();
    close();
    return;
  }
  if (!pending_.empty()) {
    out_.swap(pending_);
    pending_.clear();
    inflight_ = pending_bytes_;
    pending_bytes_ = 0;
    writing_ = true;
    lock.unlock();
    changed_.notify_all();
    gather_.clear();
    for (const OutPiece &p : out_) {
      if (p.chunk_head_len > 0) gather_.emplace_back(p.chunk_head.data(), p.chunk_head_len);
      gather_.emplace_back(p.bytes->data(), p.bytes->size());
      if (p.chunk_head_len > 0) gather_.emplace_back(kCrlf, 2);
    }
    arm(server_->options.write_timeout_ms);
    asio::async_write(socket_, gather_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->on_write(ec);
    });
    return;
  }
  if (handler_running_ || stream_) return;  // more will come
  const bool again = keep_alive_ && !closing_after_ && !server_->stopping.load();
  const bool linger_first = closing_after_;
  lock.unlock();
  if (linger_first) {
    linger();
  } else if (again) {
    next_request();
  } else {
    beast::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    close();
  }
}

void Session::on_write(beast::error_code ec) {
  disarm();
  out_.clear();  // the shared pieces' last viewer lets them go
  gather_.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    inflight_ = 0;
    if (ec) broken_ = true;
    recount_locked();
  }
  changed_.notify_all();
  kick();
}

void Session::next_request() {
  if (watching_) {
    want_next_ = true;  // the watch read ends aborted and then reads the request
    beast::error_code ignored;
    socket_.cancel(ignored);
    return;
  }
  read_head();
}

void Session::watch() {
  if (closed_ || watching_ || phase_ != Phase::Handling) return;
  // Pipelined input is kept for the next request, up to the size of a request head.
  if (buffer_.size() >= server_->options.limits.max_header_bytes) return;
  watching_ = true;
  socket_.async_read_some(buffer_.prepare(4096),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            self->watching_ = false;
                            if (self->closed_) return;
                            if (!ec) self->buffer_.commit(n);
                            if (ec == asio::error::eof) self->input_ended_ = true;
                            if (self->want_next_) {
                              self->want_next_ = false;
                              self->read_head();
                              return;
                            }
                            if (ec) {
                              {
                                std::lock_guard<std::mutex> lock(self->mu_);
                                self->broken_ = true;
                              }
                              self->changed_.notify_all();
                              self->kick();
                              return;
                            }
                            if (self->stream_open()) self->watch();
                          });
}

void Session::fail(int status, const std::string &message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_after_ = true;
    keep_alive_ = false;
    handler_running_ = false;
    stream_ = false;
  }
  phase_ = Phase::Handling;
  enqueue(closing_error_response(status, message));
}

// Shuts our side down and drains the client's input for a moment before the close:
// closing a socket with unread input makes the kernel send a reset, which can destroy the
// error response before the client reads it.
void Session::linger() {
  phase_ = Phase::Lingering;
  beast::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  arm(kLingerMs);
  drain();
}

void Session::drain() {
  socket_.async_read_some(asio::buffer(sink_),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            self->lingered_ += n;
                            if (ec || self->lingered_ > kMaxLingerBytes || self->closed_) {
                              self->close();
                              return;
                            }
                            self->drain();
                          });
}

void Session::close() {
  if (closed_) return;
  closed_ = true;
  disarm();
  {
    // Before the close, under mu_: a direct write (stream_write) checks these under mu_,
    // and the descriptor's number may belong to another connection right after the close.
    std::lock_guard<std::mutex> lock(mu_);
    broken_ = true;
    direct_fd_ = -1;
  }
  beast::error_code ignored;
  socket_.close(ignored);
  {
    std::unique_lock<std::mutex> lock(mu_);
    stream_ = false;
    pending_.clear();
    pending_bytes_ = 0;
    recount_locked();
    fire_close_callbacks_locked(lock);
  }
  changed_.notify_all();
  std::lock_guard<std::mutex> lock(server_->mu);
  if (rejected_ && server_->rejecting > 0) --server_->rejecting;
  if (server_->sessions.erase(this) != 0 && server_->sessions.empty())
    server_->all_closed.notify_all();
}

void Session::fire_close_callbacks_locked(std::unique_lock<std::mutex> &lock) {
  std::vector<std::function<void()>> callbacks;
  callbacks.swap(on_close_);
  lock.unlock();
  for (auto &callback : callbacks) callback();
  lock.lock();
}

// ---- streams ----------------------------------------------------------------------------

void Session::begin_stream(bool chunked) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stream_ = true;
    chunked_ = chunked;
  }
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->watch(); });
}

bool Session::stream_write(std::shared_ptr<const std::string> chunk, bool bounded) {
  if (chunk->empty()) return usable();  // an empty chunk would end a chunked body
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (broken_ || !stream_ || server_->stopping.load()) return false;
    OutPiece piece{std::move(chunk)};
    if (chunked_) {
      const int n = std::snprintf(piece.chunk_head.data(), piece.chunk_head.size(), "%zx\r\n",
                                  piece.bytes->size());
      piece.chunk_head_len = static_cast<uint8_t>(n);
    }
    const size_t add = piece.wire_size();
    const size_t mine = pending_bytes_ + inflight_ + add;
    // A viewer that does not read is cut off rather than slowing anyone else; when all the
    // streams together hold too much, those already behind go first.
    if (bounded && (mine > server_->options.stream_buffer_bytes ||
                    (mine > kLowMark && server_->queued_bytes.load() + add >
                                            server_->options.stream_buffer_total_bytes))) {
      cut_locked(lock);
      return false;
    }
    if (pending_.empty() && !writing_ && direct_fd_ >= 0) {
      const size_t sent = write_now_locked(piece);
      if (broken_) {
        lock.unlock();
        changed_.notify_all();
        post_kick();  // the strand closes the connection
        return false;
      }
      if (sent == add) return true;
      piece = unsent_part(piece, sent);
    }
    pending_bytes_ += piece.wire_size();
    pending_.push_back(std::move(piece));
    recount_locked();
  }
  post_kick();
  if (bounded) return true;
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock,
                [&] { return broken_ || server_->stopping.load() || pending_bytes_ < kLowMark; });
  return !broken_ && !server_->stopping.load();
}

// Ten thousand viewers fed through the strand (a post, a kick, an async write and its
// completion per piece) kept both I/O threads busy with Asio's bookkeeping and delivered 65%
// of the frames a trivial server does; the caller's thread writing straight to the socket,
// when nothing is queued before the piece, leaves the strand only what the socket does not
// take at once. Plain TCP only: a TLS stream's state belongs to the strand.
size_t Session::write_now_locked(const OutPiece &piece) {
  iovec parts[3];
  int count = 0;
  if (piece.chunk_head_len > 0)
    parts[count++] = {const_cast<char *>(piece.chunk_head.data()), piece.chunk_head_len};
  parts[count++] = {const_cast<char *>(piece.bytes->data()), piece.bytes->size()};
  if (piece.chunk_head_len > 0) parts[count++] = {const_cast<char *>(kCrlf), 2};
  msghdr message{};
  message.msg_iov = parts;
  message.msg_iovlen = static_cast<size_t>(count);
  for (;;) {
    const ssize_t n = ::sendmsg(direct_fd_, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) broken_ = true;  // the client is gone
    return 0;
  }
}

// What a partial direct write left of piece, as plain bytes (its framing included).
OutPiece Session::unsent_part(const OutPiece &piece, size_t sent) {
  if (sent == 0) return piece;
  std::string wire;
  wire.reserve(piece.wire_size());
  wire.append(piece.chunk_head.data(), piece.chunk_head_len).append(*piece.bytes);
  if (piece.chunk_head_len > 0) wire.append(kCrlf, 2);
  return OutPiece{std::make_shared<const std::string>(wire.substr(sent))};
}

void Session::cut_locked(std::unique_lock<std::mutex> &lock) {
  broken_ = true;
  stream_ = false;
  fire_close_callbacks_locked(lock);
  lock.unlock();
  changed_.notify_all();
  post_kick();
}

void Session::end_stream(bool keep_alive) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!stream_) return;
    stream_ = false;
    if (!broken_ && chunked_) {
      pending_.push_back(OutPiece{last_chunk()});
      pending_bytes_ += last_chunk()->size();
      recount_locked();
    }
    keep_alive_ = keep_alive_ && keep_alive && chunked_;
    fire_close_callbacks_locked(lock);
  }
  post_kick();
}

bool Session::wait_open(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms > 0 ? timeout_ms : 0),
                    [&] { return broken_ || server_->stopping.load(); });
  return !broken_ && !server_->stopping.load();
}

bool Session::usable() {
  std::lock_guard<std::mutex> lock(mu_);
  return !broken_ && !server_->stopping.load();
}

bool Session::stream_open() {
  std::lock_guard<std::mutex> lock(mu_);
  return stream_ && !broken_;
}

void Session::on_close(std::function<void()> callback) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stream_ && !broken_) {
      on_close_.push_back(std::move(callback));
      return;
    }
  }
  callback();
}

}  // namespace http_detail
}  // namespace kodo
