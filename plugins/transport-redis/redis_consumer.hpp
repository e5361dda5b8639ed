// redis_consumer.hpp: the Redis transport's consumer (see redis_transport.cpp for the design)
// and what it keeps per owned execution: redis_consumer.cpp holds ownership (adopting, upkeep,
// handing over) and acknowledgements, redis_consumer_reads.cpp the reads.
#pragma once

#include "fork_streams.hpp"
#include "redis_connection.hpp"
#include "redis_settings.hpp"

#include <kodo/plugin.hpp>

#include <atomic>
#include <charconv>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kodo::redis {

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

// The value of field `name` of an entry, or "".
std::string field(const Value *fields, std::string_view name);

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

}  // namespace kodo::redis
