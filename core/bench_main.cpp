// kodo-bench: drives N concurrent executions of M events each through the configured
// transport and spooler(s) into the configured storage, then reads every execution back
// and checks that each (fid, seq) arrived exactly once. Prints figures; asserts no timing.
#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>
#include "core/host_options.hpp"
#include "core/ids.hpp"
#include "core/spooler.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

namespace kodo {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchConfig {
  size_t executions = 100;
  size_t events = 10000;
  size_t payload_bytes = 100;
  double rate = 0;  // events/s offered in total; 0: as fast as it goes
  size_t producers = 2;
  size_t publish_batch = 64;
  double settle_timeout_s = 120;  // how long to wait for the last events to be stored
};

// Collects when each event was stored, relative to its emit timestamp.
class LatencyRecorder : public StoredObserver {
 public:
  explicit LatencyRecorder(size_t expected) { samples_.reserve(expected); }
  void on_stored(const kodo_event *const *events, size_t count, double stored_at) override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < count; ++i) samples_.push_back(stored_at - events[i]->timestamp);
    stored_ += count;
    last_stored_ = Clock::now();
  }
  size_t stored() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stored_;
  }
  Clock::time_point last_stored() {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_stored_;
  }
  double percentile_ms(double p) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (samples_.empty()) return 0;
    size_t k = std::min(
        samples_.size() - 1,
        static_cast<size_t>(std::ceil(p * static_cast<double>(samples_.size()))) - (p > 0 ? 1 : 0));
    std::nth_element(samples_.begin(), samples_.begin() + static_cast<std::ptrdiff_t>(k),
                     samples_.end());
    return samples_[k] * 1000;
  }

 private:
  std::mutex mutex_;
  std::vector<double> samples_;
  size_t stored_ = 0;
  Clock::time_point last_stored_ = Clock::now();
};

std::string make_payload(size_t bytes, size_t i) {
  std::string head = "{\"i\":" + std::to_string(i) + ",\"pad\":\"";
  std::string payload = head;
  if (bytes > head.size() + 2) payload.append(bytes - head.size() - 2, 'x');
  payload += "\"}";
  return payload;
}

// One producer publishes the events of its executions, a batch of one execution at a
// time, round-robin, at its share of the offered rate.
void produce(Transport &transport, const std::vector<std::string> &fids, const BenchConfig &bench,
             double rate_share, int32_t publish_timeout_ms, std::atomic<size_t> &published,
             std::atomic<bool> &failed) {
  std::vector<size_t> next(fids.size(), 0);
  std::vector<Event> batch;
  const auto start = Clock::now();
  size_t sent = 0;
  bool more = true;
  while (more && !failed) {
    more = false;
    for (size_t x = 0; x < fids.size(); ++x) {
      if (next[x] >= bench.events) continue;
      batch.clear();
      while (batch.size() < bench.publish_batch && next[x] < bench.events) {
        Event e;
        e.fid = fids[x];
        e.username = "bench";
        e.seq = static_cast<int64_t>(next[x]);
        e.timestamp = now_seconds();
        const bool last = next[x] + 1 == bench.events;
        e.kind = last ? "status" : "agent";
        e.payload = last ? "finished" : make_payload(bench.payload_bytes, next[x]);
        batch.push_back(std::move(e));
        ++next[x];
      }
      more = more || next[x] < bench.events;
      try {
        transport.publish(batch, publish_timeout_ms);
      } catch (const Error &e) {
        log_error(std::string("kodo-bench: publish failed: ") + e.what());
        failed = true;
        return;
      }
      sent += batch.size();
      published += batch.size();
      if (rate_share > 0) {
        auto due =
            start + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(static_cast<double>(sent) / rate_share));
        std::this_thread::sleep_until(due);
      }
    }
  }
}

