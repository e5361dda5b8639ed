// inproc_transport.cpp: the embedded default transport, for an executor and spoolers that
// live in one kodo-host process.
//
// Model. Each published batch is copied once into an immutable Block. Each consumer group
// keeps, per execution (fid), a FIFO of queued entries and a FIFO of pending ones (delivered,
// not acked), plus a round-robin list of the fids that have something queued. A read takes
// fid by fid, so storage gets long per-execution runs. A fid with pending entries is owned by
// the consumer that holds them: no other consumer is given its later events until they are
// acked, or until they sit idle for claim_idle_ms; then they go back to the front of the fid's
// FIFO and, with the ownership, to whichever consumer of the group reads next.
//
// Groups are independent and each sees every event published while it exists. Events
// published before any group exists wait for the first group to be opened; a group opened
// later starts with the events published after it.
//
// One mutex guards everything; producers wait on `space_` for capacity, readers on `data_`
// for events. Capacity counts events, queued or unacked, until every group that got them has
// acked them. A fid's state in a group is dropped as soon as it has nothing queued or pending,
// so nothing outlives an execution's last ack.
#include <kodo/plugin.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using kodo::sdk::Error;

[[noreturn]] void invalid(const std::string &message) {
  throw Error(KODO_ERR_INVALID_ARGUMENT, message);
}

