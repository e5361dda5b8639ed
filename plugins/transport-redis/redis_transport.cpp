// redis_transport.cpp: events carried through Redis Streams, between producers and spoolers in
// any number of processes on any number of machines.
//
// Keys (prefix `kodo:events:` by default; '#' never occurs in a fid, so they cannot collide):
//   <prefix><fid>         one stream per execution; entries timestamp, kind, payload, seq,
//                         username (kodosumi's three fields first)
//   <prefix>#registry     a stream of announcements, one entry {fid, username} per execution
//   <prefix>#executions   hash fid -> id of its announcement (makes announcing idempotent)
//   <prefix>#finished     sorted set fid -> when its stream may be deleted (ms, server time)
//
// Producer. publish() formats the batch as RESP (one XADD per event, plus the announcement
// script after an execution's seq 0) in the caller's thread and queues it; one writer thread
// pipelines whatever is queued over its own connection, so a burst costs one round trip, not
// one per event. The queue is bounded (buffer_events, buffer_bytes); while Redis is away it
// fills, then publish waits up to its timeout and fails with a retryable KODO_ERR_TIMEOUT
// that says so. A pipeline cut by a lost connection is resent from its first unconfirmed
// command: an event may then be in its stream twice, which idempotent storage absorbs.
//
// Discovery and ownership. Spoolers join the consumer group on the registry. An announcement
// delivered to a consumer makes it the execution's owner for as long as the entry stays in
// its pending list: only the owner reads that execution's stream (XREADGROUP >), so its events
// reach storage in order. The owner keeps the entries fresh (a heartbeat script re-claims them
// for itself); when it dies they go idle, and after claim_idle_ms another consumer takes them
// with XAUTOCLAIM, then claims everything the dead owner had read and not acknowledged from
// the execution's stream, and carries on. A consumer that closes cleanly hands its executions
// over at once (it marks their announcements idle). Each read takes at most one new execution,
// so a busy spooler takes fewer and the work spreads over all live spoolers.
//
// Cleanup. finish_execution records the execution in #finished with a grace period; the owner
// deletes the stream once the grace has passed and every group has consumed it. A stream that
// grows past max_stream_len is trimmed by its owner below the oldest entry a group still needs
// (XTRIM MINID), never by the producer (XADD MAXLEN would drop entries not yet stored).
#include "redis_connection.hpp"
#include "redis_scripts.hpp"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace kodo::redis {
namespace {

using kodo::sdk::int_option;
using kodo::sdk::Metric;
using std::chrono::milliseconds;

[[noreturn]] void invalid(const std::string &message) {
  throw Error(KODO_ERR_INVALID_ARGUMENT, message);
}

// ---- Options ---------------------------------------------------------------------------------

constexpr kodo_option_spec kUrl =
    kodo::sdk::option("url", KODO_OPTION_URL, "redis://127.0.0.1:6379/0",
                      "the Redis server: redis://[[user]:password@]host:port[/db]",
                      KODO_OPTION_SECRET, "KODO_REDIS_URL");
constexpr kodo_option_spec kPrefix =
    kodo::sdk::option("stream_prefix", KODO_OPTION_STRING,
                      "kodo:events:", "key prefix: an execution's stream is <prefix><fid>", 0,
                      "KODO_REDIS_STREAM_PREFIX");
constexpr kodo_option_spec kBlockMs = kodo::sdk::option(
    "block_ms", KODO_OPTION_INT, "1000",
    "longest one blocking XREADGROUP waits (a read waits at most what the spooler asks)", 0,
    "KODO_REDIS_BLOCK_MS");
constexpr kodo_option_spec kMaxStreamLen = kodo::sdk::option(
    "max_stream_len", KODO_OPTION_INT, "10000",
    "a stream longer than this is trimmed, but only of entries every group has stored; "
    "0 never trims",
    0, "KODO_REDIS_MAX_STREAM_LEN");
constexpr kodo_option_spec kClaimIdleMs = kodo::sdk::option(
    "claim_idle_ms", KODO_OPTION_INT, "30000",
    "a spooler silent this long loses its executions (and what it read and did not "
    "acknowledge) to another spooler",
    0, "KODO_REDIS_CLAIM_IDLE_MS");
constexpr kodo_option_spec kGraceMs =
    kodo::sdk::option("stream_grace_ms", KODO_OPTION_INT, "30000",
                      "how long an execution's stream stays after its final event is stored", 0,
                      "KODO_REDIS_STREAM_GRACE_MS");
constexpr kodo_option_spec kBufferEvents = kodo::sdk::option(
    "buffer_events", KODO_OPTION_INT, "100000",
    "most events a producer holds that Redis has not confirmed; when full (Redis away), "
    "publish waits its timeout and then fails",
    0, "KODO_REDIS_BUFFER_EVENTS");
constexpr kodo_option_spec kBufferBytes =
    kodo::sdk::option("buffer_bytes", KODO_OPTION_INT, "268435456",
                      "most bytes of commands a producer holds unconfirmed");
constexpr kodo_option_spec kConnectTimeoutMs = kodo::sdk::option(
    "connect_timeout_ms", KODO_OPTION_INT, "2000", "how long one connection attempt may take");
const kodo_option_spec *const kOptions[] = {&kUrl,          &kPrefix,      &kBlockMs,
                                            &kMaxStreamLen, &kClaimIdleMs, &kGraceMs,
                                            &kBufferEvents, &kBufferBytes, &kConnectTimeoutMs};

struct Settings {
  Endpoint endpoint;
  std::string prefix;
  milliseconds block_cap, claim_idle, grace;
  int64_t max_stream_len;
  size_t buffer_events, buffer_bytes;
  int connect_timeout_ms;

