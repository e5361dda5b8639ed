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
#include <sys/socket.h>
#include <sys/uio.h>

#include <climits>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
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

// A reply, read by this file's own RESP reader rather than hiredis's: one read buffer holds a
// whole pipeline's replies and every node points into it, strings NUL-terminated in place (the
// '\r' after each is overwritten), so reading 1,000 stream entries costs no allocation per
// entry and an entry's strings can be handed to the host as they lie. Same shape as
// redisReply, and REDIS_REPLY_* types.
struct Value {
  int type = REDIS_REPLY_NIL;
  long long integer = 0;
  size_t len = 0;
  char *str = nullptr;
  size_t elements = 0;
  Value **element = nullptr;
};

namespace resp {

// How far the scan of a reply being received got, so more bytes continue it rather than
// start over (a reply of 1,000 entries arrives in many reads).
struct Scan {
  size_t start = SIZE_MAX;  // the reply scanned (SIZE_MAX: none)
  size_t pos = 0;           // the next value's header
  long long remaining = 0;  // values still to pass
};

}  // namespace resp

// The memory of one pipeline's replies: the bytes read, and the nodes built over them.
class Frame {
  static constexpr size_t kPointerSize = sizeof(void *);

 public:
  std::vector<char> bytes;  // bytes[0, filled) came from the server
  size_t filled = 0;
  resp::Scan scan;  // of the reply being received

  Value *make_values(size_t n) { return static_cast<Value *>(allocate(n * sizeof(Value))); }
  // Arrays of pointers to values (what Value::element points to).
  Value **make_pointers(size_t n) { return static_cast<Value **>(allocate(n * kPointerSize)); }

 private:
  void *allocate(size_t size) {
    size = (size + 15) & ~size_t{15};
    if (blocks_.empty() || used_ + size > block_size_) {
      block_size_ = std::max(size, size_t{64} << 10);
      blocks_.emplace_back(new std::max_align_t[block_size_ / sizeof(std::max_align_t) + 1]);
      used_ = 0;
    }
    void *p = reinterpret_cast<char *>(blocks_.back().get()) + used_;
    used_ += size;
    return p;
  }
  std::vector<std::unique_ptr<std::max_align_t[]>> blocks_;
  size_t used_ = 0, block_size_ = 0;
};

// One reply of a pipeline; keeps the pipeline's frame alive.
class Reply {
 public:
  Reply() = default;
  Reply(std::shared_ptr<Frame> frame, Value *value) : frame_(std::move(frame)), value_(value) {}
  const Value *get() const { return value_; }
  const Value *operator->() const { return value_; }
  const std::shared_ptr<Frame> &frame() const { return frame_; }

 private:
  std::shared_ptr<Frame> frame_;
  Value *value_ = nullptr;
};