// An fid or username: [A-Za-z0-9_.@-], 1..64 bytes, not "." or "..". The host checks this
// too; the transport checks again because an fid is its map key (and elsewhere a stream key).
bool valid_id(const char *s) {
  const size_t len = std::strlen(s);
  if (len == 0 || len > 64 || std::strcmp(s, ".") == 0 || std::strcmp(s, "..") == 0) return false;
  for (size_t i = 0; i < len; ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

constexpr kodo_option_spec kCapacity = kodo::sdk::option(
    "capacity", KODO_OPTION_INT, 0, "1048576", nullptr,
    "most events held at once, queued or delivered but not acked, across all executions; a "
    "publish that does not fit waits up to its timeout");
constexpr kodo_option_spec kClaimIdleMs = kodo::sdk::option(
    "claim_idle_ms", KODO_OPTION_INT, 0, "30000", nullptr,
    "a delivery left unacked this long goes to whichever consumer of its group reads next");
const kodo_option_spec *const kOptions[] = {&kCapacity, &kClaimIdleMs};

[[noreturn]] void fail(size_t i, const std::string &what) {
  invalid("publish: event " + std::to_string(i) + " of the batch " + what);
}

// Rejects a batch holding any malformed event, before anything of it is taken.
void validate(const kodo_event *const *events, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const kodo_event *e = events[i];
    if (!e) fail(i, "is NULL");
    if (e->struct_size < sizeof(kodo_event))
      fail(i, "has struct_size " + std::to_string(e->struct_size) + ", expected " +
                  std::to_string(sizeof(kodo_event)));
    if (!e->fid || !valid_id(e->fid))
      fail(i, std::string("has an invalid fid '") + (e->fid ? e->fid : "(null)") + "'");
    if (!e->username || !valid_id(e->username))
      fail(i,
           std::string("has an invalid username '") + (e->username ? e->username : "(null)") + "'");
    if (!e->kind || !*e->kind) fail(i, "has no kind");
    if (!e->payload && e->payload_len > 0) fail(i, "has a NULL payload of length > 0");
  }
}

// Copies of events whose strings all live in one buffer: two allocations for a whole batch
// instead of several per event. Used for what publish keeps and for what read hands out.
struct PackedEvents {
  std::vector<kodo_event> events;
  std::unique_ptr<char[]> bytes;

  void pack(const kodo_event *const *source, size_t count) {
    size_t size = 0;
    for (size_t i = 0; i < count; ++i) {
      const kodo_event &e = *source[i];
      size += std::strlen(e.fid) + std::strlen(e.username) + std::strlen(e.kind) + e.payload_len +
              4;  // each of the four strings gets its NUL
    }
    bytes.reset(new char[size]);
    events.resize(count);
    char *p = bytes.get();
    auto put = [&p](const char *s, size_t len) {
      char *copy = p;
      if (len > 0) std::memcpy(p, s, len);
      p[len] = '\0';
      p += len + 1;
      return copy;
    };
    for (size_t i = 0; i < count; ++i) {
      const kodo_event &e = *source[i];
      kodo_event &copy = events[i];
      copy.struct_size = sizeof(kodo_event);
      copy.fid = put(e.fid, std::strlen(e.fid));
      copy.username = put(e.username, std::strlen(e.username));
      copy.kind = put(e.kind, std::strlen(e.kind));
      copy.payload = put(e.payload, e.payload_len);
      copy.payload_len = e.payload_len;
      copy.seq = e.seq;
      copy.timestamp = e.timestamp;
    }
  }
};

// One published batch. Freed when every group that got its events has acked them all; the
// counters are guarded by the transport mutex.
struct Block {
  PackedEvents packed;
  std::vector<uint32_t> groups_left;  // per event: groups that have not acked it yet
  size_t live = 0;                    // events with groups_left > 0
};

// One event of one fid in one group, queued or pending.
struct Entry {
  Block *block;
  uint32_t index;        // into block->packed.events
  uint32_t deliveries;   // how often it has been delivered
  uint64_t delivery_id;  // while pending: the owner's id for it
  bool acked;            // pending entries may be acked out of order
};

struct FidState {
  std::string fid;
  std::deque<Entry> queued;
  std::deque<Entry> pending;        // in delivery order, which is publish order
  uint64_t pending_base = 0;        // absolute index of pending.front(): slots survive pops
  uint64_t owner = 0;               // id of the consumer holding `pending`; 0 when empty
  Clock::time_point last_activity;  // owner's last read or ack of this fid
  bool in_ready = false;            // listed in the group's ready list
};

struct Consumer;

struct Group {
  std::string name;  // empty only for the group holding events published before any group
  std::unordered_map<std::string_view, std::unique_ptr<FidState>> fids;  // keys: views of ->fid
  // Fids with queued entries, round robin. Every fid with queued entries is here once; an
  // fid emptied by a redelivery may linger, and is dropped when it comes round.
  std::deque<FidState *> ready;
  std::vector<Consumer *> consumers;  // open ones
  // No pending fid can turn idle before this, so reads skip the scan until then.
  Clock::time_point next_claim_check = Clock::time_point::max();
};

class InprocTransport;

// One open consumer: its group and its unacked deliveries. Used by one thread at a time, but
// reclaiming touches its slots from other consumers' reads, so it is guarded by the mutex.
struct Consumer {
  // An unacked delivery: slots[i] is delivery id first_id + i. `fid` is null once the
  // delivery is acked or was taken away for redelivery; such slots are trimmed off the front.
  struct Slot {
    FidState *fid;
    uint64_t pending_index;  // absolute, see FidState::pending_base
  };

  InprocTransport &transport;
  Group &group;
  const std::string name;
  const uint64_t id;
  std::deque<Slot> slots;
  uint64_t first_id = 1;

  Slot *slot(uint64_t delivery_id) {
    if (delivery_id < first_id || delivery_id - first_id >= slots.size()) return nullptr;
    Slot *s = &slots[delivery_id - first_id];
    return s->fid ? s : nullptr;
  }
  uint64_t next_id() const { return first_id + slots.size(); }
  void trim_slots() {
    while (!slots.empty() && !slots.front().fid) {
      slots.pop_front();
      ++first_id;
    }
  }
};

// What read hands out, self-contained (it may outlive the transport): the events packed, the
// deliveries pointing at them, and the array of pointers the C struct wants.
struct DeliveryBatch {
  PackedEvents packed;
  std::vector<kodo_delivery> deliveries;
  std::vector<const kodo_delivery *> pointers;

  static void release(kodo_delivery_batch *batch) {
    delete static_cast<DeliveryBatch *>(batch->private_data);
    batch->private_data = nullptr;
    batch->deliveries = nullptr;
    batch->count = 0;
    batch->release = nullptr;
  }
};

class InprocTransport {
 public:
  InprocTransport(const InprocTransport &) = delete;  // owns its threads and queues
  InprocTransport &operator=(const InprocTransport &) = delete;
  InprocTransport(const kodo::sdk::Options &options, const kodo_host_api *host)
      : log_(host),
        capacity_(static_cast<size_t>(
            kodo::sdk::int_option(options, kCapacity, 1, std::numeric_limits<uint32_t>::max()))),
        claim_idle_(
            kodo::sdk::int_option(options, kClaimIdleMs, 1, std::numeric_limits<int32_t>::max())) {
    log_(KODO_LOG_DEBUG, "capacity " + std::to_string(capacity_) + " events, claim_idle_ms " +
                             std::to_string(claim_idle_.count()));
  }

  // The host closes every consumer first; what is still queued or pending is dropped here.
  ~InprocTransport() {
    for (auto &group : groups_)
      for (auto &item : group->fids) {
        for (Entry &e : item.second->queued) settle(e);
        for (Entry &e : item.second->pending)
          if (!e.acked) settle(e);
      }
  }

  void publish(const kodo_event *const *events, size_t count, int32_t timeout_ms) {
    if (count == 0) return;
    if (!events) invalid("publish: events is NULL with count " + std::to_string(count));
    if (timeout_ms < 0)
      invalid("publish: timeout_ms must be >= 0, got " + std::to_string(timeout_ms));
    if (count > capacity_)
      invalid("publish: a batch of " + std::to_string(count) +
              " events can never fit: the transport holds at most " + std::to_string(capacity_) +
              " (option capacity)");
    validate(events, count);
    // Copy before locking, so producers copy in parallel with readers.
    auto block = std::make_unique<Block>();
    block->packed.pack(events, count);

    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    std::unique_lock<std::mutex> lock(mutex_);
    if (!space_.wait_until(lock, deadline, [&] { return held_ + count <= capacity_; }))
      throw Error(KODO_ERR_TIMEOUT,
                  "publish: no room for a batch of " + std::to_string(count) + " events within " +
                      std::to_string(timeout_ms) + " ms: " + std::to_string(held_) +
                      " of capacity " + std::to_string(capacity_) +
                      " are queued or unacked; nothing was taken",
                  true);
    if (groups_.empty()) groups_.push_back(std::make_unique<Group>());
    held_ += count;
    Block *b = block.release();
    b->live = count;
    b->groups_left.assign(count, static_cast<uint32_t>(groups_.size()));
    for (auto &group : groups_) enqueue(*group, *b);
    lock.unlock();
    data_.notify_all();
  }

  Consumer *open_consumer(const char *group, const char *name) {
    if (!group || !*group) invalid("consumer_open: the group name is empty");
    if (!name || !*name) invalid("consumer_open: the consumer name is empty");
    std::lock_guard<std::mutex> lock(mutex_);
    Group *g = nullptr;
    for (auto &candidate : groups_)
      if (candidate->name == group) g = candidate.get();
    if (!g) {
      // The first group adopts what was published before any group existed.
      if (groups_.size() == 1 && groups_[0]->name.empty()) {
        g = groups_[0].get();
      } else {
        groups_.push_back(std::make_unique<Group>());
        g = groups_.back().get();
      }
      g->name = group;
    }
    for (const Consumer *c : g->consumers)
      if (c->name == name)
        invalid("consumer_open: consumer '" + std::string(name) + "' of group '" + group +
                "' is already open");
    std::unique_ptr<Consumer> consumer(new Consumer{*this, *g, name, ++last_consumer_id_, {}, 1});
    g->consumers.push_back(consumer.get());
    return consumer.release();
  }

  // Pending deliveries stay, owned by an id nobody has any more, until they turn idle.
  void close_consumer(Consumer *c) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto &list = c->group.consumers;
      list.erase(std::remove(list.begin(), list.end(), c), list.end());
    }
    delete c;
  }

  // A fid's state is dropped as soon as its last event is acked (see the top of the file),
  // so there is nothing left to clean up once its final event is stored.
  void finish_execution(const char *fid) {
    if (!fid || !valid_id(fid))
      invalid(std::string("finish_execution: invalid fid '") + (fid ? fid : "(null)") + "'");
  }

  std::vector<kodo::sdk::Metric> metrics() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {{"held_events", "Events queued or delivered and not yet acknowledged.", "",
             KODO_METRIC_GAUGE, static_cast<double>(held_)},
            {"capacity_events", "Events the transport holds at most (option capacity).", "",
             KODO_METRIC_GAUGE, static_cast<double>(capacity_)}};
  }

  void read(Consumer &c, size_t max, int32_t block_ms, kodo_delivery_batch *out) {
    if (block_ms < 0) invalid("read: block_ms must be >= 0, got " + std::to_string(block_ms));
    auto batch = std::make_unique<DeliveryBatch>();
    std::vector<const kodo_event *> events;
    std::vector<std::string> notes;
    if (max > 0) {
      const auto deadline = Clock::now() + std::chrono::milliseconds(block_ms);
      std::unique_lock<std::mutex> lock(mutex_);
      for (;;) {
        const auto now = Clock::now();
        take(c, max, now, batch->deliveries, events, notes);
        if (!events.empty() || now >= deadline) break;
        // Wake for new events, a fid its owner released, or pending deliveries turning idle.
        data_.wait_until(lock, std::min(deadline, c.group.next_claim_check));
      }
      // Copied under the lock: once it is released, a reclaim and an ack elsewhere could
      // free the blocks these events live in.
      batch->packed.pack(events.data(), events.size());
    }
    for (size_t i = 0; i < batch->deliveries.size(); ++i)
      batch->deliveries[i].event = &batch->packed.events[i];
    for (const kodo_delivery &d : batch->deliveries) batch->pointers.push_back(&d);
    out->deliveries = batch->pointers.data();
    out->count = batch->pointers.size();
    out->release = &DeliveryBatch::release;
    out->private_data = batch.release();
    if (!notes.empty()) data_.notify_all();  // reclaimed fids this read left for others
    for (const std::string &note : notes) log_(KODO_LOG_INFO, note);
  }

  void ack(Consumer &c, const uint64_t *ids, size_t count) {
    if (count == 0) return;
    if (!ids) invalid("ack: delivery_ids is NULL with count " + std::to_string(count));
    size_t freed = 0;
    bool released = false;  // a fid with queued events became free for any consumer
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto now = Clock::now();
      for (size_t i = 0; i < count; ++i) {
        Consumer::Slot *s = c.slot(ids[i]);
        if (!s) continue;  // unknown, repeated, or redelivered elsewhere meanwhile
        FidState &fs = *s->fid;
        s->fid = nullptr;
        Entry &e = fs.pending[s->pending_index - fs.pending_base];
        e.acked = true;
        freed += settle(e);
        fs.last_activity = now;
        while (!fs.pending.empty() && fs.pending.front().acked) {
          fs.pending.pop_front();
          ++fs.pending_base;
        }
        if (fs.pending.empty()) {
          fs.owner = 0;
          if (!fs.queued.empty())
            released = true;
          else
            forget_if_empty(c.group, fs);
        }
      }
      c.trim_slots();
    }
    if (freed > 0) space_.notify_all();
    if (released) data_.notify_all();
  }

 private:
  void enqueue(Group &g, Block &b) {
    FidState *fs = nullptr;  // batches usually hold runs of one fid: look each run up once
    for (uint32_t i = 0; i < b.packed.events.size(); ++i) {
      const std::string_view fid(b.packed.events[i].fid);
      if (!fs || fs->fid != fid) fs = &fid_state(g, fid);
      fs->queued.push_back(Entry{&b, i, 0, 0, false});
      if (!fs->in_ready) {
        g.ready.push_back(fs);
        fs->in_ready = true;
      }
    }
  }

  FidState &fid_state(Group &g, std::string_view fid) {
    auto it = g.fids.find(fid);
    if (it != g.fids.end()) return *it->second;
    auto fs = std::make_unique<FidState>();
    fs->fid.assign(fid);
    FidState &ref = *fs;
    g.fids.emplace(std::string_view(ref.fid), std::move(fs));
    return ref;
  }

  void forget_if_empty(Group &g, FidState &fs) {
    if (fs.queued.empty() && fs.pending.empty() && !fs.in_ready) g.fids.erase(fs.fid);
  }

  // One group is done with an entry's event; returns 1 when that frees a unit of capacity.
  size_t settle(const Entry &e) {
    Block &b = *e.block;
    if (--b.groups_left[e.index] > 0) return 0;
    --held_;
    if (--b.live == 0) delete &b;
    return 1;
  }

  // Picks up to `max` deliveries for consumer c: first of fids whose pending deliveries turned
  // idle, then of the ready fids in turn, skipping those another consumer owns.
  void take(Consumer &c, size_t max, Clock::time_point now, std::vector<kodo_delivery> &out,
            std::vector<const kodo_event *> &events, std::vector<std::string> &notes) {
    Group &g = c.group;
    if (now >= g.next_claim_check)
      for (FidState *fs : reclaim_idle(g, now, notes))
        if (events.size() < max) deliver_run(c, *fs, max, now, out, events);
    for (size_t n = g.ready.size(); n > 0 && events.size() < max; --n) {
      FidState *fs = g.ready.front();
      g.ready.pop_front();
      if (fs->queued.empty()) {
        fs->in_ready = false;
        forget_if_empty(g, *fs);
        continue;
      }
      if (fs->owner != 0 && fs->owner != c.id) {
        g.ready.push_back(fs);
        continue;
      }
      deliver_run(c, *fs, max, now, out, events);
      if (fs->queued.empty())
        fs->in_ready = false;
      else
        g.ready.push_back(fs);
    }
  }

  // Delivers queued entries of one fid to c until `max` are picked; c then owns the fid.
  void deliver_run(Consumer &c, FidState &fs, size_t max, Clock::time_point now,
                   std::vector<kodo_delivery> &out, std::vector<const kodo_event *> &events) {
    if (fs.queued.empty() || events.size() >= max) return;
    while (!fs.queued.empty() && events.size() < max) {
      Entry e = fs.queued.front();
      fs.queued.pop_front();
      ++e.deliveries;
      e.delivery_id = c.next_id();
      c.slots.push_back({&fs, fs.pending_base + fs.pending.size()});
      fs.pending.push_back(e);
      out.push_back(kodo_delivery{sizeof(kodo_delivery), e.delivery_id, e.deliveries, nullptr});
      events.push_back(&e.block->packed.events[e.index]);
    }
    fs.owner = c.id;
    fs.last_activity = now;
    c.group.next_claim_check = std::min(c.group.next_claim_check, now + claim_idle_);
  }

  // Puts the unacked pending entries of every idle fid back at the front of its queue, free
  // for the next reader, and returns those fids.
  std::vector<FidState *> reclaim_idle(Group &g, Clock::time_point now,
                                       std::vector<std::string> &notes) {
    std::vector<FidState *> reclaimed;
    auto next = Clock::time_point::max();
    for (auto &item : g.fids) {
      FidState &fs = *item.second;
      if (fs.pending.empty()) continue;
      const auto due = fs.last_activity + claim_idle_;
      if (due > now) {
        next = std::min(next, due);
        continue;
      }
      Consumer *holder = nullptr;
      for (Consumer *c : g.consumers)
        if (c->id == fs.owner) holder = c;
      size_t moved = 0;
      for (auto it = fs.pending.rbegin(); it != fs.pending.rend(); ++it) {
        if (it->acked) continue;
        if (holder) holder->slot(it->delivery_id)->fid = nullptr;  // its ack would be stale
        fs.queued.push_front(*it);
        ++moved;
      }
      if (holder) holder->trim_slots();
      fs.pending_base += fs.pending.size();
      fs.pending.clear();
      fs.owner = 0;
      if (!fs.in_ready) {
        g.ready.push_front(&fs);
        fs.in_ready = true;
      }
      reclaimed.push_back(&fs);
      const auto idle =
          std::chrono::duration_cast<std::chrono::milliseconds>(now - fs.last_activity);
      notes.push_back("group '" + g.name + "': redelivering " + std::to_string(moved) +
                      " unacked events of execution " + fs.fid + ", idle for " +
                      std::to_string(idle.count()) + " ms, held by " +
                      (holder ? "consumer '" + holder->name + "'" : "a closed consumer"));
    }
    g.next_claim_check = next;
    return reclaimed;
  }

  kodo::sdk::HostLog log_;
  const size_t capacity_;
  const std::chrono::milliseconds claim_idle_;

  std::mutex mutex_;
  std::condition_variable space_;  // capacity was freed
  std::condition_variable data_;   // events were queued, or a fid was freed
  size_t held_ = 0;                // events queued or unacked in some group
  std::vector<std::unique_ptr<Group>> groups_;
  uint64_t last_consumer_id_ = 0;
};