  explicit Settings(const kodo::sdk::Options &o)
      : endpoint(Endpoint::parse(o.get(kUrl.name, kUrl.default_value))),
        prefix(o.get(kPrefix.name, kPrefix.default_value)),
        block_cap(int_option(o, kBlockMs, 1, 3600000)),
        claim_idle(int_option(o, kClaimIdleMs, 10, std::numeric_limits<int32_t>::max())),
        grace(int_option(o, kGraceMs, 0, std::numeric_limits<int32_t>::max())),
        max_stream_len(int_option(o, kMaxStreamLen, 0, std::numeric_limits<int64_t>::max())),
        buffer_events(static_cast<size_t>(int_option(o, kBufferEvents, 1, 1LL << 32))),
        buffer_bytes(static_cast<size_t>(int_option(o, kBufferBytes, 1024, 1LL << 40))),
        connect_timeout_ms(static_cast<int>(int_option(o, kConnectTimeoutMs, 1, 600000))) {
    if (prefix.empty()) invalid("option stream_prefix must not be empty");
  }
  std::string stream(std::string_view fid) const { return prefix + std::string(fid); }
  std::string registry() const { return prefix + "#registry"; }
  std::string executions() const { return prefix + "#executions"; }
  std::string finished() const { return prefix + "#finished"; }
  // How often a consumer renews its executions and looks for dead owners' ones: well inside
  // claim_idle, so a live consumer never looks idle.
  milliseconds upkeep_interval() const {
    return std::clamp(claim_idle / 4, milliseconds(10), milliseconds(1000));
  }
};

std::string format_double(double value) {
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

// ---- Producer --------------------------------------------------------------------------------

// Rejects a batch holding any malformed event, before anything of it is taken.
void validate(const kodo_event *const *events, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const kodo_event *e = events[i];
    const std::string where = "publish: event " + std::to_string(i) + " of the batch ";
    if (!e) invalid(where + "is NULL");
    if (e->struct_size < sizeof(kodo_event))
      invalid(where + "has struct_size " + std::to_string(e->struct_size));
    std::string problem = kodo::sdk::name_problem("fid", e->fid ? e->fid : "");
    if (problem.empty())
      problem = kodo::sdk::name_problem("username", e->username ? e->username : "");
    if (!problem.empty()) invalid(where + "has an " += problem);
    if (!e->kind || !*e->kind) invalid(where + "has no kind");
    if (!e->payload && e->payload_len > 0) invalid(where + "has a NULL payload of length > 0");
  }
}

// Commands of one publish call, formatted, waiting for the writer.
struct Chunk {
  std::string resp;
  std::vector<size_t> ends;       // offset just past each command
  std::vector<uint8_t> is_event;  // per command: an XADD of one event (else an announcement)
  size_t first = 0;               // commands before this one are confirmed
  size_t events = 0;              // events not yet confirmed
};

class Producer {
 public:
  Producer(const Producer &) = delete;  // owns a thread and a connection
  Producer &operator=(const Producer &) = delete;
  Producer(const Settings &settings, kodo::sdk::HostLog log)
      : settings_(settings),
        log_(log),
        connection_(settings.endpoint, "producer", settings.connect_timeout_ms),
        writer_([this] { write_loop(); }) {}