namespace resp {

// Where the reply starting at `from` ends, or 0 when `bytes` does not hold all of it yet. Walks
// headers only (a bulk string is skipped by its length) and resumes from `scan`. Throws on
// bytes that are not RESP.
inline size_t complete(const char *bytes, size_t size, size_t from, Scan &scan) {
  if (scan.start != from) scan = Scan{from, from, 1};
  while (scan.remaining > 0) {
    const size_t pos = scan.pos;
    const void *nl = pos < size ? std::memchr(bytes + pos, '\n', size - pos) : nullptr;
    if (!nl) return 0;
    const size_t line_end = static_cast<size_t>(static_cast<const char *>(nl) - bytes) + 1;
    if (line_end < pos + 3 || bytes[line_end - 2] != '\r')
      throw std::runtime_error("a RESP line not ended by CRLF");
    const char type = bytes[pos];
    long long n = 0;
    if (type == '*' || type == '$') {
      const char *first = bytes + pos + 1, *last = bytes + line_end - 2;
      if (std::from_chars(first, last, n).ptr != last)
        throw std::runtime_error("a malformed RESP length");
      // Redis caps a string at 512 MB; no reply of ours has a billion elements.
      if (n > (type == '$' ? (1LL << 29) : (1LL << 30)))
        throw std::runtime_error("a RESP length of " + std::to_string(n));
    } else if (type != '+' && type != '-' && type != ':') {
      throw std::runtime_error(std::string("an unknown RESP type byte '") + type + "'");
    }
    size_t next = line_end;
    if (type == '$' && n >= 0) {
      if (next + static_cast<size_t>(n) + 2 > size) return 0;  // the body is not all here
      next += static_cast<size_t>(n) + 2;
      if (bytes[next - 2] != '\r' || bytes[next - 1] != '\n')
        throw std::runtime_error("a RESP string longer than its length says");
    }
    scan.pos = next;
    --scan.remaining;
    if (type == '*' && n > 0) scan.remaining += n;
  }
  scan.start = SIZE_MAX;
  return scan.pos;
}

inline size_t complete(const char *bytes, size_t size, size_t from) {
  Scan scan;
  return complete(bytes, size, from, scan);
}

// Builds the nodes of a complete reply at `pos`, advancing it. Throws on nesting deeper than
// any Redis reply (which would otherwise exhaust the stack).
inline void build(Frame &frame, size_t &pos, Value &v, int depth = 0) {
  if (depth > 32) throw std::runtime_error("a RESP reply nested deeper than 32 levels");
  char *bytes = frame.bytes.data();
  char *line = bytes + pos;
  // complete() checked that every line ends with CRLF: find it the same way.
  char *cr = static_cast<char *>(std::memchr(line, '\n', frame.filled - pos)) - 1;
  pos = static_cast<size_t>(cr - bytes) + 2;
  long long n = 0;
  switch (line[0]) {
    case '+':
    case '-':
      v.type = line[0] == '+' ? REDIS_REPLY_STATUS : REDIS_REPLY_ERROR;
      v.str = line + 1;
      v.len = static_cast<size_t>(cr - line - 1);
      *cr = '\0';
      return;
    case ':':
      v.type = REDIS_REPLY_INTEGER;
      std::from_chars(line + 1, cr, v.integer);
      return;
    case '$':
      std::from_chars(line + 1, cr, n);
      if (n < 0) return;  // nil
      v.type = REDIS_REPLY_STRING;
      v.str = bytes + pos;
      v.len = static_cast<size_t>(n);
      v.str[n] = '\0';
      pos += static_cast<size_t>(n) + 2;
      return;
    default:  // '*'; complete() refused anything else
      std::from_chars(line + 1, cr, n);
      if (n < 0) return;  // nil
      v.type = REDIS_REPLY_ARRAY;
      v.elements = static_cast<size_t>(n);
      v.element = frame.make_pointers(v.elements);
      Value *children = frame.make_values(v.elements);
      for (size_t i = 0; i < v.elements; ++i) {
        v.element[i] = new (&children[i]) Value();
        build(frame, pos, children[i], depth + 1);
      }
  }
}

}  // namespace resp

// strerror, thread-safe (the GNU strerror_r, which returns the text).
inline std::string system_error_text(int code) {
  char buffer[128];
  return ::strerror_r(code, buffer, sizeof buffer);
}

