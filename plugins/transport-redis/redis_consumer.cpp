// redis_consumer.cpp: the Redis consumer's ownership of executions (joining the group,
// adopting announced or abandoned executions, the periodic upkeep that renews them, hands
// over, reaps and trims) and its acknowledgements (recorded stored positions). The reads are
// in redis_consumer_reads.cpp.
#include "redis_consumer.hpp"

#include "redis_scripts.hpp"
#include "redis_transport.hpp"

#include <algorithm>
#include <set>
#include <unordered_set>

namespace kodo::redis {

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

}  // namespace kodo::redis