  // Writes what is queued for up to 10 s more, then reports loudly what could not be written.
  ~Producer() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      stop_by_ = Clock::now() + std::chrono::seconds(10);
    }
    wake_.notify_all();
    writer_.join();
    if (buffered_events_ > 0)
      log_(KODO_LOG_ERROR, "closing with " + std::to_string(buffered_events_) +
                               " events never written to redis at " + settings_.endpoint.shown +
                               " (" + connection_.last_error() + "): they are lost");
  }

  void publish(const kodo_event *const *events, size_t count, int32_t timeout_ms) {
    if (count == 0) return;
    if (!events) invalid("publish: events is NULL with count " + std::to_string(count));
    if (timeout_ms < 0)
      invalid("publish: timeout_ms must be >= 0, got " + std::to_string(timeout_ms));
    validate(events, count);
    Chunk chunk = format(events, count);
    const size_t bytes = chunk.resp.size();
    std::unique_lock<std::mutex> lock(mutex_);
    const auto deadline = Clock::now() + milliseconds(timeout_ms);
    // A batch larger than the whole buffer is let in once the buffer is empty, so any batch
    // can be published.
    const bool room = space_.wait_until(lock, deadline, [&] {
      return buffered_events_ == 0 || (buffered_events_ + count <= settings_.buffer_events &&
                                       buffered_bytes_ + bytes <= settings_.buffer_bytes);
    });
    if (!room) {
      refused_.fetch_add(count, std::memory_order_relaxed);
      std::string why =
          up_ ? "redis at " + settings_.endpoint.shown + " is not taking them fast enough"
              : "redis at " + settings_.endpoint.shown + " is unreachable since " +
                    seconds_since(down_since_) + " s (" + down_error_ + ")";
      throw Error(KODO_ERR_TIMEOUT,
                  "publish: no room for a batch of " + std::to_string(count) + " events within " +
                      std::to_string(timeout_ms) + " ms: " + why + "; " +
                      std::to_string(buffered_events_) +
                      " events wait in this producer's buffer (options buffer_events, "
                      "buffer_bytes); nothing of this batch was taken",
                  true);
    }
    buffered_events_ += count;
    buffered_bytes_ += bytes;
    queue_.push_back(std::move(chunk));
    lock.unlock();
    wake_.notify_one();
  }

  std::vector<Metric> metrics() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {
        {"producer_buffered_events", "Events published and not yet confirmed by Redis.", "",
         KODO_METRIC_GAUGE, static_cast<double>(buffered_events_)},
        {"producer_written_events_total", "Events Redis confirmed (XADD).", "", KODO_METRIC_COUNTER,
         static_cast<double>(written_.load())},
        {"producer_refused_events_total",
         "Events refused by publish because the buffer stayed full (Redis away or slow).", "",
         KODO_METRIC_COUNTER, static_cast<double>(refused_.load())},
        {"producer_dropped_events_total", "Events Redis rejected with a permanent error (logged).",
         "", KODO_METRIC_COUNTER, static_cast<double>(dropped_.load())},
        {"producer_reconnects_total", "Times the producer's connection was made again.", "",
         KODO_METRIC_COUNTER, static_cast<double>(reconnects_.load())},
        {"producer_up", "1 while the producer's connection to Redis works.", "", KODO_METRIC_GAUGE,
         up_ ? 1.0 : 0.0}};
  }

 private:
  static std::string seconds_since(Clock::time_point t) {
    char buffer[32];
    (void)std::snprintf(buffer, sizeof buffer, "%.1f",
                        std::chrono::duration<double>(Clock::now() - t).count());
    return buffer;
  }

  Chunk format(const kodo_event *const *events, size_t count) const {
    Chunk chunk;
    size_t size = 0;
    for (size_t i = 0; i < count; ++i) size += events[i]->payload_len + 160;
    chunk.resp.reserve(size);
    const std::string registry = settings_.registry(), executions = settings_.executions();
    std::string key;
    for (size_t i = 0; i < count; ++i) {
      const kodo_event &e = *events[i];
      key = settings_.stream(e.fid);
      const std::string timestamp = format_double(e.timestamp), seq = std::to_string(e.seq);
      append_command(chunk.resp,
                     {"XADD", key, "*", "timestamp", timestamp, "kind", e.kind, "payload",
                      std::string_view(e.payload ? e.payload : "", e.payload_len), "seq", seq,
                      "username", e.username});
      chunk.ends.push_back(chunk.resp.size());
      chunk.is_event.push_back(1);
      // Announced after its first event is in the stream, so a spooler that takes the
      // announcement always finds the stream.
      if (e.seq == 0) {
        append_command(chunk.resp,
                       {"EVAL", scripts::kRegister, "2", registry, executions, e.fid, e.username});
        chunk.ends.push_back(chunk.resp.size());
        chunk.is_event.push_back(0);
      }
    }
    chunk.events = count;
    return chunk;
  }

  void set_up(bool up) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (up_ == up) return;
    up_ = up;
    if (!up) {
      down_since_ = connection_.down_since();
      down_error_ = connection_.last_error();
    }
  }

  // Takes the front chunks, pipelines them, confirms replies in order; on a lost connection or a
  // transient error reply, keeps the unconfirmed rest at the front and tries again after backoff.
  void write_loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, all written
      if (stopping_ && Clock::now() >= stop_by_) return;
      // Chunks are only pushed at the back, so references to the front ones stay valid
      // while the lock is released.
      size_t take = 0, bytes = 0;
      while (take < queue_.size() && bytes < (8u << 20)) bytes += queue_[take++].resp.size();
      std::vector<Chunk *> batch;
      for (size_t i = 0; i < take; ++i) batch.push_back(&queue_[i]);
      lock.unlock();
      size_t confirmed_events = 0, done_chunks = 0, freed_bytes = 0;
      bool retry_later = false;
      try {
        connection_.ensure();
        set_up(true);
        reconnects_ = connection_.reconnects();
        std::string resp;
        size_t commands = 0;
        for (Chunk *c : batch) {
          const size_t from = c->first ? c->ends[c->first - 1] : 0;
          resp.append(c->resp, from, std::string::npos);
          commands += c->ends.size() - c->first;
        }
        size_t ci = 0;
        connection_.stream(resp.data(), resp.size(), commands, [&](const redisReply *reply) {
          Chunk &c = *batch[ci];
          const bool event = c.is_event[c.first] != 0;
          if (is_error(reply)) {
            const std::string_view message = text(reply);
            if (transient_error(message)) {
              log_(KODO_LOG_WARN,
                   "redis at " + settings_.endpoint.shown +
                       " refused a write for now, retrying: " + std::string(message));
              retry_later = true;
              return false;
            }
            dropped_.fetch_add(event ? 1 : 0, std::memory_order_relaxed);
            log_(KODO_LOG_ERROR, std::string("redis at ") + settings_.endpoint.shown +
                                     " rejected " +
                                     (event ? "an event" : "an execution's announcement") +
                                     ", which is lost: " + std::string(message));
          }
          ++c.first;
          if (event) {
            --c.events;
            ++confirmed_events;
          }
          if (c.first == c.ends.size()) {
            ++ci;
            ++done_chunks;
          }
          return true;
        });
      } catch (const Error &e) {
        set_up(false);
        retry_later = true;
      }
      for (size_t i = 0; i < done_chunks; ++i) freed_bytes += batch[i]->resp.size();
      written_.fetch_add(confirmed_events, std::memory_order_relaxed);
      lock.lock();
      for (size_t i = 0; i < done_chunks; ++i) queue_.pop_front();
      buffered_events_ -= confirmed_events;
      buffered_bytes_ -= freed_bytes;
      if (confirmed_events > 0 || done_chunks > 0) space_.notify_all();
      if (retry_later) {
        // Wait out the backoff (a transient error reply waits a fixed moment).
        auto pause = std::max(connection_.backoff_left(), Clock::duration(milliseconds(100)));
        wake_.wait_for(lock, pause, [&] { return stopping_ && Clock::now() >= stop_by_; });
        if (stopping_ && Clock::now() >= stop_by_) return;
      }
    }
  }

  const Settings &settings_;
  kodo::sdk::HostLog log_;
  Connection connection_;  // used by the writer thread only
  std::mutex mutex_;
  std::condition_variable wake_;   // work for the writer, or stop
  std::condition_variable space_;  // the buffer has room
  std::deque<Chunk> queue_;
  size_t buffered_events_ = 0, buffered_bytes_ = 0;
  bool stopping_ = false;
  Clock::time_point stop_by_{};
  bool up_ = true;
  Clock::time_point down_since_{};
  std::string down_error_;
  std::atomic<uint64_t> written_{0}, refused_{0}, dropped_{0}, reconnects_{0};
  std::thread writer_;  // last: starts once everything above exists
};

// Reads an entry's fields into `event` (whose fid the caller set). Unknown fields are ignored;
// seq stays -1 when the entry has none (not written by kodo).
void parse_event(const redisReply *fields, kodo::sdk::OwnedEvent &event) {
  event.seq = -1;
  for (size_t k = 0; is_array(fields) && k + 1 < fields->elements; k += 2) {
    const std::string_view name = text(fields->element[k]), value = text(fields->element[k + 1]);
    const char *first = value.data(), *last = value.data() + value.size();
    if (name == "timestamp")
      std::from_chars(first, last, event.timestamp);
    else if (name == "kind")
      event.kind = value;
    else if (name == "payload")
      event.payload = value;
    else if (name == "seq")
      std::from_chars(first, last, event.seq);
    else if (name == "username")
      event.username = value;
  }
}

