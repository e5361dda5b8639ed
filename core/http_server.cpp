// http_server.cpp: see http_server.hpp. The listener and the server's lifecycle; each
// connection is an http_detail::Session (http_session.cpp).
#include "core/http_server.hpp"

#include <kodo/host/error.hpp>
#include "core/http_response.hpp"
#include "core/http_session.hpp"
#include "core/thread_name.hpp"
#include "core/tls_context.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace kodo {

bool serving_from(const void *server);  // http_responder.cpp

namespace {

constexpr size_t kMaxRejectedLingering = 64;  // 503'd sockets lingering at once
constexpr int kAcceptPauseMs = 100;           // after running out of descriptors
constexpr int64_t kShortWindowS = 5;          // how long out_of_descriptors() stays true

int64_t steady_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void close_fd(int &fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

void accept_next(const std::shared_ptr<HttpServer::Impl> &s);

void admit(const std::shared_ptr<HttpServer::Impl> &s, asio::ip::tcp::socket socket) {
  // Every write is a whole response or a stream's batch of events: Nagle's algorithm would
  // only hold a stream's next batch back until the client acknowledged the last one.
  boost::system::error_code ignored;
  socket.set_option(asio::ip::tcp::no_delay(true), ignored);
  auto session = std::make_shared<http_detail::Session>(std::move(socket), s);
  bool busy = false;
  {
    std::lock_guard<std::mutex> lock(s->mu);
    if (s->sessions.size() - s->rejecting >= s->options.max_connections) {
      busy = true;
      if (s->rejecting >= kMaxRejectedLingering) return;  // closes the socket
      ++s->rejecting;
    }
    s->sessions.emplace(session.get(), session);
  }
  if (busy)
    session->reject("too many connections (limit " + std::to_string(s->options.max_connections) +
                    ")");
  else
    session->start();
}

void accept_next(const std::shared_ptr<HttpServer::Impl> &s) {
  s->acceptor->async_accept(
      asio::make_strand(s->ioc), [s](beast::error_code ec, asio::ip::tcp::socket socket) {
        if (s->stopping.load() || ec == asio::error::operation_aborted) return;
        if (!ec) {
          admit(s, std::move(socket));
          accept_next(s);
          return;
        }
        if (ec == asio::error::no_descriptors || ec.value() == ENFILE ||
            ec == asio::error::no_buffer_space || ec == asio::error::no_memory) {
          // Out of descriptors: back off a moment (the pending connection waits in the
          // backlog) instead of spinning, and let /health say so.
          s->descriptors_short_at.store(steady_seconds());
          s->descriptor_failures.fetch_add(1);
          s->accept_pause->expires_after(std::chrono::milliseconds(kAcceptPauseMs));
          s->accept_pause->async_wait([s](beast::error_code e) {
            if (!e) accept_next(s);
          });
          return;
        }
        accept_next(s);  // the client gave up before we accepted it, and the like
      });
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Listen address

ListenAddress parse_listen_address(std::string_view address) {
  auto bad = [&](const std::string &why) {
    return Error(KODO_ERR_INVALID_ARGUMENT,
                 "invalid listen address '" + json_escape(address) + "': " + why +
                     " (expected host:port, http://host:port or [ipv6]:port)");
  };
  std::string_view s = address;
  if (istarts_with(s, "https://"))
    throw bad("HTTPS is turned on by --tls-cert and --tls-key, not by the address");
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

HttpServer::HttpServer(Options options, Handler handler) : impl_(std::make_shared<Impl>()) {
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
  std::lock_guard<std::mutex> lock(lifecycle_mu_);
  if (started_) throw Error(KODO_ERR_INTERNAL, "HTTP server already started");
  const std::string &address = s.options.address;
  if (!s.handler)
    throw Error(KODO_ERR_INVALID_ARGUMENT, "HTTP server on '" + address + "' has no handler");
  ListenAddress where = parse_listen_address(address);
  if (!s.options.tls_cert.empty() || !s.options.tls_key.empty())
    s.tls = make_tls_server_context(s.options.tls_cert, s.options.tls_key);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo *found = nullptr;
  std::string port_text = std::to_string(where.port);
  int rc = ::getaddrinfo(where.host.empty() ? nullptr : where.host.c_str(), port_text.c_str(),
                         &hints, &found);
  if (rc != 0)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "cannot listen on '" + address + "': " + ::gai_strerror(rc));
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
    throw Error(KODO_ERR_UNAVAILABLE, "cannot listen on '" + address +
                                          "': " + std::system_category().message(last_errno));

  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  if (::getsockname(fd, reinterpret_cast<sockaddr *>(&bound), &len) == 0) {
    if (bound.ss_family == AF_INET)
      s.bound_port = ntohs(reinterpret_cast<sockaddr_in *>(&bound)->sin_port);
    else if (bound.ss_family == AF_INET6)
      s.bound_port = ntohs(reinterpret_cast<sockaddr_in6 *>(&bound)->sin6_port);
  }

  s.acceptor.emplace(asio::make_strand(s.ioc));
  s.accept_pause.emplace(s.acceptor->get_executor());
  beast::error_code ec;
  s.acceptor->assign(bound.ss_family == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4(), fd,
                     ec);
  if (ec) {
    close_fd(fd);
    throw Error(KODO_ERR_IO, "cannot listen on '" + address + "': " + ec.message());
  }
  s.handler_pool.emplace(std::max<size_t>(1, s.options.handler_threads));
  accept_next(impl_);
  s.io_work.emplace(s.ioc.get_executor());
  try {
    for (size_t i = 0; i < std::max<size_t>(1, s.options.io_threads); ++i)
      s.io_threads.emplace_back([&s] {
        name_this_thread("kodo-http-io");
        s.ioc.run();
      });
  } catch (const std::system_error &e) {
    s.ioc.stop();
    for (auto &t : s.io_threads) t.join();
    throw Error(KODO_ERR_INTERNAL, "cannot listen on '" + address + "': " + e.what());
  }
  started_ = true;
}

uint16_t HttpServer::port() const {
  return impl_->bound_port;
}

size_t HttpServer::connections() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->sessions.size() - impl_->rejecting;
}

bool HttpServer::out_of_descriptors() const {
  const int64_t at = impl_->descriptors_short_at.load();
  return at >= 0 && steady_seconds() - at < kShortWindowS;
}

uint64_t HttpServer::descriptor_failures() const {
  return impl_->descriptor_failures.load();
}

void HttpServer::stop() {
  Impl &s = *impl_;
  std::lock_guard<std::mutex> lock(lifecycle_mu_);
  if (!started_ || stopped_) return;
  // Waiting for our own handler would deadlock; say so instead.
  if (serving_from(&s))
    throw Error(KODO_ERR_INTERNAL, "HttpServer::stop() called from one of its request handlers");
  stopped_ = true;
  s.stopping.store(true);
  asio::post(s.acceptor->get_executor(), [&s] {
    beast::error_code ignored;
    s.acceptor->close(ignored);
    s.accept_pause->cancel();
  });
  std::vector<std::shared_ptr<http_detail::Session>> open;
  {
    std::lock_guard<std::mutex> guard(s.mu);
    for (auto &entry : s.sessions)
      if (auto session = entry.second.lock()) open.push_back(std::move(session));
  }
  // Idle connections close at once; a running handler finishes its response (write() and
  // wait() now report false), and its connection closes after it.
  for (auto &session : open) session->shutdown();
  open.clear();
  {
    std::unique_lock<std::mutex> guard(s.mu);
    s.all_closed.wait(guard, [&] { return s.sessions.empty(); });
  }
  s.handler_pool->join();
  s.io_work.reset();
  for (auto &t : s.io_threads) t.join();  // run() returns: no work is left
  s.io_threads.clear();
}

}  // namespace kodo
