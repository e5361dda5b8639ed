// http_responder.cpp: what a handler uses to answer (HttpResponder, HttpStream), and the
// handler's run on a handler thread.
#include <kodo/host/error.hpp>
#include "core/http_response.hpp"
#include "core/http_session.hpp"

namespace kodo {

namespace {
// The server whose handler this thread is running, if any: stop() from there would wait
// for itself.
thread_local const void *serving_server = nullptr;
}  // namespace

bool serving_from(const void *server) {
  return serving_server == server;
}

namespace http_detail {

void Session::run_handler(const HttpRequest &request) {
  serving_server = server_.get();
  HttpResponder res(shared_from_this(), request);
  std::string failure;
  bool threw = false;
  try {
    server_->handler(request, res);
  } catch (const std::exception &e) {
    threw = true;
    failure = e.what();
    if (failure.empty()) failure = "the request handler failed";
  } catch (...) {
    threw = true;
    failure = "the request handler threw a non-standard exception";
  }
  serving_server = nullptr;
  finish_handler(res, threw, std::move(failure));
}

bool Session::run_quick_handler(const HttpRequest &request) {
  HttpResponder res(shared_from_this(), request);
  bool answered = false;
  std::string failure;
  bool threw = false;
  try {
    answered = server_->options.quick_handler(request, res);
  } catch (const std::exception &e) {
    threw = true;
    failure = e.what();
  } catch (...) {
    threw = true;
  }
  if (!res.responded() && !answered) return false;  // also when it threw: the handler answers
  if (failure.empty()) failure = "the quick request handler failed";
  finish_handler(res, threw, std::move(failure));
  return true;
}

void Session::finish_handler(HttpResponder &res, bool threw, std::string failure) {
  const bool cut = threw && res.responded();
  if (!res.responded()) {
    if (!threw) failure = "the request handler returned without responding";
    try {
      res.send(500, "application/json", json_error(failure));
    } catch (...) {
      threw = true;  // cannot happen with these arguments; close anyway
    }
  } else if (cut && res.state_ != HttpResponder::State::Sent) {
    // The status line is already out: all we can do is cut the response short, so the
    // client sees a truncated body rather than a clean end.
    std::lock_guard<std::mutex> lock(mu_);
    broken_ = true;
  }
  const bool keep = res.keep_alive_ && !cut;
  if (res.state_ == HttpResponder::State::Streaming) end_stream(keep);
  {
    std::lock_guard<std::mutex> lock(mu_);
    handler_running_ = false;
    keep_alive_ = keep_alive_ && keep;
  }
  changed_.notify_all();
  post_kick();
}

}  // namespace http_detail

// ---------------------------------------------------------------------------------------
// HttpResponder

HttpResponder::HttpResponder(std::shared_ptr<http_detail::Session> session,
                             const HttpRequest &request)
    : session_(std::move(session)),
      head_request_(request.method == "HEAD"),
      http_minor_(request.http_minor),
      keep_alive_(request.keep_alive) {}

std::string HttpResponder::head(int status, std::string_view content_type, const HttpHeaders &extra,
                                const std::string &framing) {
  if (state_ != State::None) throw Error(KODO_ERR_INTERNAL, "HTTP response already started");
  if (status < 200 || status > 599)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "invalid HTTP response status " + std::to_string(status));
  if (!valid_header_value(content_type))
    throw Error(KODO_ERR_INVALID_ARGUMENT, "invalid character in response Content-Type");
  // Check everything before changing any state, so a refused call leaves the responder
  // usable for the server's 500.
  bool close_requested = false;
  for (const auto &h : extra) {
    if (!valid_header_name(h.first) || !valid_header_value(h.second))
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "invalid response header '" + json_escape(h.first) + "'");
    if (iequals(h.first, "content-length") || iequals(h.first, "transfer-encoding"))
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "response header '" + h.first + "' is set by the server");
    if (iequals(h.first, "connection")) {
      std::string_view v = h.second;
      while (!v.empty()) {
        size_t comma = v.find(',');
        if (iequals(trim(v.substr(0, comma)), "close")) close_requested = true;
        v.remove_prefix(comma == std::string_view::npos ? v.size() : comma + 1);
      }
    }
  }
  if (close_requested || session_->stopping()) keep_alive_ = false;

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
  const bool bodyless = status == 204 || status == 304;
  const std::string framing =
      bodyless ? std::string() : "Content-Length: " + std::to_string(body.size()) + "\r\n";
  std::string out = head(status, content_type, extra_headers, framing);
  state_ = State::Sent;
  if (!bodyless && !head_request_) out.append(body.data(), body.size());
  session_->enqueue(out);
}

bool HttpResponder::open_stream(int status, std::string_view content_type,
                                const HttpHeaders &extra_headers, State state) {
  // HTTP/1.0 has no chunked coding: the stream's end is the connection's close.
  const bool chunked = http_minor_ >= 1;
  if (!chunked) keep_alive_ = false;
  std::string out = head(status, content_type, extra_headers,
                         chunked ? "Transfer-Encoding: chunked\r\n" : std::string());
  chunked_ = chunked;
  state_ = state;
  if (!session_->enqueue(out)) return false;
  if (head_request_) return false;  // HEAD: the headers are the whole answer
  session_->begin_stream(chunked);
  return session_->usable();
}

bool HttpResponder::start_stream(int status, std::string_view content_type,
                                 const HttpHeaders &extra_headers) {
  return open_stream(status, content_type, extra_headers, State::Streaming);
}

std::shared_ptr<HttpStream> HttpResponder::start_async_stream(int status,
                                                              std::string_view content_type,
                                                              const HttpHeaders &extra_headers) {
  if (!open_stream(status, content_type, extra_headers, State::Detached)) return nullptr;
  return std::make_shared<HttpStream>(session_);
}

bool HttpResponder::write(std::string_view chunk) {
  if (state_ != State::Streaming)
    throw Error(KODO_ERR_INTERNAL, "HttpResponder::write() called without start_stream()");
  if (head_request_) return false;
  return session_->stream_write(std::make_shared<const std::string>(chunk), false);
}

bool HttpResponder::wait(int timeout_ms) {
  return session_->wait_open(timeout_ms);
}

bool HttpResponder::stopping() const {
  return session_->stopping();
}

bool HttpResponder::responded() const {
  return state_ != State::None;
}

// ---------------------------------------------------------------------------------------
// HttpStream

HttpStream::HttpStream(std::shared_ptr<http_detail::Session> session)
    : session_(std::move(session)) {}

bool HttpStream::write(std::string_view chunk) {
  return session_->stream_write(std::make_shared<const std::string>(chunk), true);
}

bool HttpStream::write(std::shared_ptr<const std::string> chunk) {
  return session_->stream_write(std::move(chunk), true);
}

void HttpStream::end() {
  session_->end_stream(true);
}

bool HttpStream::open() const {
  return session_->stream_open() && !session_->stopping();
}

void HttpStream::on_close(std::function<void()> callback) {
  session_->on_close(std::move(callback));
}

}  // namespace kodo