// The value of field `name` of an entry, or "".
std::string field(const redisReply *fields, std::string_view name) {
  for (size_t k = 0; is_array(fields) && k + 1 < fields->elements; k += 2)
    if (text(fields->element[k]) == name) return std::string(text(fields->element[k + 1]));
  return {};
}

// ---- Consumer --------------------------------------------------------------------------------

class RedisTransport;

// An entry read from an owned stream and not yet handed to the host.
struct Buffered {
  std::string fid, id;
  uint32_t count = 0;
  kodo::sdk::OwnedEvent event;
};

class RedisConsumer : public kodo::sdk::ConsumerBase {
 public:
  RedisConsumer(RedisTransport &transport, std::string group, std::string name);
  RedisConsumer(const RedisConsumer &) = delete;
  RedisConsumer &operator=(const RedisConsumer &) = delete;
  ~RedisConsumer() override;
  void read(size_t max, int32_t block_ms, kodo::sdk::DeliveryBatchBuilder &out) override;
  void ack(const uint64_t *ids, size_t count) override;
  std::vector<Metric> metrics() const;
  const std::string &name() const { return name_; }

 private:
  struct Owned {
    std::string key, registry_id;
    size_t acked_since_trim = 0;
  };
  struct Unacked {
    std::string fid, id;
  };

  void join();
  void upkeep();
  void recover();
  void fetch(int32_t block_ms);
  void adopt(const std::vector<std::pair<std::string, std::string>> &taken, bool from_others);
  void drop(const std::string &fid, const char *why);
  void take_entries(const redisReply *streams);
  void add_acks(std::string &resp, size_t &commands);
  void check_nogroup(const redisReply *reply);

  RedisTransport &transport_;
  const Settings &settings_;
  kodo::sdk::HostLog log_;
  const std::string group_, name_;
  Connection connection_;
  bool joined_ = false;
  std::map<std::string, Owned> owned_;                        // fid -> its announcement
  std::unordered_map<std::string, std::string> by_registry_;  // announcement id -> fid
  std::deque<Buffered> buffer_;
  std::unordered_map<uint64_t, Unacked> unacked_;
  uint64_t next_delivery_ = 1;
  std::map<std::string, std::vector<std::string>> acks_;  // fid -> entry ids to XACK
  Clock::time_point next_upkeep_{};
  Clock::time_point next_forget_{};
  std::string autoclaim_cursor_ = "0-0";

  std::atomic<int64_t> pending_{0}, owned_count_{0}, lag_{0};
  std::atomic<uint64_t> claims_{0}, claimed_entries_{0}, reconnects_{0};
  std::atomic<int> up_{1};
};

// ---- Transport handle ------------------------------------------------------------------------

class RedisTransport : public kodo::sdk::TransportBase {
 public:
  RedisTransport(const RedisTransport &) = delete;
  RedisTransport &operator=(const RedisTransport &) = delete;
  RedisTransport(const kodo::sdk::Options &options, const kodo_host_api *host)
      : settings_(options), log_(host), producer_(settings_, log_) {
    log_(KODO_LOG_INFO, "redis at " + settings_.endpoint.shown + ", streams " + settings_.prefix +
                            "<fid>, claim_idle_ms " + std::to_string(settings_.claim_idle.count()) +
                            ", max_stream_len " + std::to_string(settings_.max_stream_len));
  }

  ~RedisTransport() override {
    std::vector<std::string> left;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      left.swap(finishes_);
    }
    if (!left.empty()) try_send_finishes(left);
  }

  void publish(const kodo_event *const *events, size_t count, int32_t timeout_ms) override {
    producer_.publish(events, count, timeout_ms);
  }

  std::unique_ptr<kodo::sdk::ConsumerBase> open_consumer(const std::string &group,
                                                         const std::string &name) override {
    if (group.empty()) invalid("consumer_open: the group name is empty");
    if (name.empty()) invalid("consumer_open: the consumer name is empty");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const RedisConsumer *c : consumers_)
        if (c->name() == name)
          invalid(("consumer_open: consumer '" + name + "' of group '" += group) +=
                  "' is already open");
    }
    auto consumer = std::make_unique<RedisConsumer>(*this, group, name);
    std::lock_guard<std::mutex> lock(mutex_);
    consumers_.push_back(consumer.get());
    return consumer;
  }

  // Recorded in Redis by the next upkeep of a consumer of this handle (or right away when it
  // has none), so a moment without Redis does not lose it.
  void finish_execution(const char *fid) override {
    kodo::sdk::check_name("fid", fid);
    std::unique_lock<std::mutex> lock(mutex_);
    finishes_.emplace_back(fid);
    if (!consumers_.empty()) return;
    std::vector<std::string> now;
    now.swap(finishes_);
    lock.unlock();
    if (!try_send_finishes(now))
      throw Error(KODO_ERR_UNAVAILABLE,
                  "finish_execution " + std::string(fid) + ": redis at " +
                      settings_.endpoint.shown +
                      " is unreachable; the stream stays until an execution finishes later",
                  true);
  }

  std::vector<Metric> metrics() override {
    std::vector<Metric> out = producer_.metrics();
    std::lock_guard<std::mutex> lock(mutex_);
    for (const RedisConsumer *c : consumers_) {
      auto m = c->metrics();
      out.insert(out.end(), m.begin(), m.end());
    }
    return out;
  }

  const Settings &settings() const { return settings_; }
  kodo::sdk::HostLog log() const { return log_; }

  void forget(RedisConsumer *c) {
    std::lock_guard<std::mutex> lock(mutex_);
    consumers_.erase(std::remove(consumers_.begin(), consumers_.end(), c), consumers_.end());
  }

  std::vector<std::string> take_finishes() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> out;
    out.swap(finishes_);
    return out;
  }
  void return_finishes(const std::vector<std::string> &fids) {
    std::lock_guard<std::mutex> lock(mutex_);
    finishes_.insert(finishes_.begin(), fids.begin(), fids.end());
  }

 private:
  bool try_send_finishes(const std::vector<std::string> &fids) {
    try {
      Connection c(settings_.endpoint, "finish", settings_.connect_timeout_ms);
      std::string resp;
      for (const auto &fid : fids)
        append_command(resp, {"EVAL", scripts::kFinish, "1", settings_.finished(), fid,
                              std::to_string(settings_.grace.count())});
      c.pipeline(resp, fids.size());
      return true;
    } catch (const Error &e) {
      log_(KODO_LOG_WARN, std::string("cannot record ") + std::to_string(fids.size()) +
                              " finished executions: " + e.what());
      return false;
    }
  }

  Settings settings_;
  kodo::sdk::HostLog log_;
  Producer producer_;
  std::mutex mutex_;
  std::vector<RedisConsumer *> consumers_;
  std::vector<std::string> finishes_;
};

