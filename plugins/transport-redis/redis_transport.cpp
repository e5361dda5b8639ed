// redis_transport.cpp: events carried through Redis Streams, between producers and spoolers in
// any number of processes on any number of machines.
//
// Keys (prefix `kodo:events:` by default; '#' never occurs in a fid, so they cannot collide):
//   <prefix><fid>         one stream per execution; entries timestamp, kind, payload, seq,
//                         username (kodosumi's three fields first)
//   <prefix>#registry     a stream of announcements, one entry {fid, username} per execution
//   <prefix>#executions   hash fid -> id of its announcement (makes announcing idempotent)
//   <prefix>#finished     sorted set fid -> when its stream may be deleted (ms, server time)
//   <prefix>#stored:<group>  hash fid -> id of the entry up to which the group has stored it
//   <prefix>#epoch        a value set once per data set, to notice that Redis lost its data
//
// Producer. publish() formats the batch as RESP (one XADD per event, plus the announcement
// script after an execution's seq 0) in the caller's thread and queues it; one writer thread
// pipelines whatever is queued over its own connection, so a burst costs one round trip, not
// one per event. The queue is bounded (buffer_events, buffer_bytes); while Redis is away it
// fills, then publish waits up to its timeout and fails with a retryable KODO_ERR_TIMEOUT
// that says so. A pipeline cut by a lost connection is resent from its first unconfirmed
// command: an event may then be in its stream twice, which idempotent storage absorbs.
//
// Data loss. A Redis that comes back empty (no persistence, or a failover to an empty replica)
// has lost the announcements, so an execution's later events would go into a stream no spooler
// reads. After every reconnect the writer reads #epoch; a changed or missing value means the
// data is gone, and every execution this producer has under way (not yet past its final
// status, or still queued) is announced again right after its next XADD. Events written
// before the loss and not yet stored are lost (the host's spooler says so in each execution,
// see core/lost_events.hpp), except the newest final statuses (up to kKeepFinals), which are
// written again so that every execution still ends. producer_redis_data_lost_total counts
// losses.
//
// Discovery and ownership. Spoolers join the consumer group on the registry. An announcement
// delivered to a consumer makes it the execution's owner for as long as the entry stays in
// its pending list: only the owner reads that execution's stream, so its events reach storage
// in order. The owner keeps the entries fresh (a heartbeat script re-claims them for itself);
// when it dies they go idle, and after claim_idle_ms another consumer takes them with
// XAUTOCLAIM. A consumer that closes cleanly hands its executions over at once (it marks their
// announcements idle). Each read takes at most one new execution, so a busy spooler takes
// fewer and the work spreads over all live spoolers.
//
// Reading. The owner reads its streams with XREADGROUP ... NOACK and records, as the host
// acknowledges, the entry up to which each stream is stored (#stored:<group>). Ownership makes
// a per-entry pending list unnecessary, and keeping one is most of what a read costs Redis.
// A new owner sets the stream's group back to the recorded position (XGROUP SETID) and reads
// on: whatever the old owner read and did not record comes again, as a redelivery.
//
// The kodosumi fork's streams (fork_streams.hpp): entries with only timestamp, kind and
// payload, never announced. Each consumer scans for such streams about once a second,
// announces them with the username of their meta event, and numbers their entries by
// position in the stream (kAdopt), which is what seq would have been.
//
// Cleanup. finish_execution records the execution in #finished with a grace period; the owner
// deletes the stream once the grace has passed and every group has stored it. A stream that
// grows past max_stream_len is trimmed by its owner below the oldest entry a group has not
// stored (XTRIM MINID), never by the producer (XADD MAXLEN would drop entries not yet stored).
#include "fork_streams.hpp"
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

constexpr kodo_option_spec kUrl = kodo::sdk::option(
    "url", KODO_OPTION_URL, KODO_OPTION_SECRET, "redis://127.0.0.1:6379/0", "KODO_REDIS_URL",
    "the Redis server: redis://[[user]:password@]host:port[/db]");
constexpr kodo_option_spec kPrefix = kodo::sdk::option(
    "stream_prefix", KODO_OPTION_STRING, 0, "kodo:events:", "KODO_REDIS_STREAM_PREFIX",
    "key prefix: an execution's stream is <prefix><fid>");
constexpr kodo_option_spec kBlockMs = kodo::sdk::option(
    "block_ms", KODO_OPTION_INT, 0, "1000", "KODO_REDIS_BLOCK_MS",
    "longest one blocking XREADGROUP waits (a read waits at most what the spooler asks)");
constexpr kodo_option_spec kMaxStreamLen = kodo::sdk::option(
    "max_stream_len", KODO_OPTION_INT, 0, "10000", "KODO_REDIS_MAX_STREAM_LEN",
    "a stream longer than this is trimmed, but only of entries every group has stored; "
    "0 never trims");
constexpr kodo_option_spec kClaimIdleMs = kodo::sdk::option(
    "claim_idle_ms", KODO_OPTION_INT, 0, "30000", "KODO_REDIS_CLAIM_IDLE_MS",
    "a spooler silent this long loses its executions (and what it read and did not "
    "acknowledge) to another spooler");
constexpr kodo_option_spec kGraceMs =
    kodo::sdk::option("stream_grace_ms", KODO_OPTION_INT, 0, "30000", "KODO_REDIS_STREAM_GRACE_MS",
                      "how long an execution's stream stays after its final event is stored");
