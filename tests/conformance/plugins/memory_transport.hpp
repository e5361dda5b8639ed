// memory_transport.hpp: a small, correct in-memory transport, written with the SDK's C++
// helper: bounded (option capacity), with redelivery after claim_idle_ms, and consumers that
// share the work while one execution is held by one consumer at a time. Every consumer
// shares one queue, whatever its group: enough for the kit, which uses one group per
// transport. good_memory_transport.cpp registers it as it is; contract-breaking plugins
// override one step.
#pragma once

#include <kodo/plugin.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace kodo_test {

using kodo::sdk::OwnedEvent;

class MemoryTransport : public kodo::sdk::TransportBase {
 public:
  MemoryTransport(const kodo::sdk::Options &options, const kodo_host_api *)
      : capacity_(static_cast<size_t>(options.get_int("capacity", 10000))),
        claim_idle_(options.get_int("claim_idle_ms", 30000)) {}

  void publish(const kodo_event *const *events, size_t count, int32_t timeout_ms) override {
    std::unique_lock<std::mutex> lock(mutex_);
    // A batch larger than the capacity is taken once the transport is empty, so it never
    // waits forever.
    const bool room = changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                        [&] { return held_ + count <= capacity_ || held_ == 0; });
    if (!room) when_full(events, count);
    take(events, count);
  }

  std::unique_ptr<kodo::sdk::ConsumerBase> open_consumer(const std::string &,
                                                         const std::string &) override {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::make_unique<Consumer>(*this, ++last_consumer_);
  }

  void finish_execution(const char *fid) override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = streams_.find(fid);
    if (it != streams_.end() && it->second.waiting.empty() && it->second.unacked.empty())
      streams_.erase(it);
  }

 protected:
  // One execution's events: those not yet delivered, and those its holder has not acked.
  struct Stream {
    std::deque<OwnedEvent> waiting;
    std::vector<uint64_t> unacked;  // in seq order
    int holder = 0;                 // 0: nobody
    std::chrono::steady_clock::time_point delivered_at;
  };

  // Called, with the lock held, when a batch found no room within its timeout.
  virtual void when_full(const kodo_event *const *, size_t) {
    throw kodo::sdk::Error(KODO_ERR_TIMEOUT,
                           "transport is full (capacity " + std::to_string(capacity_) + ")", true);
  }
  // Whether `consumer` may be given more events of a stream held by `holder`.
  virtual bool may_hand_out(int holder, int consumer) const {
    return holder == 0 || holder == consumer;
  }

  void take(const kodo_event *const *events, size_t count) {
    for (size_t i = 0; i < count; ++i)
      streams_[events[i]->fid].waiting.push_back(OwnedEvent::copy(*events[i]));
    held_ += count;
    changed_.notify_all();
  }

  size_t room() const { return held_ < capacity_ ? capacity_ - held_ : 0; }

 private:
  class Consumer : public kodo::sdk::ConsumerBase {
   public:
    Consumer(MemoryTransport &transport, int id) : transport_(transport), id_(id) {}
    void read(size_t max, int32_t block_ms, kodo::sdk::DeliveryBatchBuilder &out) override {
      transport_.read(id_, max, block_ms, out);
    }
    void ack(const uint64_t *ids, size_t count) override { transport_.ack(ids, count); }

   private:
    MemoryTransport &transport_;
    int id_;
  };

  struct Pending {
    std::string fid;
    OwnedEvent event;
    uint32_t count;
  };

  void read(int consumer, size_t max, int32_t block_ms, kodo::sdk::DeliveryBatchBuilder &out) {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(block_ms);
    for (;;) {
      claim_idle(consumer, max, out);
      hand_out(consumer, max, out);
      const auto now = std::chrono::steady_clock::now();
      if (out.size() > 0 || now >= deadline) return;
      // Woken by a publish or an ack; also when a held stream may have become idle.
      changed_.wait_until(lock, std::min(deadline, now + claim_idle_));
    }
  }

  // Moves the unacked deliveries of streams idle too long to `consumer`, whole streams only,
  // so one execution stays with one consumer.
  void claim_idle(int consumer, size_t max, kodo::sdk::DeliveryBatchBuilder &out) {
    const auto now = std::chrono::steady_clock::now();
    for (auto &[fid, stream] : streams_) {
      if (stream.holder == 0 || stream.holder == consumer || stream.unacked.empty() ||
          now - stream.delivered_at < claim_idle_ || out.size() + stream.unacked.size() > max)
        continue;
      stream.holder = consumer;
      stream.delivered_at = now;
      for (uint64_t id : stream.unacked) {
        Pending &p = pending_.at(id);
        out.add(id, ++p.count, p.event);
      }
    }
  }

  void hand_out(int consumer, size_t max, kodo::sdk::DeliveryBatchBuilder &out) {
    for (auto &[fid, stream] : streams_) {
      if (stream.waiting.empty() || !may_hand_out(stream.holder, consumer)) continue;
      while (!stream.waiting.empty() && out.size() < max) {
        const uint64_t id = ++last_delivery_;
        Pending &p = pending_[id] = Pending{fid, std::move(stream.waiting.front()), 1};
        stream.waiting.pop_front();
        stream.unacked.push_back(id);
        stream.holder = consumer;
        stream.delivered_at = std::chrono::steady_clock::now();
        out.add(id, 1, p.event);
      }
      if (out.size() == max) return;
    }
  }

  void ack(const uint64_t *ids, size_t count) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < count; ++i) {
      auto it = pending_.find(ids[i]);
      if (it == pending_.end()) continue;  // unknown or already acked
      Stream &stream = streams_[it->second.fid];
      stream.unacked.erase(std::find(stream.unacked.begin(), stream.unacked.end(), ids[i]));
      if (stream.unacked.empty()) stream.holder = 0;
      pending_.erase(it);
      --held_;
    }
    changed_.notify_all();
  }

  const size_t capacity_;
  const std::chrono::milliseconds claim_idle_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, Stream> streams_;
  std::map<uint64_t, Pending> pending_;
  size_t held_ = 0;  // published and not yet acked
  int last_consumer_ = 0;
  uint64_t last_delivery_ = 0;
};

// What the memory transports declare: their options and capabilities. Spelled as the C
// struct, because this file also builds against the frozen version-1 plugin.hpp, whose
// sdk::option() takes its arguments in another order.
inline constexpr kodo_option_spec kCapacityOption = {sizeof(kodo_option_spec),
                                                     "capacity",
                                                     KODO_OPTION_INT,
                                                     0,
                                                     "10000",
                                                     nullptr,
                                                     "events held (published, not acked) at most"};
inline constexpr kodo_option_spec kClaimIdleOption = {
    sizeof(kodo_option_spec),
    "claim_idle_ms",
    KODO_OPTION_INT,
    0,
    "30000",
    nullptr,
    "an unacked delivery idle this long goes to another consumer"};
inline const kodo_option_spec *const kMemoryTransportOptions[] = {&kCapacityOption,
                                                                  &kClaimIdleOption};
inline constexpr uint64_t kMemoryTransportCapabilities =
    KODO_TRANSPORT_CAP_GROUPS | KODO_TRANSPORT_CAP_REDELIVERY | KODO_TRANSPORT_CAP_FINISH;

}  // namespace kodo_test
