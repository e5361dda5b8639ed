// redis_producer.cpp: the Redis transport's producer: formatting events as RESP, the bounded
// queue publish() fills, the writer thread that pipelines it, and the data-epoch check that
// notices a Redis which lost its data. Split from redis_transport.cpp, which describes the
// whole design.
#include "redis_producer.hpp"

#include "redis_scripts.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <string_view>

namespace kodo::redis {
namespace {

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

}  // namespace

Producer::Producer(const Settings &settings, kodo::sdk::HostLog log)
    : settings_(settings),
      log_(log),
      connection_(settings.endpoint, "producer", settings.connect_timeout_ms),
      writer_([this] { write_loop(); }) {}

Producer::~Producer() {
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

void Producer::publish(const kodo_event *const *events, size_t count, int32_t timeout_ms) {
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

std::vector<Metric> Producer::metrics() {
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

std::string Producer::seconds_since(Clock::time_point t) {
  char buffer[32];
  (void)std::snprintf(buffer, sizeof buffer, "%.1f",
                      std::chrono::duration<double>(Clock::now() - t).count());
  return buffer;
}

Chunk Producer::format(const kodo_event *const *events, size_t count) const {
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
void Producer::track(const kodo_event *const *events, size_t count) {
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
void Producer::requeue_finals() {
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
void Producer::check_epoch() {
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
size_t Producer::reannouncements(const std::vector<Chunk *> &batch, std::string &resp,
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

void Producer::set_up(bool up) {
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
void Producer::write_loop() {
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
            log_(KODO_LOG_WARN, "redis at " + settings_.endpoint.shown +
                                    " refused a write for now, retrying: " + std::string(message));
            retry_later = true;
            return false;
          }
          dropped_.fetch_add(event ? 1 : 0, std::memory_order_relaxed);
          log_(KODO_LOG_ERROR, std::string("redis at ") + settings_.endpoint.shown + " rejected " +
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

}  // namespace kodo::redis