// The C table. Written out rather than made by KODO_TRANSPORT_PLUGIN because the helper's
// read copies each event into four std::strings (about 40% of the time of publish -> read ->
// ack in a profile); this read packs a whole batch into a few allocations.
using kodo::sdk::guard;

InprocTransport *self(kodo_transport *t) {
  return reinterpret_cast<InprocTransport *>(t);
}
Consumer *self(kodo_consumer *c) {
  return reinterpret_cast<Consumer *>(c);
}

kodo_status transport_open(const kodo_option *const *options, size_t count,
                           const kodo_host_api *host, kodo_transport **out, kodo_error *error) {
  return guard(error, [&] {
    *out = reinterpret_cast<kodo_transport *>(
        new InprocTransport(kodo::sdk::Options(options, count), host));
  });
}

void transport_close(kodo_transport *t) {
  delete self(t);
}

kodo_status transport_publish(kodo_transport *t, const kodo_event *const *events, size_t count,
                              int32_t timeout_ms, kodo_error *error) {
  return guard(error, [&] { self(t)->publish(events, count, timeout_ms); });
}

kodo_status transport_consumer_open(kodo_transport *t, const char *group, const char *name,
                                    kodo_consumer **out, kodo_error *error) {
  return guard(error, [&] {
    *out = reinterpret_cast<kodo_consumer *>(self(t)->open_consumer(group, name));
  });
}

