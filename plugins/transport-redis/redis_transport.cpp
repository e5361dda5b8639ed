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
//
// Files: redis_settings.hpp (options), redis_producer.* (publishing), redis_consumer.* and
// redis_consumer_reads.cpp (ownership, acks, reads), fork_streams.hpp (the fork's streams),
// redis_connection.hpp (the connection), redis_scripts.hpp (the Lua scripts); this file holds
// the transport handle.
#include "redis_transport.hpp"

#include "redis_scripts.hpp"

#include <algorithm>

namespace kodo::redis {

RedisTransport::RedisTransport(const kodo::sdk::Options &options, const kodo_host_api *host)
    : settings_(options), log_(host), producer_(settings_, log_) {
  log_(KODO_LOG_INFO, "redis at " + settings_.endpoint.shown + ", streams " + settings_.prefix +
                          "<fid>, claim_idle_ms " + std::to_string(settings_.claim_idle.count()) +
                          ", max_stream_len " + std::to_string(settings_.max_stream_len));
}

RedisTransport::~RedisTransport() {
  std::vector<std::string> left;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    left.swap(finishes_);
  }
  if (!left.empty()) try_send_finishes(left);
}

void RedisTransport::publish(const kodo_event *const *events, size_t count, int32_t timeout_ms) {
  producer_.publish(events, count, timeout_ms);
}

std::unique_ptr<kodo::sdk::ConsumerBase> RedisTransport::open_consumer(const std::string &group,
                                                                       const std::string &name) {
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

void RedisTransport::finish_execution(const char *fid) {
  kodo::sdk::check_name("fid", fid);
  std::unique_lock<std::mutex> lock(mutex_);
  finishes_.emplace_back(fid);
  if (!consumers_.empty()) return;
  std::vector<std::string> now;
  now.swap(finishes_);
  lock.unlock();
  if (!try_send_finishes(now))
    throw Error(KODO_ERR_UNAVAILABLE,
                "finish_execution " + std::string(fid) + ": redis at " + settings_.endpoint.shown +
                    " is unreachable; the stream stays until an execution finishes later",
                true);
}

std::vector<Metric> RedisTransport::metrics() {
  std::vector<Metric> out = producer_.metrics();
  std::lock_guard<std::mutex> lock(mutex_);
  for (const RedisConsumer *c : consumers_) {
    auto m = c->metrics();
    out.insert(out.end(), m.begin(), m.end());
  }
  return out;
}

void RedisTransport::forget(RedisConsumer *c) {
  std::lock_guard<std::mutex> lock(mutex_);
  consumers_.erase(std::remove(consumers_.begin(), consumers_.end(), c), consumers_.end());
}

std::vector<std::string> RedisTransport::take_finishes() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> out;
  out.swap(finishes_);
  return out;
}

void RedisTransport::return_finishes(const std::vector<std::string> &fids) {
  std::lock_guard<std::mutex> lock(mutex_);
  finishes_.insert(finishes_.begin(), fids.begin(), fids.end());
}

bool RedisTransport::try_send_finishes(const std::vector<std::string> &fids) {
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

}  // namespace kodo::redis

KODO_TRANSPORT_PLUGIN(kodo::redis::RedisTransport, "redis", "0.1.0",
                      "Redis Streams: one stream per execution, spoolers in any process share "
                      "the work, a dead spooler's executions are claimed by the others",
                      KODO_TRANSPORT_CAP_GROUPS | KODO_TRANSPORT_CAP_REDELIVERY |
                          KODO_TRANSPORT_CAP_CROSS_PROCESS | KODO_TRANSPORT_CAP_FINISH,
                      kodo::redis::kOptions,
                      sizeof kodo::redis::kOptions / sizeof kodo::redis::kOptions[0])
