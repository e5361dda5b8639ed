// redis_settings.hpp: the Redis transport's options and the settings read from them (key
// names included), shared by the producer, the consumers and the transport handle.
#pragma once

#include "redis_connection.hpp"

#include <kodo/plugin.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace kodo::redis {

using kodo::sdk::int_option;
using kodo::sdk::Metric;
using std::chrono::milliseconds;

[[noreturn]] inline void invalid(const std::string &message) {
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

}  // namespace kodo::redis
