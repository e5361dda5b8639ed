// server_stream.hpp: one connection's byte stream, plain TCP or TLS over it, with the few
// socket operations a Session uses (it is a Beast AsyncReadStream / AsyncWriteStream and a
// SyncReadStream). Cancelling, shutting down and closing act on the TCP socket underneath,
// which also ends a pending TLS operation.
//
// The server closes a TLS connection without sending close_notify: every response it
// writes is delimited by Content-Length or chunking (an HTTP/1.0 stream, the exception, ends
// with the connection either way), and waiting for the client's close_notify could hold a
// connection open at its client's pleasure.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <optional>
#include <utility>

namespace kodo {
namespace http_detail {

class ServerStream {
 public:
  using socket_type = boost::asio::ip::tcp::socket;
  using executor_type = socket_type::executor_type;

  // tls: the server's TLS context, or null for plain HTTP.
  ServerStream(socket_type socket, boost::asio::ssl::context *tls) {
    if (tls != nullptr)
      tls_.emplace(std::move(socket), *tls);
    else
      plain_.emplace(std::move(socket));
  }

  executor_type get_executor() { return tcp().get_executor(); }
  socket_type &tcp() { return tls_ ? tls_->next_layer() : *plain_; }

  // The server speaks TLS on this connection (and the client has not turned out to speak
  // plain HTTP to it).
  bool tls() const { return tls_.has_value() && !plain_fallback_; }
  // A TLS server's client spoke plain HTTP: answer it in plain text (an error, then close).
  void fall_back_to_plain() { plain_fallback_ = true; }

  template <class Handler>
  void async_handshake(Handler &&handler) {
    tls_->async_handshake(boost::asio::ssl::stream_base::server, std::forward<Handler>(handler));
  }

  template <class Buffers, class Handler>
  auto async_read_some(const Buffers &buffers, Handler &&handler) {
    if (tls()) return tls_->async_read_some(buffers, std::forward<Handler>(handler));
    return tcp().async_read_some(buffers, std::forward<Handler>(handler));
  }
  template <class Buffers, class Handler>
  auto async_write_some(const Buffers &buffers, Handler &&handler) {
    if (tls()) return tls_->async_write_some(buffers, std::forward<Handler>(handler));
    return tcp().async_write_some(buffers, std::forward<Handler>(handler));
  }
  template <class Buffers>
  size_t read_some(const Buffers &buffers, boost::system::error_code &ec) {
    if (tls()) return tls_->read_some(buffers, ec);
    return tcp().read_some(buffers, ec);
  }
  template <class Buffers>
  size_t read_some(const Buffers &buffers) {
    if (tls()) return tls_->read_some(buffers);
    return tcp().read_some(buffers);
  }

  void cancel(boost::system::error_code &ec) { tcp().cancel(ec); }
  void shutdown(socket_type::shutdown_type what, boost::system::error_code &ec) {
    tcp().shutdown(what, ec);
  }
  void close(boost::system::error_code &ec) { tcp().close(ec); }

 private:
  std::optional<boost::beast::ssl_stream<socket_type>> tls_;
  std::optional<socket_type> plain_;
  bool plain_fallback_ = false;
};

}  // namespace http_detail
}  // namespace kodo