// ---- Consumer implementation ----------------------------------------------------------------

RedisConsumer::RedisConsumer(RedisTransport &transport, std::string group, std::string name)
    : transport_(transport),
      settings_(transport.settings()),
      log_(transport.log()),
      group_(std::move(group)),
      name_(std::move(name)),
      connection_(settings_.endpoint, "consumer " + name_, settings_.connect_timeout_ms) {
  // Joining now fixes where a new group starts; if Redis is away, the first read joins.
  try {
    join();
    upkeep();
  } catch (const Error &e) {
    log_(KODO_LOG_WARN, std::string("consumer ") + name_ + ": " + e.what() + "; will retry");
  }
}

// Hands over at once every execution with nothing handed out and unacknowledged; the rest go
// to another consumer when idle, as the contract says.
RedisConsumer::~RedisConsumer() {
  transport_.forget(this);
  try {
    std::set<std::string> holding;
    for (const auto &item : unacked_) holding.insert(item.second.fid);
    std::string resp;
    size_t commands = 0;
    add_acks(resp, commands);
    for (const auto &[fid, owned] : owned_) {
      if (holding.count(fid)) continue;
      append_command(resp, {"XCLAIM", settings_.registry(), group_, name_, "0", owned.registry_id,
                            "IDLE", "100000000000", "JUSTID"});
      ++commands;
    }
    if (commands > 0 && connection_.connected()) connection_.pipeline(resp, commands);
  } catch (const Error &e) {
    log_(KODO_LOG_WARN, "consumer " + name_ + ": leaving without handing over: " + e.what());
  }
}

void RedisConsumer::join() {
  connection_.command({"EVAL", scripts::kJoin, "1", settings_.registry(), group_},
                      "joining group " + group_ + " on " + settings_.registry());
  joined_ = true;
}

std::vector<Metric> RedisConsumer::metrics() const {
  const std::string labels = "consumer=\"" + name_ + "\"";
  return {{"pending", "Entries read by this consumer and not yet acknowledged.", labels,
           KODO_METRIC_GAUGE, static_cast<double>(pending_.load())},
          {"owned_executions", "Executions this consumer reads.", labels, KODO_METRIC_GAUGE,
           static_cast<double>(owned_count_.load())},
          {"lag", "Entries in this consumer's streams not yet read (at the last upkeep).", labels,
           KODO_METRIC_GAUGE, static_cast<double>(lag_.load())},
          {"claims_total", "Executions taken over from consumers that went silent.", labels,
           KODO_METRIC_COUNTER, static_cast<double>(claims_.load())},
          {"claimed_entries_total",
           "Entries other consumers read and never acknowledged, claimed by this one.", labels,
           KODO_METRIC_COUNTER, static_cast<double>(claimed_entries_.load())},
          {"reconnects_total", "Times this consumer's connection was made again.", labels,
           KODO_METRIC_COUNTER, static_cast<double>(reconnects_.load())},
          {"up", "1 while this consumer's connection to Redis works.", labels, KODO_METRIC_GAUGE,
           static_cast<double>(up_.load())}};
}

void RedisConsumer::add_acks(std::string &resp, size_t &commands) {
  for (auto &[fid, ids] : acks_) {
    if (ids.empty()) continue;
    std::vector<std::string> args = {"XACK", settings_.stream(fid), group_};
    args.insert(args.end(), ids.begin(), ids.end());
    append_command(resp, args);
    ++commands;
  }
}

// Acks were sent and confirmed: count them towards trimming.
static void note_acks_sent(std::map<std::string, std::vector<std::string>> &acks,
                           std::map<std::string, size_t> &sent) {
  for (auto &[fid, ids] : acks) sent[fid] += ids.size();
  acks.clear();
}

void RedisConsumer::ack(const uint64_t *ids, size_t count) {
  if (count == 0) return;
  if (!ids) invalid("ack: delivery_ids is NULL with count " + std::to_string(count));
  // Sent with the next read's pipeline (or on close), saving a round trip per batch. The
  // entries stay pending in Redis until then, which only matters if this process dies, and
  // then idempotent storage absorbs the redelivery.
  for (size_t i = 0; i < count; ++i) {
    auto it = unacked_.find(ids[i]);
    if (it == unacked_.end()) continue;
    acks_[it->second.fid].push_back(std::move(it->second.id));
    unacked_.erase(it);
  }
  pending_.store(static_cast<int64_t>(unacked_.size() + buffer_.size()));
}

void RedisConsumer::drop(const std::string &fid, const char *why) {
  auto it = owned_.find(fid);
  if (it == owned_.end()) return;
  by_registry_.erase(it->second.registry_id);
  owned_.erase(it);
  buffer_.erase(std::remove_if(buffer_.begin(), buffer_.end(),
                               [&](const Buffered &b) { return b.fid == fid; }),
                buffer_.end());
  log_(KODO_LOG_DEBUG, "consumer " + name_ + ": no longer reads execution " + fid + ": " + why);
}

