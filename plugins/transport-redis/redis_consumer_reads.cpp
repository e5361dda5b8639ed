// redis_consumer_reads.cpp: how the Redis consumer reads: XREADGROUP pipelined with the acks
// and sent ahead while the host stores, entries turned into events where they lie in the reply
// frame, and setting streams back after a lost connection.
#include "redis_consumer.hpp"

#include <algorithm>

namespace kodo::redis {
namespace {

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

}  // namespace

// The value of field `name` of an entry, or "".
std::string field(const Value *fields, std::string_view name) {
  for (size_t k = 0; is_array(fields) && k + 1 < fields->elements; k += 2)
    if (text(fields->element[k]) == name) return std::string(text(fields->element[k + 1]));
  return {};
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

}  // namespace kodo::redis
