// redis_connection.hpp: one hiredis connection that reconnects with backoff, commands written as
// RESP by hand (so a whole batch is formatted once, outside any lock), and reply helpers.
//
// A Connection is used by one thread at a time. Every failure to reach Redis throws
// kodo::sdk::Error(KODO_ERR_UNAVAILABLE, retryable) naming the server by its redacted URL, and
// leaves the connection closed; the next call reconnects, once its backoff has passed.
#pragma once

#include <kodo/plugin.hpp>
#include <kodo/url.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace kodo::redis {

using Clock = std::chrono::steady_clock;
using kodo::sdk::Error;

// Where Redis is and how to log in, from KODO_REDIS_URL (redis://[user][:password@]host:port[/db]).
struct Endpoint {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string user, password;
  bool has_password = false;
  int db = 0;
  std::string shown;  // the URL with its password replaced, for every message

  static Endpoint parse(const std::string &text) {
    kodo::sdk::Url url = kodo::sdk::parse_url(text, {"redis", "rediss"});
    Endpoint e;
    e.shown = url.redacted();
    if (url.scheme == "rediss")
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "option url " + e.shown + ": rediss:// (TLS) is not supported by this build");
    if (!url.host.empty()) e.host = url.host;
    if (url.port) e.port = url.port;
    e.user = url.user;
    e.password = url.password;
    e.has_password = url.has_password;
    if (!url.path.empty()) {
      if (url.path.find_first_not_of("0123456789") != std::string::npos || url.path.size() > 5)
        throw Error(KODO_ERR_INVALID_ARGUMENT, "option url " + e.shown +
                                                   ": the path must be a database number, got '/" +
                                                   url.path + "'");
      e.db = std::stoi(url.path);  // checked above: 1 to 5 digits
    }
    return e;
  }
};

struct ReplyDeleter {
  void operator()(redisReply *r) const {
    if (r) freeReplyObject(r);
  }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

inline std::string_view text(const redisReply *r) {
  return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
               r->type == REDIS_REPLY_ERROR)
             ? std::string_view(r->str, r->len)
             : std::string_view();
}
inline bool is_error(const redisReply *r) {
  return r && r->type == REDIS_REPLY_ERROR;
}
inline bool is_array(const redisReply *r) {
  return r && r->type == REDIS_REPLY_ARRAY;
}
inline bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Appends one command in RESP to `out`.
inline void append_command(std::string &out, std::initializer_list<std::string_view> args) {
  out += '*';
  out += std::to_string(args.size());
  out += "\r\n";
  for (std::string_view a : args) {
    out += '$';
    out += std::to_string(a.size());
    out += "\r\n";
    out.append(a.data(), a.size());
    out += "\r\n";
  }
}
inline void append_command(std::string &out, const std::vector<std::string> &args) {
  out += '*';
  out += std::to_string(args.size());
  out += "\r\n";
  for (const std::string &a : args) {
    out += '$';
    out += std::to_string(a.size());
    out += "\r\n";
    out += a;
    out += "\r\n";
  }
}

// Errors Redis answers while it cannot serve yet (loading its data, a script running, out of
// memory): the same command may succeed later.
inline bool transient_error(std::string_view message) {
  for (std::string_view p : {"LOADING", "BUSY", "OOM", "MASTERDOWN", "TRYAGAIN", "READONLY",
                             "CLUSTERDOWN", "NOREPLICAS"})
    if (starts_with(message, p)) return true;
  return false;
}

class Connection {
 public:
  Connection(Endpoint endpoint, std::string role, int connect_timeout_ms)
      : endpoint_(std::move(endpoint)),
        role_(std::move(role)),
        connect_timeout_ms_(connect_timeout_ms) {}
  ~Connection() { close(); }
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  bool connected() const { return context_ != nullptr; }
  uint64_t reconnects() const { return reconnects_; }
  const std::string &last_error() const { return last_error_; }
  // When the connection last failed (or the epoch when it never did).
  Clock::time_point down_since() const { return down_since_; }
  const Endpoint &endpoint() const { return endpoint_; }

  // How long until the next connection attempt is allowed (zero when connected or due).
  Clock::duration backoff_left() const {
    if (context_) return Clock::duration::zero();
    return std::max(Clock::duration::zero(), next_attempt_ - Clock::now());
  }

  // Connects if needed, waiting out the backoff first when `wait` allows; throws when Redis
  // cannot be reached.
  void ensure(Clock::duration wait = Clock::duration::zero()) {
    if (context_) return;
    const auto left = backoff_left();
    if (left > Clock::duration::zero()) {
      if (left > wait) {
        std::this_thread::sleep_for(wait);
        throw unavailable("not reachable: " + last_error_ + " (retrying)");
      }
      std::this_thread::sleep_for(left);
    }
    connect();
  }

  // Sets how long one reply may take (a blocking XREADGROUP waits for its BLOCK time first).
  void set_reply_timeout(std::chrono::milliseconds timeout) {
    if (!context_ || timeout == reply_timeout_) return;
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    redisSetTimeout(context_, tv);
    reply_timeout_ = timeout;
  }