// An execution this consumer now owns: (fid, announcement id). Its group is made if new; with
// `from_others`, everything pending for other consumers in its stream is claimed, in order,
// before anything new is read from it.
void RedisConsumer::adopt(const std::vector<std::pair<std::string, std::string>> &taken,
                          bool from_others) {
  if (taken.empty()) return;
  std::string resp;
  size_t commands = 0;
  for (const auto &[fid, rid] : taken) {
    append_command(resp, {"XGROUP", "CREATE", settings_.stream(fid), group_, "0"});
    ++commands;
  }
  auto replies = connection_.pipeline(resp, commands);
  std::vector<std::string> adopted;
  for (size_t i = 0; i < taken.size(); ++i) {
    const auto &[fid, rid] = taken[i];
    const std::string_view error = is_error(replies[i].get()) ? text(replies[i].get()) : "";
    if (!error.empty() && !starts_with(error, "BUSYGROUP")) {
      // The stream is gone (finished and deleted, or removed by hand): forget the announcement.
      std::string forget;
      append_command(forget, {"XACK", settings_.registry(), group_, rid});
      append_command(forget, {"HDEL", settings_.executions(), fid});
      connection_.pipeline(forget, 2);
      log_(KODO_LOG_DEBUG, "consumer " + name_ + ": execution " + fid +
                               " has no stream any more: " + std::string(error));
      continue;
    }
    owned_[fid] = Owned{settings_.stream(fid), rid, 0};
    by_registry_[rid] = fid;
    adopted.push_back(fid);
  }
  owned_count_.store(static_cast<int64_t>(owned_.size()));
  if (!from_others) return;
  for (const std::string &fid : adopted) {
    const std::string key = settings_.stream(fid);
    std::string start = "-";
    size_t claimed = 0;
    for (;;) {
      auto pending =
          connection_.command({"XPENDING", key, group_, start, "+", "1000"}, "XPENDING of " + key);
      if (!is_array(pending.get()) || pending->elements == 0) break;
      std::vector<std::string> args = {"XCLAIM", key, group_, name_, "0"};
      std::unordered_map<std::string, uint32_t> counts;
      for (size_t i = 0; i < pending->elements; ++i) {
        const redisReply *e = pending->element[i];
        std::string id(text(e->element[0]));
        counts[id] = static_cast<uint32_t>(e->element[3]->integer) + 1;
        args.push_back(id);
      }
      start = "(" + args.back();
      auto entries = connection_.command(args, "XCLAIM on " + key);
      for (size_t i = 0; is_array(entries.get()) && i < entries->elements; ++i) {
        const redisReply *entry = entries->element[i];
        if (!is_array(entry) || entry->elements < 2 || !is_array(entry->element[1])) continue;
        Buffered b;
        b.fid = fid;
        b.id = std::string(text(entry->element[0]));
        b.count = counts.count(b.id) ? counts[b.id] : 2;
        b.event.fid = fid;
        parse_event(entry->element[1], b.event);
        buffer_.push_back(std::move(b));
        ++claimed;
      }
      if (pending->elements < 1000) break;
    }
    if (claimed > 0) {
      claimed_entries_.fetch_add(claimed);
      log_(KODO_LOG_INFO, "consumer " + name_ + ": took over execution " + fid + " with " +
                              std::to_string(claimed) +
                              " entries read and never acknowledged by "
                              "a consumer that went silent");
    }
  }
}

void RedisConsumer::upkeep() {
  const auto now = Clock::now();
  next_upkeep_ = now + settings_.upkeep_interval();
  std::vector<std::string> finishes = transport_.take_finishes();
  std::string resp;
  size_t commands = 0;
  add_acks(resp, commands);
  const size_t ack_commands = commands;
  for (const auto &fid : finishes) {
    append_command(resp, {"EVAL", scripts::kFinish, "1", settings_.finished(), fid,
                          std::to_string(settings_.grace.count())});
    ++commands;
  }
  append_command(resp, {"EVAL", scripts::kHeartbeat, "1", settings_.registry(), group_, name_});
  const size_t heartbeat = commands++;
  append_command(resp,
                 {"XAUTOCLAIM", settings_.registry(), group_, name_,
                  std::to_string(settings_.claim_idle.count()), autoclaim_cursor_, "COUNT", "16"});
  const size_t autoclaim = commands++;
  std::vector<std::string> reap = {"EVAL",
                                   scripts::kReap,
                                   "3",
                                   settings_.finished(),
                                   settings_.executions(),
                                   settings_.registry(),
                                   settings_.prefix,
                                   group_};
  for (const auto &item : owned_) reap.push_back(item.first);
  append_command(resp, reap);
  const size_t reaped = commands++;
  std::vector<std::string> trimmed;
  if (settings_.max_stream_len > 0)
    for (auto &[fid, owned] : owned_)
      if (owned.acked_since_trim * 4 >= static_cast<size_t>(settings_.max_stream_len)) {
        append_command(resp, {"EVAL", scripts::kTrim, "1", owned.key,
                              std::to_string(settings_.max_stream_len)});
        ++commands;
        trimmed.push_back(fid);
      }
  const bool forget_dead = now >= next_forget_;
  if (forget_dead) {
    next_forget_ = now + std::chrono::seconds(60);
    const auto idle = std::max<int64_t>(settings_.claim_idle.count() * 10, 600000);
    append_command(resp, {"EVAL", scripts::kForgetDeadConsumers, "1", settings_.registry(), group_,
                          std::to_string(idle)});
    ++commands;
  }
  std::vector<Reply> replies;
  try {
    replies = connection_.pipeline(resp, commands);
  } catch (...) {
    transport_.return_finishes(finishes);
    throw;
  }
  std::map<std::string, size_t> sent;
  note_acks_sent(acks_, sent);
  for (size_t i = 0; i < ack_commands; ++i) check_nogroup(replies[i].get());
  for (auto &[fid, n] : sent)
    if (auto it = owned_.find(fid); it != owned_.end()) it->second.acked_since_trim += n;
  for (const auto &fid : trimmed)
    if (auto it = owned_.find(fid); it != owned_.end()) it->second.acked_since_trim = 0;

  const redisReply *beat = replies[heartbeat].get();
  if (is_error(beat) && starts_with(text(beat), "NOGROUP")) {
    joined_ = false;  // the registry or its group is gone (Redis lost its data): join again
    join();
    return;
  }
  if (!is_array(beat))
    throw Error(KODO_ERR_IO, "redis at " + settings_.endpoint.shown + ": heartbeat of consumer " +
                                 name_ + " failed: " + std::string(text(beat)));
  std::unordered_set<std::string> held;
  std::vector<std::pair<std::string, std::string>> unknown;
  for (size_t i = 0; i < beat->elements; ++i) held.insert(std::string(text(beat->element[i])));
  std::vector<std::string> lost;
  for (const auto &[fid, owned] : owned_)
    if (!held.count(owned.registry_id)) lost.push_back(fid);
  for (const auto &fid : lost) drop(fid, "another consumer took it over, or it was deleted");

  // Announcements this consumer holds but does not know (a restart under the same name).
  std::vector<std::string> strange;
  for (const auto &id : held)
    if (!by_registry_.count(id)) strange.push_back(id);

  std::vector<std::pair<std::string, std::string>> taken;
  const redisReply *claim = replies[autoclaim].get();
  if (is_array(claim) && claim->elements >= 2) {
    autoclaim_cursor_ = std::string(text(claim->element[0]));
    const redisReply *entries = claim->element[1];
    for (size_t i = 0; is_array(entries) && i < entries->elements; ++i) {
      const redisReply *e = entries->element[i];
      if (!is_array(e) || e->elements < 2 || !is_array(e->element[1])) continue;
      const std::string fid = field(e->element[1], "fid");
      if (!fid.empty()) taken.emplace_back(fid, std::string(text(e->element[0])));
    }
  }
  for (const auto &id : strange) {
    auto entry = connection_.command({"XRANGE", settings_.registry(), id, id}, "XRANGE registry");
    if (!is_array(entry.get()) || entry->elements == 0) continue;
    const std::string fid = field(entry->element[0]->element[1], "fid");
    if (!fid.empty()) taken.emplace_back(fid, id);
  }
  if (!taken.empty()) {
    const size_t before = owned_.size();
    adopt(taken, true);
    claims_.fetch_add(owned_.size() - before);
  }

  const redisReply *reap_reply = replies[reaped].get();
  if (is_array(reap_reply) && reap_reply->elements == 2) {
    const redisReply *deleted = reap_reply->element[0];
    for (size_t i = 0; is_array(deleted) && i < deleted->elements; ++i)
      drop(std::string(text(deleted->element[i])), "its stream was deleted");
    lag_.store(reap_reply->element[1]->integer);
  } else if (is_error(reap_reply)) {
    log_(KODO_LOG_WARN,
         "consumer " + name_ + ": upkeep of its streams failed: " + std::string(text(reap_reply)));
  }
  owned_count_.store(static_cast<int64_t>(owned_.size()));
  pending_.store(static_cast<int64_t>(unacked_.size() + buffer_.size()));
}