inline std::string_view text(const Value *r) {
  return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
               r->type == REDIS_REPLY_ERROR)
             ? std::string_view(r->str, r->len)
             : std::string_view();
}
inline bool is_error(const Value *r) {
  return r && r->type == REDIS_REPLY_ERROR;
}
inline bool is_array(const Value *r) {
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
    send(resp);
    return receive(count);
  }

  // The halves of pipeline(), for a caller that does other work while Redis answers: send
  // commands, and later receive exactly as many replies, before sending anything else.
  void send(const std::string &resp) {
    ensure();
    write_all(resp.data(), resp.size());
  }
  std::vector<Reply> receive(size_t count) {
    if (!context_) throw unavailable("the connection was lost before its replies came");
    auto frame = std::make_shared<Frame>();
    std::vector<size_t> starts;
    starts.reserve(count);
    size_t end = 0;
    for (size_t i = 0; i < count; ++i) {
      starts.push_back(end);
      end = read_reply(*frame, end);
    }
    // Every reply is in: the buffer no longer moves, so nodes may point into it.
    std::vector<Reply> replies;
    replies.reserve(count);
    for (size_t start : starts) {
      Value *v = new (frame->make_values(1)) Value();
      build(*frame, start, *v);
      replies.emplace_back(frame, v);
    }
    return replies;
  }

  // Writes `parts` (in one gathered write) and hands each reply to `on_reply` as it is read (valid
  // during the call only); stops at the first reply it returns false for. Returns how many replies
  // were read. A broken connection throws after the replies read so far were handed over (so the
  // caller knows what was confirmed).
  template <class OnReply>
  size_t stream(const std::vector<std::string_view> &parts, size_t count, OnReply &&on_reply) {
    ensure();
    write_all(parts);
    Frame frame;
    size_t start = 0;
    for (size_t i = 0; i < count; ++i) {
      const size_t end = read_reply(frame, start);
      Value v;
      size_t pos = start;
      build(frame, pos, v);
      if (!on_reply(static_cast<const Value *>(&v))) {
        // The rest of the replies still come; drop the connection rather than read them.
        close_after_failure("pipeline abandoned after an error reply");
        return i + 1;
      }
      // Drop what was handled once it is most of the buffer, so it does not grow with the
      // whole pipeline.
      if (end > (1u << 20) && end * 2 > frame.bytes.size()) {
        frame.bytes.erase(frame.bytes.begin(), frame.bytes.begin() + static_cast<long>(end));
        frame.filled -= end;
        start = 0;
      } else {
        start = end;
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
    write_all(resp.data(), resp.size());  // connect() calls this: not pipeline(), which ensures
    const Reply reply = std::move(receive(1)[0]);
    if (is_error(reply.get())) {
      std::string message = std::string(what) + " refused: " + std::string(text(reply.get()));
      note_failure(message);
      throw unavailable(message);
    }
  }

  // Sends all of `data` on the blocking socket (its timeout is the reply timeout).
  void write_all(const char *data, size_t size) { write_all({std::string_view(data, size)}); }

  // Sends the parts in order, as few system calls as the socket allows, without joining them.
  void write_all(const std::vector<std::string_view> &parts) {
    std::vector<iovec> iov;
    iov.reserve(parts.size());
    for (std::string_view p : parts)
      if (!p.empty()) iov.push_back(iovec{const_cast<char *>(p.data()), p.size()});
    size_t first = 0;
    while (first < iov.size()) {
      msghdr message{};
      message.msg_iov = &iov[first];
      message.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
      const ssize_t n = ::sendmsg(context_->fd, &message, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        fail(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
                 ? std::string("timed out writing")
                 : std::string("writing: ") +
                       (n < 0 ? system_error_text(errno) : std::string("connection closed")));
      // Skip what was sent: whole parts, then the front of a part sent in half.
      auto sent = static_cast<size_t>(n);
      while (first < iov.size() && sent >= iov[first].iov_len) sent -= iov[first++].iov_len;
      if (sent > 0) {
        iov[first].iov_base = static_cast<char *>(iov[first].iov_base) + sent;
        iov[first].iov_len -= sent;
      }
    }
  }

  void build(Frame &frame, size_t &pos, Value &v) {
    try {
      resp::build(frame, pos, v);
    } catch (const std::exception &e) {
      fail(std::string("the server sent ") + e.what());
    }
  }

  // Reads until the frame holds the whole reply starting at `start`; returns where it ends.
  size_t read_reply(Frame &frame, size_t start) {
    std::vector<char> &bytes = frame.bytes;
    for (;;) {
      size_t end = 0;
      try {
        end = resp::complete(bytes.data(), frame.filled, start, frame.scan);
      } catch (const std::exception &e) {
        fail(std::string("the server sent ") + e.what());
      }
      if (end > 0) return end;
      if (bytes.size() - frame.filled < 16384)
        bytes.resize(std::max<size_t>(bytes.size() * 2, 65536));
      const ssize_t n =
          ::recv(context_->fd, bytes.data() + frame.filled, bytes.size() - frame.filled, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) fail("connection closed by the server");
      if (n < 0)
        fail(errno == EAGAIN || errno == EWOULDBLOCK
                 ? std::string("timed out waiting for a reply")
                 : std::string("reading: ") + system_error_text(errno));
      frame.filled += static_cast<size_t>(n);
    }
  }

  [[noreturn]] void fail(const std::string &why) {
    close_after_failure(why);
    throw unavailable(why);
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