  // Writes `resp` (any number of commands) and returns exactly `count` replies. Error replies are
  // returned, not thrown; a broken connection throws, and then no reply is returned at all.
  std::vector<Reply> pipeline(const std::string &resp, size_t count) {
    ensure();
    std::vector<Reply> replies;
    replies.reserve(count);
    if (redisAppendFormattedCommand(context_, resp.data(), resp.size()) != REDIS_OK) fail();
    for (size_t i = 0; i < count; ++i) {
      void *raw = nullptr;
      if (redisGetReply(context_, &raw) != REDIS_OK || !raw) fail();
      replies.emplace_back(static_cast<redisReply *>(raw));
    }
    return replies;
  }

  // Writes `resp` and hands each reply to `on_reply` as it is read; stops at the first reply it
  // returns false for. Returns how many replies were read. A broken connection throws after
  // the replies read so far were handed over (so the caller knows what was confirmed).
  template <class OnReply>
  size_t stream(const char *data, size_t size, size_t count, OnReply &&on_reply) {
    ensure();
    if (redisAppendFormattedCommand(context_, data, size) != REDIS_OK) fail();
    for (size_t i = 0; i < count; ++i) {
      void *raw = nullptr;
      if (redisGetReply(context_, &raw) != REDIS_OK || !raw) fail();
      Reply reply(static_cast<redisReply *>(raw));
      if (!on_reply(reply.get())) {
        // The rest of the replies still come; drop the connection rather than read them.
        close_after_failure("pipeline abandoned after an error reply");
        return i + 1;
      }
    }
    return count;
  }

  // One command; an error reply is thrown as `what` failed.
  Reply command(const std::vector<std::string> &args, const std::string &what) {
    std::string resp;
    append_command(resp, args);
    auto replies = pipeline(resp, 1);
    if (is_error(replies[0].get()))
      throw Error(
          transient_error(text(replies[0].get())) ? KODO_ERR_UNAVAILABLE : KODO_ERR_IO,
          "redis at " + endpoint_.shown + ": " + what + ": " + std::string(text(replies[0].get())),
          transient_error(text(replies[0].get())));
    return std::move(replies[0]);
  }

  void close() {
    if (context_) redisFree(context_);
    context_ = nullptr;
  }

  Error unavailable(const std::string &what) const {
    return Error(KODO_ERR_UNAVAILABLE, "redis at " + endpoint_.shown + " (" + role_ + "): " + what,
                 true);
  }

 private:
  void connect() {
    timeval tv{connect_timeout_ms_ / 1000,
               static_cast<suseconds_t>(connect_timeout_ms_ % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, tv);
    if (!c || c->err) {
      std::string message = c ? c->errstr : "cannot allocate a connection";
      if (c) redisFree(c);
      note_failure(message);
      throw unavailable("cannot connect: " + message);
    }
    context_ = c;
    reply_timeout_ = std::chrono::milliseconds(-1);
    set_reply_timeout(std::chrono::milliseconds(10000));
    redisEnableKeepAlive(context_);
    try {
      if (endpoint_.has_password) {
        std::vector<std::string> auth = {"AUTH"};
        if (!endpoint_.user.empty()) auth.push_back(endpoint_.user);
        auth.push_back(endpoint_.password);
        login(auth, "AUTH (check the password in the URL)");
      }
      if (endpoint_.db != 0) login({"SELECT", std::to_string(endpoint_.db)}, "SELECT");
    } catch (...) {
      close();
      throw;
    }
    if (ever_connected_) ++reconnects_;
    ever_connected_ = true;
    connected_since_failure_ = true;
    backoff_ = std::chrono::milliseconds(50);
  }

  // AUTH and SELECT: a refusal is permanent, but is retried like an outage so a fixed
  // password or a restarted server is picked up; the message says what was refused.
  void login(const std::vector<std::string> &args, const char *what) {
    std::string resp;
    append_command(resp, args);
    if (redisAppendFormattedCommand(context_, resp.data(), resp.size()) != REDIS_OK) fail();
    void *raw = nullptr;
    if (redisGetReply(context_, &raw) != REDIS_OK || !raw) fail();
    Reply reply(static_cast<redisReply *>(raw));
    if (is_error(reply.get())) {
      std::string message = std::string(what) + " refused: " + std::string(text(reply.get()));
      note_failure(message);
      throw unavailable(message);
    }
  }

  [[noreturn]] void fail() {
    std::string message = context_ && context_->err ? context_->errstr : "connection lost";
    close_after_failure(message);
    throw unavailable(message);
  }

  void close_after_failure(const std::string &message) {
    close();
    note_failure(message);
  }

  void note_failure(const std::string &message) {
    if (connected_since_failure_) down_since_ = Clock::now();
    connected_since_failure_ = false;
    last_error_ = message;
    next_attempt_ = Clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, std::chrono::milliseconds(2000));
  }

  Endpoint endpoint_;
  std::string role_;
  int connect_timeout_ms_;
  redisContext *context_ = nullptr;
  std::chrono::milliseconds reply_timeout_{-1};
  std::chrono::milliseconds backoff_{50};
  Clock::time_point next_attempt_{};
  Clock::time_point down_since_{};
  bool connected_since_failure_ = true;
  bool ever_connected_ = false;
  uint64_t reconnects_ = 0;
  std::string last_error_;
};

}  // namespace kodo::redis
