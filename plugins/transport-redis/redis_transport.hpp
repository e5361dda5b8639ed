// redis_transport.hpp: the Redis transport's handle, which owns the producer, tracks its open
// consumers and queues finished executions for them to record (see redis_transport.cpp).
#pragma once

#include "redis_consumer.hpp"
#include "redis_producer.hpp"
#include "redis_settings.hpp"

#include <kodo/plugin.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kodo::redis {

class RedisTransport : public kodo::sdk::TransportBase {
 public:
  RedisTransport(const RedisTransport &) = delete;
  RedisTransport &operator=(const RedisTransport &) = delete;
  RedisTransport(const kodo::sdk::Options &options, const kodo_host_api *host);
  ~RedisTransport() override;

  void publish(const kodo_event *const *events, size_t count, int32_t timeout_ms) override;
  std::unique_ptr<kodo::sdk::ConsumerBase> open_consumer(const std::string &group,
                                                         const std::string &name) override;
  // Recorded in Redis by the next upkeep of a consumer of this handle (or right away when it
  // has none), so a moment without Redis does not lose it.
  void finish_execution(const char *fid) override;
  std::vector<Metric> metrics() override;

  const Settings &settings() const { return settings_; }
  kodo::sdk::HostLog log() const { return log_; }

  void forget(RedisConsumer *c);
  std::vector<std::string> take_finishes();
  void return_finishes(const std::vector<std::string> &fids);

 private:
  bool try_send_finishes(const std::vector<std::string> &fids);

  Settings settings_;
  kodo::sdk::HostLog log_;
  Producer producer_;
  std::mutex mutex_;
  std::vector<RedisConsumer *> consumers_;
  std::vector<std::string> finishes_;
};

}  // namespace kodo::redis