void transport_consumer_close(kodo_consumer *c) {
  try {
    self(c)->transport.close_consumer(self(c));
  } catch (...) {  // nothing may cross the boundary; the mutex cannot fail in practice
  }
}

kodo_status transport_read(kodo_consumer *c, size_t max, int32_t block_ms, kodo_delivery_batch *out,
                           kodo_error *error) {
  return guard(error, [&] { self(c)->transport.read(*self(c), max, block_ms, out); });
}

kodo_status transport_ack(kodo_consumer *c, const uint64_t *ids, size_t count, kodo_error *error) {
  return guard(error, [&] { self(c)->transport.ack(*self(c), ids, count); });
}

kodo_status transport_finish_execution(kodo_transport *t, const char *fid, kodo_error *error) {
  return guard(error, [&] { self(t)->finish_execution(fid); });
}

kodo_status transport_metrics(kodo_transport *t, kodo_metric_page *out, kodo_error *error) {
  return guard(error, [&] { kodo::sdk::finish_metric_page(self(t)->metrics(), out); });
}

// Filled by name from a zeroed table, so a function appended to the ABI starts as NULL
// ("not supported") without touching this code.
const kodo_transport_api kTable = []() noexcept {
  kodo_transport_api t{};
  t.struct_size = sizeof t;
  t.open = transport_open;
  t.close = transport_close;
  t.publish = transport_publish;
  t.consumer_open = transport_consumer_open;
  t.consumer_close = transport_consumer_close;
  t.read = transport_read;
  t.ack = transport_ack;
  t.finish_execution = transport_finish_execution;
  t.metrics = transport_metrics;
  return t;
}();

}  // namespace

KODO_PLUGIN_ENTRY(KODO_KIND_TRANSPORT, nullptr, &kTable, "inproc", "0.1.0",
                  "in-process queue between the executor and the spoolers of one kodo-host",
                  KODO_TRANSPORT_CAP_GROUPS | KODO_TRANSPORT_CAP_REDELIVERY |
                      KODO_TRANSPORT_CAP_FINISH,
                  kOptions, sizeof kOptions / sizeof kOptions[0])