// After a lost connection: a read whose reply was lost still delivered its entries to this
// consumer (they are in its pending list, and `>` will not return them again), so its own
// pending entries of each owned stream are read back by id, and those it does not hold already
// (buffered, handed out, or acked but not yet sent) are delivered again.
void RedisConsumer::recover() {
  std::unordered_set<std::string> known;  // "<fid> <entry id>"
  for (const Buffered &b : buffer_) known.insert(b.fid + " " += b.id);
  for (const auto &item : unacked_) known.insert(item.second.fid + " " += item.second.id);
  for (const auto &[fid, ids] : acks_)
    for (const auto &id : ids) known.insert(fid + " " += id);
  size_t recovered = 0;
  for (const auto &[fid, owned] : owned_) {
    for (std::string after = "0";;) {
      auto reply = connection_.command(
          {"XREADGROUP", "GROUP", group_, name_, "COUNT", "1000", "STREAMS", owned.key, after},
          "reading back the pending entries of " + owned.key);
      if (!is_array(reply.get()) || reply->elements == 0) break;
      const redisReply *entries = reply->element[0]->element[1];
      if (!is_array(entries) || entries->elements == 0) break;
      for (size_t i = 0; i < entries->elements; ++i) {
        const redisReply *entry = entries->element[i];
        after = std::string(text(entry->element[0]));
        if (!is_array(entry->element[1]) || known.count(fid + " " += after)) continue;
        Buffered b;
        b.fid = fid;
        b.id = after;
        b.count = 2;
        b.event.fid = fid;
        parse_event(entry->element[1], b.event);
        buffer_.push_back(std::move(b));
        ++recovered;
      }
      if (entries->elements < 1000) break;
    }
  }
  if (recovered > 0)
    log_(KODO_LOG_INFO, "consumer " + name_ + ": " + std::to_string(recovered) +
                            " entries delivered while the connection was lost are read again");
}

// An XACK or XREADGROUP naming a stream that is gone answers NOGROUP naming its key.
void RedisConsumer::check_nogroup(const redisReply *reply) {
  if (!is_error(reply)) return;
  const std::string_view message = text(reply);
  if (!starts_with(message, "NOGROUP")) {
    log_(KODO_LOG_WARN, "consumer " + name_ + ": " + std::string(message));
    return;
  }
  for (const auto &[fid, owned] : owned_)
    if (message.find("'" + owned.key + "'") != std::string_view::npos) {
      drop(std::string(fid), "its stream is gone");
      return;
    }
  if (message.find("'" + settings_.registry() + "'") != std::string_view::npos) joined_ = false;
}