int run(int argc, char **argv) {
  BenchConfig bench;
  po::options_description bench_options("Benchmark");
  bench_options.add_options()("executions", po::value<size_t>()->default_value(100),
                              "concurrent executions")(
      "events", po::value<size_t>()->default_value(10000), "events per execution")(
      "payload-bytes", po::value<size_t>()->default_value(100), "bytes of each event's payload")(
      "rate", po::value<double>()->default_value(0),
      "events/s offered in total (0: as fast as possible)")(
      "producers", po::value<size_t>()->default_value(2), "producer threads")(
      "publish-batch", po::value<size_t>()->default_value(64), "events per publish call")(
      "keep-data", po::bool_switch(), "keep the benchmark's data (default: a temp dir, removed)");
  HostConfig config;
  ParsedCommandLine parsed = parse_command_line(argc, argv, bench_options, config);
  set_log_level(parse_log_level(config.log_level));
  if (parsed.values.count("help")) {
    std::cout << "usage: kodo-bench [options]\n" << host_option_descriptions() << bench_options;
    return 0;
  }
  bench.executions = std::max<size_t>(1, parsed.values["executions"].as<size_t>());
  bench.events = std::max<size_t>(1, parsed.values["events"].as<size_t>());
  bench.payload_bytes = parsed.values["payload-bytes"].as<size_t>();
  bench.rate = parsed.values["rate"].as<double>();
  bench.producers =
      std::clamp<size_t>(parsed.values["producers"].as<size_t>(), 1, bench.executions);
  bench.publish_batch = std::max<size_t>(1, parsed.values["publish-batch"].as<size_t>());

  namespace fs = std::filesystem;
  std::string temp_dir;
  if (parsed.values["exec-dir"].defaulted() && !parsed.values["keep-data"].as<bool>()) {
    char pattern[] = "/tmp/kodo-bench-XXXXXX";
    if (!mkdtemp(pattern)) throw Error(KODO_ERR_IO, "cannot make a temporary directory");
    temp_dir = pattern;
    config.storage_options.host_defaults = {{"exec_dir", temp_dir}};
  }

  auto storage_plugin = Plugin::load(config.storage, config.plugin_dir, KODO_KIND_STORAGE);
  Storage storage(storage_plugin, resolve_plugin_options(*storage_plugin, config.storage_options));
  storage.create_schema();
  auto transport_plugin = Plugin::load(config.transport, config.plugin_dir, KODO_KIND_TRANSPORT);
  Transport transport(transport_plugin,
                      resolve_plugin_options(*transport_plugin, config.transport_options));

  const size_t total = bench.executions * bench.events;
  (void)std::printf(
      "kodo-bench: %s -> %s, %zu executions x %zu events of %zu bytes, %zu spooler(s), "
      "%zu producer(s), rate %s, batch %zu/%.3fs\n",
      transport_plugin->name().c_str(), storage_plugin->name().c_str(), bench.executions,
      bench.events, bench.payload_bytes, config.spooler.consumers, bench.producers,
      bench.rate > 0 ? (std::to_string(static_cast<long long>(bench.rate)) + "/s").c_str()
                     : "unlimited",
      config.spooler.batch_size, config.spooler.batch_timeout_s);
  (void)std::fflush(stdout);  // progress lines; a lost one does not matter

  Metrics metrics;
  LatencyRecorder latency(total);
  Spooler spooler(config.spooler, transport, storage, metrics, {&latency});
  spooler.start();

  std::vector<std::string> fids;
  for (size_t i = 0; i < bench.executions; ++i) fids.push_back(new_fid());
  std::atomic<size_t> published{0};
  std::atomic<bool> failed{false};
  const auto start = Clock::now();
  std::vector<std::thread> producers;
  for (size_t p = 0; p < bench.producers; ++p) {
    std::vector<std::string> mine;
    for (size_t i = p; i < fids.size(); i += bench.producers) mine.push_back(fids[i]);
    producers.emplace_back([&, mine] {
      produce(transport, mine, bench, bench.rate / static_cast<double>(bench.producers),
              config.publish_timeout_ms, published, failed);
    });
  }
  // Progress once a second while events flow; give up only when nothing moved for long.
  auto last_report = Clock::now();
  while (latency.stored() < total && !failed) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (Clock::now() - last_report > std::chrono::seconds(1)) {
      last_report = Clock::now();
      (void)std::printf("  ... published %zu, stored %zu\n", published.load(), latency.stored());
      (void)std::fflush(stdout);  // progress lines; a lost one does not matter
    }
    if (published.load() == total && Clock::now() - latency.last_stored() >
                                         std::chrono::duration<double>(bench.settle_timeout_s))
      break;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto &t : producers) t.join();
  spooler.stop_and_drain();

  // Read everything back: every (fid, seq) must be there exactly once.
  size_t lost = 0, duplicated = 0;
  for (const auto &fid : fids) {
    std::vector<uint32_t> seen(bench.events, 0);
    EventQuery query;
    query.fid = fid;
    query.limit = 10000;
    for (;;) {
      bool has_more = false;
      std::vector<Event> events;
      try {
        events = storage.read_events(query, &has_more);
      } catch (const Error &e) {
        if (e.code() != KODO_ERR_NOT_FOUND) throw;
      }
      for (const auto &e : events)
        if (e.seq >= 0 && static_cast<size_t>(e.seq) < bench.events)
          ++seen[static_cast<size_t>(e.seq)];
      if (!has_more || events.empty()) break;
      query.after_seq = events.back().seq;
    }
    for (uint32_t count : seen) {
      if (count == 0) ++lost;
      if (count > 1) duplicated += count - 1;
    }
  }
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  const double peak_rss_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;
  const size_t stored = latency.stored();
  (void)std::printf(
      "  stored %zu of %zu events in %.3f s, %llu batches (mean %.0f events), "
      "%llu redeliveries, %llu store retries\n",
      stored, total, elapsed, static_cast<unsigned long long>(metrics.batches_stored.load()),
      metrics.batches_stored.load()
          ? static_cast<double>(stored) / static_cast<double>(metrics.batches_stored.load())
          : 0.0,
      static_cast<unsigned long long>(metrics.redeliveries.load()),
      static_cast<unsigned long long>(metrics.store_failures.load()));
  (void)std::printf(
      "kodo-bench: events_per_s=%.0f p50_ms=%.2f p99_ms=%.2f peak_rss_mb=%.1f lost=%zu "
      "duplicated=%zu\n",
      static_cast<double>(stored) / elapsed, latency.percentile_ms(0.50),
      latency.percentile_ms(0.99), peak_rss_mb, lost, duplicated);
  if (!temp_dir.empty()) {
    std::error_code ec;
    fs::remove_all(temp_dir, ec);
  }
  return (lost == 0 && duplicated == 0 && !failed) ? 0 : 1;
}

}  // namespace
}  // namespace kodo

int main(int argc, char **argv) {
  try {
    return kodo::run(argc, argv);
  } catch (const std::exception &e) {
    (void)std::fprintf(stderr, "kodo-bench: %s\n", e.what());
    return 2;
  }
}
