// http_handshake.cpp: a TLS connection's start (see http_session.hpp). Before the handshake
// the first byte is peeked at: a TLS client opens with a handshake record (0x16); anything
// else is a plain-HTTP client at the HTTPS port, which gets a readable 400 rather than a
// TLS alert it cannot show. The handshake has the request head's budget, so a client that
// connects and never speaks TLS is cut like a slow head.
#include "core/http_session.hpp"

namespace kodo {
namespace http_detail {

namespace {
constexpr unsigned char kTlsHandshakeRecord = 0x16;
}

void Session::handshake() {
  if (closed_) return;
  phase_ = Phase::Reading;
  arm(server_->options.idle_timeout_ms);
  socket_.tcp().async_wait(
      asio::ip::tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
        if (self->closed_) return;
        unsigned char first = 0;
        size_t n = 0;
        if (!ec)
          n = self->socket_.tcp().receive(asio::buffer(&first, 1),
                                          asio::ip::tcp::socket::message_peek, ec);
        if (ec || n == 0) {  // the client left, timed out, or the server is stopping
          self->disarm();
          self->close();
          return;
        }
        if (first != kTlsHandshakeRecord) {
          self->disarm();
          self->socket_.fall_back_to_plain();
          self->fail(400, "this port speaks HTTPS: use https:// (plain HTTP is not served here)");
          return;
        }
        self->socket_.async_handshake([self](beast::error_code e) {
          if (self->closed_) return;
          self->disarm();
          if (e || self->server_->stopping.load()) {
            self->close();  // a failed or timed-out handshake: TLS already told the client
            return;
          }
          self->read_head();
        });
      });
}

}  // namespace http_detail
}  // namespace kodo