// Appends the entries of an XREADGROUP reply to the buffer, and adopts announcements.
void RedisConsumer::take_entries(const redisReply *streams) {
  if (!is_array(streams)) return;
  const std::string registry = settings_.registry();
  std::vector<std::pair<std::string, std::string>> announced;
  for (size_t s = 0; s < streams->elements; ++s) {
    const redisReply *stream = streams->element[s];
    if (!is_array(stream) || stream->elements < 2 || !is_array(stream->element[1])) continue;
    const std::string_view key = text(stream->element[0]);
    const redisReply *entries = stream->element[1];
    const bool is_registry = key == registry;
    const std::string fid(is_registry ? std::string_view() : key.substr(settings_.prefix.size()));
    for (size_t i = 0; i < entries->elements; ++i) {
      const redisReply *entry = entries->element[i];
      if (!is_array(entry) || entry->elements < 2 || !is_array(entry->element[1])) continue;
      const redisReply *f = entry->element[1];
      if (is_registry) {
        const std::string announced_fid = field(f, "fid");
        if (!announced_fid.empty())
          announced.emplace_back(announced_fid, std::string(text(entry->element[0])));
        continue;
      }
      Buffered b;
      b.fid = fid;
      b.id = std::string(text(entry->element[0]));
      b.count = 1;
      b.event.fid = fid;
      parse_event(f, b.event);
      if (b.event.seq < 0 || b.event.kind.empty() || b.event.username.empty()) {
        // Not written by kodo: it cannot be stored, and keeping it pending would hold the
        // execution forever. Acknowledged and reported.
        log_(KODO_LOG_ERROR, "consumer " + name_ + ": entry " + b.id + " of " + std::string(key) +
                                 " lacks seq, kind or username; skipped");
        acks_[fid].push_back(b.id);
        continue;
      }
      buffer_.push_back(std::move(b));
    }
  }
  adopt(announced, false);
}

void RedisConsumer::fetch(int32_t block_ms) {
  std::string resp;
  size_t commands = 0;
  add_acks(resp, commands);
  const size_t ack_commands = commands;
  const std::string registry = settings_.registry();
  // COUNT is per stream: about a spooler batch in all, at least a useful run of each. A
  // blocking read also waits on the registry, so it takes 1 (one new execution at most); the
  // caller reads on without blocking once it woke.
  const size_t per_stream =
      block_ms > 0 ? 1 : std::max<size_t>(64, 1024 / std::max<size_t>(1, owned_.size()));
  std::vector<std::string> args = {"XREADGROUP", "GROUP", group_,
                                   name_,        "COUNT", std::to_string(per_stream)};
  if (block_ms > 0) {
    args.push_back("BLOCK");
    args.push_back(std::to_string(block_ms));
  }
  args.push_back("STREAMS");
  if (block_ms > 0) args.push_back(registry);
  for (const auto &item : owned_) args.push_back(item.second.key);
  const size_t streams = (block_ms > 0 ? 1 : 0) + owned_.size();
  for (size_t i = 0; i < streams; ++i) args.push_back(">");
  // Not blocking: one new execution per read, asked separately so COUNT 1 applies to it.
  if (block_ms == 0) {
    append_command(resp,
                   {"XREADGROUP", "GROUP", group_, name_, "COUNT", "1", "STREAMS", registry, ">"});
    ++commands;
  }
  if (streams > 0) {
    append_command(resp, args);
    ++commands;
  }
  connection_.set_reply_timeout(milliseconds(block_ms + 10000));
  auto replies = connection_.pipeline(resp, commands);
  std::map<std::string, size_t> sent;
  note_acks_sent(acks_, sent);
  for (auto &[fid, n] : sent)
    if (auto it = owned_.find(fid); it != owned_.end()) it->second.acked_since_trim += n;
  for (size_t i = 0; i < ack_commands; ++i) check_nogroup(replies[i].get());
  for (size_t i = ack_commands; i < replies.size(); ++i) {
    if (is_error(replies[i].get())) {
      check_nogroup(replies[i].get());
      continue;
    }
    take_entries(replies[i].get());
  }
}

void RedisConsumer::read(size_t max, int32_t block_ms, kodo::sdk::DeliveryBatchBuilder &out) {
  if (block_ms < 0) invalid("read: block_ms must be >= 0, got " + std::to_string(block_ms));
  const auto deadline = Clock::now() + milliseconds(block_ms);
  try {
    bool reconnected = false;
    if (!connection_.connected()) {
      connection_.ensure(milliseconds(block_ms));
      next_upkeep_ = Clock::time_point{};  // learn what changed while away
      reconnected = true;
    }
    if (!joined_) join();
    if (Clock::now() >= next_upkeep_) upkeep();
    if (reconnected) recover();
    if (max > 0 && buffer_.size() < max) {
      const size_t owned = owned_.size();
      fetch(0);
      if (buffer_.empty() && owned_.size() > owned) fetch(0);  // read what it just adopted
    }
    while (max > 0 && buffer_.empty()) {
      const auto now = Clock::now();
      if (now >= deadline) break;
      if (now >= next_upkeep_) upkeep();
      const auto wait = std::min({deadline, next_upkeep_, now + settings_.block_cap}) - now;
      const auto wait_ms = std::chrono::duration_cast<milliseconds>(wait).count();
      if (wait_ms <= 0) continue;
      const size_t owned = owned_.size();
      fetch(static_cast<int32_t>(wait_ms));
      // Woken with one entry, or an execution adopted: now take a full read.
      if (!buffer_.empty() || owned_.size() > owned) fetch(0);
    }
    reconnects_.store(connection_.reconnects());
    if (!up_.exchange(1)) log_(KODO_LOG_INFO, "consumer " + name_ + ": redis is back");
  } catch (const Error &e) {
    if (e.code() != KODO_ERR_UNAVAILABLE) throw;
    up_.store(0);
    connection_.close();
    if (buffer_.empty()) throw;  // what was read already is still handed out
  }
  for (size_t n = 0; n < max && !buffer_.empty(); ++n) {
    Buffered &b = buffer_.front();
    const uint64_t id = next_delivery_++;
    unacked_.emplace(id, Unacked{b.fid, std::move(b.id)});
    out.add(id, b.count, std::move(b.event));
    buffer_.pop_front();
  }
  pending_.store(static_cast<int64_t>(unacked_.size() + buffer_.size()));
}

}  // namespace
}  // namespace kodo::redis

KODO_TRANSPORT_PLUGIN(kodo::redis::RedisTransport, "redis", "0.1.0",
                      "Redis Streams: one stream per execution, spoolers in any process share "
                      "the work, a dead spooler's executions are claimed by the others",
                      KODO_TRANSPORT_CAP_GROUPS | KODO_TRANSPORT_CAP_REDELIVERY |
                          KODO_TRANSPORT_CAP_CROSS_PROCESS | KODO_TRANSPORT_CAP_FINISH,
                      kodo::redis::kOptions,
                      sizeof kodo::redis::kOptions / sizeof kodo::redis::kOptions[0])
