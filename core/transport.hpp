// transport.hpp: an open transport backend, as the host uses it.
#pragma once

#include "core/metrics.hpp"

#include <kodo/host/plugin_loader.hpp>
#include <kodo/host/plugin_options.hpp>
#include "core/event.hpp"
#include "core/interrupter.hpp"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace kodo {

// Deliveries as the plugin returned them (no copy); released on destruction.
class DeliveryBatch {
 public:
  DeliveryBatch() { raw_.struct_size = sizeof raw_; }
  ~DeliveryBatch() { reset(); }
  DeliveryBatch(const DeliveryBatch &) = delete;
  DeliveryBatch &operator=(const DeliveryBatch &) = delete;
  DeliveryBatch(DeliveryBatch &&other) noexcept : raw_(other.raw_) { other.forget(); }
  // Releases what this batch held, then takes over other's deliveries.
  DeliveryBatch &operator=(DeliveryBatch &&other) noexcept {
    if (this != &other) {
      reset();
      raw_ = other.raw_;
      other.forget();
    }
    return *this;
  }

  size_t size() const { return raw_.count; }
  bool empty() const { return raw_.count == 0; }
  const kodo_delivery &operator[](size_t i) const { return *raw_.deliveries[i]; }
  void reset() {
    if (raw_.release) raw_.release(&raw_);
    forget();
  }
  kodo_delivery_batch *raw() { return &raw_; }

 private:
  // Empties this batch without releasing: its deliveries now belong to another.
  void forget() {
    raw_ = kodo_delivery_batch{};
    raw_.struct_size = sizeof raw_;
  }

  kodo_delivery_batch raw_{};
};

class Transport;

// One named consumer of a group. Used by one thread at a time.
class Consumer {
 public:
  ~Consumer();
  Consumer(const Consumer &) = delete;
  Consumer &operator=(const Consumer &) = delete;

  // Replaces `batch` with up to `max` deliveries, waiting up to block_ms for the first.
  void read(size_t max, int32_t block_ms, DeliveryBatch &batch);
  void ack(const uint64_t *ids, size_t count);
  const std::string &name() const { return name_; }

 private:
  friend class Transport;
  Consumer(std::shared_ptr<Plugin> plugin, kodo_consumer *handle, std::string name,
           Interrupter &interrupter, double grace_s)
      : plugin_(std::move(plugin)),
        handle_(handle),
        name_(std::move(name)),
        interrupter_(interrupter),
        grace_s_(grace_s) {}
  std::shared_ptr<Plugin> plugin_;
  kodo_consumer *handle_;
  std::string name_;
  Interrupter &interrupter_;  // the transport's, which outlives its consumers
  double grace_s_;
};

// Threading: publish and finish_execution from any thread; see kodo_transport_api.
class Transport {
 public:
  Transport(std::shared_ptr<Plugin> plugin, const OptionList &options);
  ~Transport();
  Transport(const Transport &) = delete;
  Transport &operator=(const Transport &) = delete;

  const Plugin &plugin() const { return *plugin_; }
  // What this handle can do: the plugin's declared capabilities, narrowed by the handle's
  // own answer when the plugin reports one (kodo_transport_api.capabilities).
  uint64_t capabilities() const { return capabilities_; }
  bool has(uint64_t capability) const { return (capabilities_ & capability) != 0; }

  void publish(const kodo_event *const *events, size_t count, int32_t timeout_ms);
  void publish(const std::vector<Event> &events, int32_t timeout_ms);
  std::unique_ptr<Consumer> open_consumer(const std::string &group, const std::string &name);
  // Deadlines: a publish, read or ack still running `grace_s` after its own timeout (or
  // block time) is interrupted, when the plugin offers interrupt. Set before opening
  // consumers.
  void set_call_grace(double grace_s) { grace_s_ = grace_s; }
  // Interrupts every call now running on the transport and its consumers (shutdown).
  void interrupt();
  bool can_interrupt() const { return interrupter_->can_interrupt(); }
  // Does nothing when the plugin does not claim KODO_TRANSPORT_CAP_FINISH.
  void finish_execution(const std::string &fid);
  // The plugin's own figures for /metrics (none when it reports none).
  std::vector<PluginMetric> metrics() const;
  // False when the plugin reports an `up` figure of 0 (its server is away): /health is then
  // degraded, in serve as in spool. A plugin without that figure is up.
  bool up() const;

 private:
  std::shared_ptr<Plugin> plugin_;
  const kodo_transport_api &api_;
  kodo_transport *handle_ = nullptr;
  uint64_t capabilities_ = 0;
  double grace_s_ = 30;
  // Stopped before close: interrupt never runs concurrently with it.
  std::unique_ptr<Interrupter> interrupter_;
};

// Publishes what executors make into a transport, waiting up to timeout_ms when it is full.
class TransportSink : public EventSink {
 public:
  // `published` (may be null) counts the events the transport took.
  TransportSink(Transport &transport, int32_t timeout_ms,
                std::atomic<uint64_t> *published = nullptr)
      : transport_(transport), timeout_ms_(timeout_ms), published_(published) {}
  void publish(const std::vector<Event> &events) override {
    transport_.publish(events, timeout_ms_);
    if (published_) published_->fetch_add(events.size(), std::memory_order_relaxed);
  }

 private:
  Transport &transport_;
  int32_t timeout_ms_;
  std::atomic<uint64_t> *published_;
};

}  // namespace kodo