constexpr kodo_option_spec kBufferEvents = kodo::sdk::option(
    "buffer_events", KODO_OPTION_INT, 0, "100000", "KODO_REDIS_BUFFER_EVENTS",
    "most events a producer holds that Redis has not confirmed; when full (Redis away), "
    "publish waits its timeout and then fails");
constexpr kodo_option_spec kBufferBytes =
    kodo::sdk::option("buffer_bytes", KODO_OPTION_INT, 0, "268435456", nullptr,
                      "most bytes of commands a producer holds unconfirmed");
constexpr kodo_option_spec kConnectTimeoutMs =
    kodo::sdk::option("connect_timeout_ms", KODO_OPTION_INT, 0, "2000", nullptr,
                      "how long one connection attempt may take");
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
  std::string epoch() const { return prefix + "#epoch"; }
  std::string executions() const { return prefix + "#executions"; }
  std::string finished() const { return prefix + "#finished"; }
  std::string stored(const std::string &group) const { return prefix + "#stored:" + group; }
  // How often a consumer renews its executions and looks for dead owners' ones: well inside
  // claim_idle, so a live consumer never looks idle.
  milliseconds upkeep_interval() const {
    return std::clamp(claim_idle / 4, milliseconds(10), milliseconds(1000));
  }
};

// ---- Producer --------------------------------------------------------------------------------

// Rejects a batch holding any malformed event, before anything of it is taken.
void validate(const kodo_event *const *events, size_t count) {
  for (size_t i = 0; i < count; ++i) kodo::sdk::check_event("publish", events[i], i);
}

// Appends RESP to a string without temporaries: the producer formats every event this way.
class RespWriter {
 public:
  explicit RespWriter(std::string &out) : out_(out) {}
  void array(size_t n) { header('*', n); }
  void bulk(std::string_view s) {
    header('$', s.size());
    out_.append(s.data(), s.size());
    out_.append("\r\n", 2);
  }
  void bulk(int64_t v) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
    bulk(std::string_view(digits, static_cast<size_t>(end - digits)));
  }
  void bulk(double v) {
    char digits[32];
    const auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
    bulk(std::string_view(digits, static_cast<size_t>(end - digits)));
  }
  // A bulk string made of two parts (a key: prefix and fid).
  void bulk(std::string_view a, std::string_view b) {
    header('$', a.size() + b.size());
    out_.append(a.data(), a.size());
    out_.append(b.data(), b.size());
    out_.append("\r\n", 2);
  }

 private:
  void header(char type, size_t n) {
    char line[24];
    line[0] = type;
    char *end = std::to_chars(line + 1, line + sizeof line - 2, n).ptr;
    *end++ = '\r';
    *end++ = '\n';
    out_.append(line, static_cast<size_t>(end - line));
  }
  std::string &out_;
};

// Commands of one publish call, formatted, waiting for the writer.
struct Chunk {
  std::string resp;
  std::vector<size_t> ends;       // offset just past each command
  std::vector<uint8_t> is_event;  // per command: an XADD of one event (else an announcement)
  size_t first = 0;               // commands before this one are confirmed
  size_t events = 0;              // events not yet confirmed
  std::vector<std::pair<std::string, std::string>> executions;  // (fid, username), once each
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
    track(events, count);
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
         up_ ? 1.0 : 0.0},
        {"producer_redis_data_lost_total",
         "Times Redis came back without its data (restarted empty, or failed over to an empty "
         "replica): executions under way were announced again; events not yet stored were lost.",
         "", KODO_METRIC_COUNTER, static_cast<double>(data_lost_.load())}};
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
    for (size_t i = 0; i < count; ++i) size += events[i]->payload_len + 200;
    chunk.resp.reserve(size);
    chunk.ends.reserve(count + 1);
    chunk.is_event.reserve(count + 1);
    RespWriter w(chunk.resp);
    for (size_t i = 0; i < count; ++i) {
      const kodo_event &e = *events[i];
      if (std::none_of(chunk.executions.begin(), chunk.executions.end(),
                       [&](const auto &x) { return x.first == e.fid; }))
        chunk.executions.emplace_back(e.fid, e.username);
      w.array(13);
      w.bulk("XADD");
      w.bulk(settings_.prefix, e.fid);
      w.bulk("*");
      w.bulk("timestamp");
      w.bulk(e.timestamp);
      w.bulk("kind");
      w.bulk(e.kind);
      w.bulk("payload");
      w.bulk(std::string_view(e.payload ? e.payload : "", e.payload_len));
      w.bulk("seq");
      w.bulk(e.seq);
      w.bulk("username");
      w.bulk(e.username);
      chunk.ends.push_back(chunk.resp.size());
      chunk.is_event.push_back(1);
      // Announced after its first event is in the stream, so a spooler that takes the
      // announcement always finds the stream.
      if (e.seq == 0) {
        append_command(chunk.resp, {"EVAL", scripts::kRegister, "2", settings_.registry(),
                                    settings_.executions(), e.fid, e.username});
        chunk.ends.push_back(chunk.resp.size());
        chunk.is_event.push_back(0);
      }
    }
    chunk.events = count;
    return chunk;
  }

  // Executions under way: from their first event until their final status is published. The
  // final status itself is kept a while (kKeepFinals), to be written again should Redis lose
  // it before a spooler stored it: without it the execution would never end.
  void track(const kodo_event *const *events, size_t count) {
    std::lock_guard<std::mutex> lock(live_mutex_);
    for (size_t i = 0; i < count; ++i) {
      const kodo_event &e = *events[i];
      const std::string_view kind(e.kind), payload(e.payload ? e.payload : "", e.payload_len);
      if (kind == "status" && (payload == "finished" || payload == "error")) {
        live_.erase(e.fid);
        finals_.push_back(SavedEvent{e.fid, e.username, e.seq, e.timestamp, std::string(payload)});
        if (finals_.size() > kKeepFinals) finals_.pop_front();
      } else if (!live_.count(e.fid)) {
        live_.emplace(e.fid, e.username);
      }
    }
  }

  // The kept final statuses, each written again and announced, queued behind what waits.
  // Storage is idempotent on (fid, seq), so one that was stored already changes nothing.
  void requeue_finals() {
    std::vector<SavedEvent> finals;
    {
      std::lock_guard<std::mutex> lock(live_mutex_);
      finals.assign(finals_.begin(), finals_.end());
    }
    if (finals.empty()) return;
    Chunk chunk;
    for (const SavedEvent &f : finals) {
      kodo_event e{};
      e.struct_size = sizeof e;
      e.fid = f.fid.c_str();
      e.username = f.username.c_str();
      e.seq = f.seq;
      e.timestamp = f.timestamp;
      e.kind = "status";
      e.payload = f.status.c_str();
      e.payload_len = f.status.size();
      const kodo_event *one = &e;
      Chunk c = format(&one, 1);
      chunk.resp += c.resp;
      chunk.ends.push_back(chunk.resp.size());
      chunk.is_event.push_back(1);
      if (c.ends.size() == 1) {  // seq > 0: format did not announce it
        append_command(chunk.resp, {"EVAL", scripts::kRegister, "2", settings_.registry(),
                                    settings_.executions(), f.fid, f.username});
        chunk.ends.push_back(chunk.resp.size());
        chunk.is_event.push_back(0);
      }
    }
    chunk.events = finals.size();
    std::lock_guard<std::mutex> lock(mutex_);
    buffered_events_ += chunk.events;
    buffered_bytes_ += chunk.resp.size();
    queue_.push_back(std::move(chunk));  // references to the chunks in hand stay valid
  }

  // After a (re)connect: has Redis kept its data? If not, everything under way is announced
  // again. Writer thread only.
  void check_epoch() {
    const std::string fresh =
        std::to_string(::getpid()) + "-" +
        std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    auto reply = connection_.command({"EVAL", scripts::kEpoch, "1", settings_.epoch(), fresh},
                                     "reading the data epoch");
    const std::string now(text(reply.get()));
    const bool lost = !epoch_.empty() && now != epoch_;
    epoch_ = now;
    epoch_reconnects_ = connection_.reconnects();
    if (!lost) return;
    data_lost_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(live_mutex_);
      for (const auto &[fid, username] : live_) reannounce_.emplace(fid, username);
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const Chunk &c : queue_)
        for (const auto &[fid, username] : c.executions) reannounce_.emplace(fid, username);
    }
    requeue_finals();
    log_(KODO_LOG_ERROR, "redis at " + settings_.endpoint.shown +
                             " lost its data (restarted empty, or failed over to an empty "
                             "replica): announcing " +
                             std::to_string(reannounce_.size()) +
                             " executions again and writing the last final statuses again; "
                             "events written before and not yet stored are lost");
  }

  // The announcements of executions to announce again that this batch writes to: they go
  // after the batch's XADDs, so a spooler that takes one finds the stream.
  size_t reannouncements(const std::vector<Chunk *> &batch, std::string &resp,
                         std::vector<std::pair<std::string, std::string>> &sent) {
    size_t commands = 0;
    for (Chunk *c : batch)
      for (const auto &[fid, username] : c->executions) {
        const auto it = reannounce_.find(fid);
        if (it == reannounce_.end()) continue;
        append_command(resp, {"EVAL", scripts::kRegister, "2", settings_.registry(),
                              settings_.executions(), fid, username});
        sent.emplace_back(*it);
        reannounce_.erase(it);
        ++commands;
      }
    return commands;
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
      // Idle, it still looks at the epoch now and then: a Redis that lost its data while
      // nothing was written to it may hold none of the final statuses written before.
      if (!wake_.wait_for(lock, kIdleEpochCheck, [&] { return stopping_ || !queue_.empty(); })) {
        lock.unlock();
        try {
          connection_.ensure();
          check_epoch();
        } catch (const Error &) {
          set_up(false);  // the next write reconnects and looks again
        }
        lock.lock();
        continue;
      }
      if (queue_.empty()) return;  // stopping, all written
      if (stopping_ && Clock::now() >= stop_by_) return;
      // Chunks are only pushed at the back, so references to the front ones stay valid
      // while the lock is released.
      size_t take = 0, bytes = 0;
      while (take < queue_.size() && bytes < (256u << 10)) bytes += queue_[take++].resp.size();
      std::vector<Chunk *> batch;
      for (size_t i = 0; i < take; ++i) batch.push_back(&queue_[i]);
      lock.unlock();
      size_t confirmed_events = 0, done_chunks = 0, freed_bytes = 0;
      bool retry_later = false;
      std::vector<std::pair<std::string, std::string>> announcing;
      try {
        connection_.ensure();
        set_up(true);
        reconnects_ = connection_.reconnects();
        if (epoch_.empty() || epoch_reconnects_ != connection_.reconnects()) check_epoch();
        std::vector<std::string_view> parts;
        size_t commands = 0;
        for (Chunk *c : batch) {
          const size_t from = c->first ? c->ends[c->first - 1] : 0;
          parts.emplace_back(c->resp.data() + from, c->resp.size() - from);
          commands += c->ends.size() - c->first;
        }
        std::string extra;
        if (!reannounce_.empty()) {
          commands += reannouncements(batch, extra, announcing);
          parts.emplace_back(extra);
        }
        size_t ci = 0;
        connection_.stream(parts, commands, [&](const Value *reply) {
          if (ci == batch.size()) {  // a re-announcement, after every chunk
            if (is_error(reply))
              log_(KODO_LOG_ERROR,
                   "redis at " + settings_.endpoint.shown +
                       " refused to announce an execution again: " + std::string(text(reply)));
            return true;
          }
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
        for (auto &a : announcing) reannounce_.insert(std::move(a));  // unconfirmed: again
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
  std::atomic<uint64_t> written_{0}, refused_{0}, dropped_{0}, reconnects_{0}, data_lost_{0};
  struct SavedEvent {
    std::string fid, username;
    int64_t seq;
    double timestamp;
    std::string status;
  };
  static constexpr size_t kKeepFinals = 10000;
  static constexpr milliseconds kIdleEpochCheck{1000};
  std::mutex live_mutex_;
  std::unordered_map<std::string, std::string> live_;  // fid -> username, under way
  std::deque<SavedEvent> finals_;                      // the newest final statuses
  // The writer thread's alone.
  std::string epoch_;  // the data epoch Redis had at the last check
  uint64_t epoch_reconnects_ = 0;
  std::map<std::string, std::string> reannounce_;  // fid -> username, to announce again
  std::thread writer_;                             // last: starts once everything above exists
};

// An entry id, "<ms>-<seq>".
struct EntryId {
  uint64_t ms = 0, seq = 0;

  static bool parse(std::string_view text, EntryId &out) {
    const size_t dash = text.find('-');
    if (dash == std::string_view::npos) return false;
    const char *end = text.data() + text.size();
    return std::from_chars(text.data(), text.data() + dash, out.ms).ptr == text.data() + dash &&
           std::from_chars(text.data() + dash + 1, end, out.seq).ptr == end;
  }
  std::string str() const { return std::to_string(ms) + "-" + std::to_string(seq); }
  bool operator<(const EntryId &o) const { return ms < o.ms || (ms == o.ms && seq < o.seq); }
};

// Points `e` at an entry's fields where they lie in the reply (strings NUL-terminated there).
// Unknown fields are ignored; returns false when the entry lacks what kodo writes. An entry
// with neither seq nor username is the kodosumi fork's (fork_streams.hpp): it takes
// `position` (its place in the stream) as seq and the execution's `username`.
bool entry_event(const Value *fields, const char *fid, const std::string &username,
                 int64_t position, kodo_event &e) {
  e = kodo_event{sizeof(kodo_event), fid, nullptr, -1, 0.0, nullptr, "", 0};
  for (size_t k = 0; is_array(fields) && k + 1 < fields->elements; k += 2) {
    const std::string_view name = text(fields->element[k]);
    const Value *value = fields->element[k + 1];
    if (value->type != REDIS_REPLY_STRING) continue;
    const char *first = value->str, *last = value->str + value->len;
    if (name == "timestamp") {
      std::from_chars(first, last, e.timestamp);
    } else if (name == "kind") {
      e.kind = value->str;
    } else if (name == "payload") {
      e.payload = value->str;
      e.payload_len = value->len;
    } else if (name == "seq") {
      if (std::from_chars(first, last, e.seq).ptr != last) e.seq = -1;
    } else if (name == "username") {
      e.username = value->str;
    }
  }
  if (e.seq < 0 && !e.username && !username.empty()) {
    e.seq = position;
    e.username = username.c_str();
  }
  return e.seq >= 0 && e.kind && *e.kind && e.username && *e.username;
}

// The value of field `name` of an entry, or "".
std::string field(const Value *fields, std::string_view name) {
  for (size_t k = 0; is_array(fields) && k + 1 < fields->elements; k += 2)
    if (text(fields->element[k]) == name) return std::string(text(fields->element[k + 1]));
  return {};
}

// ---- Consumer --------------------------------------------------------------------------------

class RedisTransport;

// One owned execution's stream, shared with the entries read from it.
struct OwnedStream {
  std::string fid, key, registry_id;
  std::string username;  // from its announcement: the username of the fork's entries
  int64_t position = 0;  // how many entries the stream had before the next one read
  EntryId read_to;       // the group's position as this consumer knows it (the last entry read)
  EntryId stored;        // every entry up to here is stored (acknowledged by the host)
  EntryId recorded;      // the position last written to Redis
  EntryId redeliver_to;  // entries up to here were read before (by a consumer that went silent)
  bool owned = true;     // false once dropped: its late acks are not recorded
  bool dirty = false;    // acknowledged entries not yet recorded
  std::vector<EntryId> pel_acked;  // acknowledged entries that are pending in Redis
  size_t acked_since_trim = 0;
  // Entries read, in order, from the first one not yet acknowledged; `base` numbers the front.
  struct Inflight {
    EntryId id;
    bool acked = false, pel = false;  // pel: read by a blocking read, which keeps a pending entry
  };
  std::deque<Inflight> inflight;
  uint64_t base = 0;
};
using StreamRef = std::shared_ptr<OwnedStream>;

// An entry read from an owned stream and not yet handed to the host; its strings lie in the
// frame it was read into.
struct Buffered {
  std::shared_ptr<Frame> frame;
  StreamRef stream;
  uint64_t index = 0;  // in stream->inflight, counted from its base
  uint32_t count = 0;
  kodo_event event{};
  bool fork = false;  // a fork's entry: its username is the stream's, so it is handed out copied
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
  struct Unacked {
    StreamRef stream;
    uint64_t index;
  };
  struct Taken {
    std::string fid, registry_id, username;
  };

  void join();
  void upkeep();
  void recover();
  void fetch(int32_t block_ms);
  void send_fetch(int32_t block_ms);
  void receive_fetch();
  void adopt(const std::vector<Taken> &taken, bool from_others);
  void drop(const std::string &fid, const char *why);
  void take_entries(const Reply &reply, bool pel);
  struct SentAck {
    StreamRef stream;
    EntryId position;  // recorded as stored
    size_t pel = 0;    // how many of its pel_acked were XACKed
  };
  void add_acks(std::string &resp, size_t &commands, std::vector<SentAck> &sent);
  void acks_sent(const std::vector<SentAck> &sent);
  void check_nogroup(const Value *reply);
  void mark_acked(const StreamRef &ref, uint64_t index);

  RedisTransport &transport_;
  const Settings &settings_;
  kodo::sdk::HostLog log_;
  const std::string group_, name_, stored_key_;
  Connection connection_;
  bool joined_ = false;
  std::map<std::string, StreamRef, std::less<>> owned_;       // fid -> its stream
  std::unordered_map<std::string, std::string> by_registry_;  // announcement id -> fid
  std::deque<Buffered> buffer_;
  std::unordered_map<uint64_t, Unacked> unacked_;
  uint64_t next_delivery_ = 1;
  std::vector<StreamRef> dirty_;  // streams whose acks are not yet sent
  struct InFlight {               // a read sent and not yet received
    bool active = false, blocking = false;
    size_t commands = 0, ack_commands = 0;
    std::vector<SentAck> sent;  // the acks it carries
  };
  InFlight in_flight_;
  Clock::time_point next_upkeep_{};
  Clock::time_point next_forget_{};
  ForkStreamFinder fork_streams_;
  Clock::time_point next_fork_scan_{};
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
      stored_key_(settings_.stored(group_)),
      connection_(settings_.endpoint, "consumer " + name_, settings_.connect_timeout_ms),
      fork_streams_(settings_.prefix, settings_.registry(), settings_.executions()) {
  // Joining now fixes where a new group starts; if Redis is away, the first read joins.
  try {
    join();
    upkeep();
  } catch (const Error &e) {
    log_(KODO_LOG_WARN, std::string("consumer ") + name_ + ": " + e.what() + "; will retry");
  }
}

// Records how far each stream is stored and hands over at once every execution with nothing
// handed out and unacknowledged; the rest go to another consumer when idle, as the contract
// says. Whatever this consumer had read beyond the recorded position, the next owner reads again.
RedisConsumer::~RedisConsumer() {
  transport_.forget(this);
  try {
    // A read sent ahead is taken in first (an execution it announced is handed over too).
    if (in_flight_.active) receive_fetch();
    std::set<std::string> holding;
    for (const auto &item : unacked_) holding.insert(item.second.stream->fid);
    std::string resp;
    size_t commands = 0;
    std::vector<SentAck> sent;
    add_acks(resp, commands, sent);
    for (const auto &[fid, s] : owned_) {
      if (holding.count(fid)) continue;
      append_command(resp, {"XCLAIM", settings_.registry(), group_, name_, "0", s->registry_id,
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
           "Entries another consumer had read without recording them stored, read again by "
           "this one.",
           labels, KODO_METRIC_COUNTER, static_cast<double>(claimed_entries_.load())},
          {"reconnects_total", "Times this consumer's connection was made again.", labels,
           KODO_METRIC_COUNTER, static_cast<double>(reconnects_.load())},
          {"up", "1 while this consumer's connection to Redis works.", labels, KODO_METRIC_GAUGE,
           static_cast<double>(up_.load())}};
}

// The commands that record what the host acknowledged: one HSET of the new positions, and an
// XACK for entries a blocking read left pending. `sent` gets what they carry, for acks_sent().
void RedisConsumer::add_acks(std::string &resp, size_t &commands, std::vector<SentAck> &sent) {
  std::vector<std::string> positions = {"HSET", stored_key_};
  for (const StreamRef &s : dirty_) {
    if (!s->owned) continue;  // another consumer owns it now and records its own position
    if (s->recorded < s->stored) {
      positions.push_back(s->fid);
      positions.push_back(s->stored.str());
    }
    if (!s->pel_acked.empty()) {
      std::vector<std::string> xack = {"XACK", s->key, group_};
      for (const EntryId &id : s->pel_acked) xack.push_back(id.str());
      append_command(resp, xack);
      ++commands;
    }
    sent.push_back(SentAck{s, s->stored, s->pel_acked.size()});
  }
  if (positions.size() > 2) {
    append_command(resp, positions);
    ++commands;
  }
}

// Redis confirmed what add_acks sent. Acks that came in since (a read sent ahead is answered
// later) stay to be sent.
void RedisConsumer::acks_sent(const std::vector<SentAck> &sent) {
  for (const SentAck &a : sent) {
    if (a.stream->recorded < a.position) a.stream->recorded = a.position;
    a.stream->pel_acked.erase(a.stream->pel_acked.begin(),
                              a.stream->pel_acked.begin() + static_cast<std::ptrdiff_t>(a.pel));
  }
  std::vector<StreamRef> left;
  for (const StreamRef &s : dirty_) {
    s->dirty = s->owned && (s->recorded < s->stored || !s->pel_acked.empty());
    if (s->dirty) left.push_back(s);
  }
  dirty_.swap(left);
}

// Marks an entry acknowledged, advances the stream's stored position past every acknowledged
// entry at its front, and queues the stream for the next add_acks().
void RedisConsumer::mark_acked(const StreamRef &ref, uint64_t index) {
  OwnedStream &s = *ref;
  if (index < s.base || index - s.base >= s.inflight.size()) return;
  OwnedStream::Inflight &f = s.inflight[index - s.base];
  if (f.acked) return;
  f.acked = true;
  if (f.pel) s.pel_acked.push_back(f.id);
  ++s.acked_since_trim;
  while (!s.inflight.empty() && s.inflight.front().acked) {
    s.stored = s.inflight.front().id;
    s.inflight.pop_front();
    ++s.base;
  }
  if (!s.dirty) {
    s.dirty = true;
    dirty_.push_back(ref);
  }
}

void RedisConsumer::ack(const uint64_t *ids, size_t count) {
  if (count == 0) return;
  if (!ids) invalid("ack: delivery_ids is NULL with count " + std::to_string(count));
  // Recorded with the next read's pipeline (or on close), saving a round trip per batch. Until
  // then the position in Redis is behind, which only matters if this process dies, and then
  // idempotent storage absorbs what is read again.
  for (size_t i = 0; i < count; ++i) {
    auto it = unacked_.find(ids[i]);
    if (it == unacked_.end()) continue;
    mark_acked(it->second.stream, it->second.index);
    unacked_.erase(it);
  }
  pending_.store(static_cast<int64_t>(unacked_.size() + buffer_.size()));
}

void RedisConsumer::drop(const std::string &fid, const char *why) {
  auto it = owned_.find(fid);
  if (it == owned_.end()) return;
  const StreamRef s = it->second;
  s->owned = false;
  by_registry_.erase(s->registry_id);
  owned_.erase(it);
  buffer_.erase(std::remove_if(buffer_.begin(), buffer_.end(),
                               [&](const Buffered &b) { return b.stream == s; }),
                buffer_.end());
  log_(KODO_LOG_DEBUG, "consumer " + name_ + ": no longer reads execution " + fid + ": " + why);
}

// Executions this consumer now owns. Each stream's group is made if new and set back to the
// position recorded as stored, so reading goes on from there; with `from_others` (taken from a
// consumer that went silent) what that one had read beyond it comes again, as redeliveries.
void RedisConsumer::adopt(const std::vector<Taken> &taken, bool from_others) {
  if (taken.empty()) return;
  std::string resp;
  for (const Taken &t : taken)
    append_command(
        resp, {"EVAL", scripts::kAdopt, "2", settings_.stream(t.fid), stored_key_, group_, t.fid});
  auto replies = connection_.pipeline(resp, taken.size());
  std::string forget;
  size_t forgets = 0;
  for (size_t i = 0; i < taken.size(); ++i) {
    const Taken &t = taken[i];
    const Value *r = replies[i].get();
    EntryId position, delivered;
    if (!is_array(r) || r->elements != 3 || !EntryId::parse(text(r->element[0]), position) ||
        !EntryId::parse(text(r->element[1]), delivered)) {
      if (is_error(r)) {
        log_(KODO_LOG_WARN, "consumer " + name_ + ": cannot take execution " + t.fid + ": " +
                                std::string(text(r)));
        continue;
      }
      // The stream is gone (finished and deleted, or removed by hand): forget the announcement.
      append_command(forget, {"XACK", settings_.registry(), group_, t.registry_id});
      append_command(forget, {"HDEL", settings_.executions(), t.fid});
      append_command(forget, {"HDEL", stored_key_, t.fid});
      forgets += 3;
      log_(KODO_LOG_DEBUG,
           "consumer " + name_ + ": execution " + t.fid + " has no stream any more");
      continue;
    }
    auto s = std::make_shared<OwnedStream>();
    s->fid = t.fid;
    s->key = settings_.stream(t.fid);
    s->registry_id = t.registry_id;
    s->username = t.username;
    s->position = r->element[2]->integer;
    s->read_to = s->stored = s->recorded = position;
    if (position < delivered) {
      s->redeliver_to = delivered;
      if (from_others)
        log_(KODO_LOG_INFO, "consumer " + name_ + ": took over execution " + t.fid +
                                "; reads again from " + position.str() +
                                ", the last entry recorded stored (it had been read up to " +
                                delivered.str() + ")");
    }
    by_registry_[t.registry_id] = t.fid;
    owned_[t.fid] = std::move(s);
  }
  if (forgets > 0) connection_.pipeline(forget, forgets);
  owned_count_.store(static_cast<int64_t>(owned_.size()));
}

void RedisConsumer::upkeep() {
  const auto now = Clock::now();
  next_upkeep_ = now + settings_.upkeep_interval();
  std::vector<std::string> finishes = transport_.take_finishes();
  std::string resp;
  size_t commands = 0;
  std::vector<SentAck> sent;
  add_acks(resp, commands, sent);
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
  std::vector<StreamRef> trimmed;
  if (settings_.max_stream_len > 0)
    for (auto &[fid, s] : owned_)
      if (s->acked_since_trim * 4 >= static_cast<size_t>(settings_.max_stream_len)) {
        append_command(resp, {"EVAL", scripts::kTrim, "1", s->key,
                              std::to_string(settings_.max_stream_len), settings_.prefix, fid});
        ++commands;
        trimmed.push_back(s);
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
  acks_sent(sent);
  for (size_t i = 0; i < ack_commands; ++i) check_nogroup(replies[i].get());
  for (const StreamRef &s : trimmed) s->acked_since_trim = 0;

  const Value *beat = replies[heartbeat].get();
  if (is_error(beat) && starts_with(text(beat), "NOGROUP")) {
    joined_ = false;  // the registry or its group is gone (Redis lost its data): join again
    join();
    return;
  }
  if (!is_array(beat))
    throw Error(KODO_ERR_IO, "redis at " + settings_.endpoint.shown + ": heartbeat of consumer " +
                                 name_ + " failed: " + std::string(text(beat)));
  std::unordered_set<std::string> held;
  for (size_t i = 0; i < beat->elements; ++i) held.insert(std::string(text(beat->element[i])));
  std::vector<std::string> lost;
  for (const auto &[fid, s] : owned_)
    if (!held.count(s->registry_id)) lost.push_back(fid);
  for (const auto &fid : lost) drop(fid, "another consumer took it over, or it was deleted");

  // Announcements this consumer holds but does not know (a restart under the same name).
  std::vector<std::string> strange;
  for (const auto &id : held)
    if (!by_registry_.count(id)) strange.push_back(id);

  std::vector<Taken> taken;
  const Value *claim = replies[autoclaim].get();
  if (is_array(claim) && claim->elements >= 2) {
    autoclaim_cursor_ = std::string(text(claim->element[0]));
    const Value *entries = claim->element[1];
    for (size_t i = 0; is_array(entries) && i < entries->elements; ++i) {
      const Value *e = entries->element[i];
      if (!is_array(e) || e->elements < 2 || !is_array(e->element[1])) continue;
      const std::string fid = field(e->element[1], "fid");
      if (!fid.empty())
        taken.push_back(
            Taken{fid, std::string(text(e->element[0])), field(e->element[1], "username")});
    }
  }
  for (const auto &id : strange) {
    auto entry = connection_.command({"XRANGE", settings_.registry(), id, id}, "XRANGE registry");
    if (!is_array(entry.get()) || entry->elements == 0) continue;
    const std::string fid = field(entry->element[0]->element[1], "fid");
    if (!fid.empty())
      taken.push_back(Taken{fid, id, field(entry->element[0]->element[1], "username")});
  }
  if (!taken.empty()) {
    const size_t before = owned_.size();
    adopt(taken, true);
    claims_.fetch_add(owned_.size() - before);
  }

  const Value *reap_reply = replies[reaped].get();
  if (is_array(reap_reply) && reap_reply->elements == 2) {
    const Value *deleted = reap_reply->element[0];
    for (size_t i = 0; is_array(deleted) && i < deleted->elements; ++i)
      drop(std::string(text(deleted->element[i])), "its stream was deleted");
    lag_.store(reap_reply->element[1]->integer);
  } else if (is_error(reap_reply)) {
    log_(KODO_LOG_WARN,
         "consumer " + name_ + ": upkeep of its streams failed: " + std::string(text(reap_reply)));
  }
  // Streams the kodosumi fork wrote are announced here; the registry read takes them.
  if (now >= next_fork_scan_) {
    next_fork_scan_ = now + std::chrono::seconds(1);
    fork_streams_.step(connection_, log_);
  }
  owned_count_.store(static_cast<int64_t>(owned_.size()));
  pending_.store(static_cast<int64_t>(unacked_.size() + buffer_.size()));
}

// After a lost connection: a read whose reply was lost still moved the group's position past
// its entries, so every owned stream's group is set back to the last entry this consumer
// actually got; reading on delivers the lost ones again. A Redis still loading its data
// answers LOADING and sets nothing back: reading on then would skip those entries for good
// (NOACK keeps no pending list), so the read fails, and the next one reconnects and tries again.
void RedisConsumer::recover() {
  if (owned_.empty()) return;
  std::string resp;
  for (const auto &item : owned_)
    append_command(resp, {"XGROUP", "SETID", item.second->key, group_, item.second->read_to.str()});
  auto replies = connection_.pipeline(resp, owned_.size());
  for (const Reply &r : replies) {
    if (is_error(r.get()) && transient_error(text(r.get())))
      throw connection_.unavailable("setting its streams back after a reconnect: " +
                                    std::string(text(r.get())));
    check_nogroup(r.get());
  }
}

// An XACK, XGROUP or XREADGROUP naming a stream that is gone answers NOGROUP naming its key.
void RedisConsumer::check_nogroup(const Value *reply) {
  if (!is_error(reply)) return;
  const std::string_view message = text(reply);
  if (!starts_with(message, "NOGROUP")) {
    log_(KODO_LOG_WARN, "consumer " + name_ + ": " + std::string(message));
    return;
  }
  for (const auto &[fid, s] : owned_)
    if (message.find("'" + s->key + "'") != std::string_view::npos) {
      drop(std::string(fid), "its stream is gone");
      return;
    }
  if (message.find("'" + settings_.registry() + "'") != std::string_view::npos) joined_ = false;
}

// Buffers the entries of an XREADGROUP reply, where they lie, and adopts announcements.
// `pel`: the read kept pending entries (a blocking one), which are to be XACKed.
void RedisConsumer::take_entries(const Reply &reply, bool pel) {
  const Value *streams = reply.get();
  if (!is_array(streams)) return;
  const std::string registry = settings_.registry();
  std::vector<Taken> announced;
  for (size_t s = 0; s < streams->elements; ++s) {
    const Value *stream = streams->element[s];
    if (!is_array(stream) || stream->elements < 2 || !is_array(stream->element[1]) ||
        stream->element[0]->type != REDIS_REPLY_STRING)
      continue;
    const Value *key = stream->element[0];
    const Value *entries = stream->element[1];
    if (text(key) == registry) {
      for (size_t i = 0; i < entries->elements; ++i) {
        const Value *entry = entries->element[i];
        if (!is_array(entry) || entry->elements < 2) continue;
        const std::string fid = field(entry->element[1], "fid");
        if (!fid.empty())
          announced.push_back(Taken{fid, std::string(text(entry->element[0])),
                                    field(entry->element[1], "username")});
      }
      continue;
    }
    // The fid is the key's tail, NUL-terminated in the frame like every string there.
    const char *fid = key->str + std::min(settings_.prefix.size(), key->len);
    auto it = owned_.find(std::string_view(fid));
    if (it == owned_.end()) continue;  // dropped since the read was sent
    const StreamRef &owned = it->second;
    for (size_t i = 0; i < entries->elements; ++i) {
      const Value *entry = entries->element[i];
      EntryId id;
      if (!is_array(entry) || entry->elements < 2 || !EntryId::parse(text(entry->element[0]), id))
        continue;
      owned->read_to = id;
      const uint64_t index = owned->base + owned->inflight.size();
      owned->inflight.push_back(OwnedStream::Inflight{id, false, pel});
      Buffered b;
      if (!entry_event(entry->element[1], fid, owned->username, owned->position++, b.event)) {
        // Not written by kodo: it cannot be stored, and holding it would hold the execution
        // forever. Passed over and reported.
        log_(KODO_LOG_ERROR, "consumer " + name_ + ": entry " + id.str() + " of " +
                                 std::string(text(key)) + " lacks seq, kind or username; skipped");
        mark_acked(owned, index);
        continue;
      }
      b.fork = b.event.username == owned->username.c_str();
      const bool again = !(owned->redeliver_to < id);
      if (again) claimed_entries_.fetch_add(1, std::memory_order_relaxed);
      b.frame = reply.frame();
      b.stream = owned;
      b.index = index;
      b.count = again ? 2 : 1;
      buffer_.push_back(std::move(b));
    }
  }
  adopt(announced, false);
}

void RedisConsumer::fetch(int32_t block_ms) {
  send_fetch(block_ms);
  receive_fetch();
}

// Sends a read (with the acks recorded so far); receive_fetch() takes its replies, and nothing
// else may be sent in between.
void RedisConsumer::send_fetch(int32_t block_ms) {
  std::string resp;
  size_t commands = 0;
  std::vector<SentAck> sent;
  add_acks(resp, commands, sent);
  const size_t ack_commands = commands;
  const std::string registry = settings_.registry();
  // COUNT is per stream: about a spooler batch in all, at least a useful run of each. A
  // blocking read also waits on the registry, so it takes 1 (one new execution at most) and
  // cannot be NOACK (the registry's pending entries are the ownership); the caller reads on
  // without blocking once it woke.
  const size_t per_stream =
      block_ms > 0 ? 1 : std::max<size_t>(64, 1024 / std::max<size_t>(1, owned_.size()));
  std::vector<std::string> args = {"XREADGROUP", "GROUP", group_,
                                   name_,        "COUNT", std::to_string(per_stream)};
  if (block_ms > 0) {
    args.push_back("BLOCK");
    args.push_back(std::to_string(block_ms));
  } else {
    args.push_back("NOACK");
  }
  args.push_back("STREAMS");
  if (block_ms > 0) args.push_back(registry);
  for (const auto &item : owned_) args.push_back(item.second->key);
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
  connection_.send(resp);
  in_flight_ = InFlight{true, block_ms > 0, commands, ack_commands, std::move(sent)};
}

void RedisConsumer::receive_fetch() {
  InFlight f = std::move(in_flight_);
  in_flight_ = InFlight{};
  auto replies = connection_.receive(f.commands);
  acks_sent(f.sent);
  for (size_t i = 0; i < f.ack_commands; ++i) check_nogroup(replies[i].get());
  for (size_t i = f.ack_commands; i < replies.size(); ++i) {
    if (is_error(replies[i].get())) {
      check_nogroup(replies[i].get());
      continue;
    }
    take_entries(replies[i], f.blocking);
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
    // The read sent at the end of the previous call comes first: its replies are next.
    if (in_flight_.active) receive_fetch();
    if (!joined_) join();
    if (reconnected) recover();
    if (Clock::now() >= next_upkeep_) upkeep();
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
    in_flight_ = InFlight{};  // its replies are lost with the connection; recover() reads again
    if (e.code() != KODO_ERR_UNAVAILABLE) throw;
    up_.store(0);
    connection_.close();
    if (buffer_.empty()) throw;  // what was read already is still handed out
  }
  for (size_t n = 0; n < max && !buffer_.empty(); ++n) {
    Buffered &b = buffer_.front();
    const uint64_t id = next_delivery_++;
    unacked_.emplace(id, Unacked{std::move(b.stream), b.index});
    if (b.fork)
      out.add(id, b.count, kodo::sdk::OwnedEvent::copy(b.event));
    else
      out.add_view(id, b.count, b.event, std::move(b.frame));
    buffer_.pop_front();
  }
  pending_.store(static_cast<int64_t>(unacked_.size() + buffer_.size()));
  // A spooler stores what it got before it reads again: send that read now, so Redis answers
  // while the host stores, and the next call finds the entries already on their way.
  if (max > 0 && out.size() > 0 && buffer_.size() < max && connection_.connected()) {
    try {
      send_fetch(0);
    } catch (const Error &) {
      in_flight_ = InFlight{};
      connection_.close();  // the next call reconnects and reads again what was lost
    }
  }
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
