// metrics.hpp: the host's counters and histograms, rendered as Prometheus text.
// Lock-free on the hot path: every update is a relaxed atomic add.
#pragma once

#include <kodo/kodo_plugin.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace kodo {

// A histogram with fixed upper bounds (the last bucket is +Inf).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value, uint64_t count = 1);
  void render(std::string &out, const std::string &name, const std::string &help) const;

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> buckets_;
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_micro_{0};  // sum in millionths, to stay an integer atomic
};

// A figure a plugin reported (kodo_metric), copied out of its page.
struct PluginMetric {
  std::string name, help, labels;
  int32_t type = KODO_METRIC_GAUGE;
  double value = 0;
};

// Calls a plugin's optional `metrics` function; an absent function or a failed call gives none
// (a plugin's trouble must not take /metrics down).
template <class Handle>
std::vector<PluginMetric> collect_plugin_metrics(kodo_status (*fn)(Handle *, kodo_metric_page *,
                                                                   kodo_error *),
                                                 Handle *handle) {
  std::vector<PluginMetric> out;
  if (!fn || !handle) return out;
  kodo_metric_page page{};
  page.struct_size = sizeof page;
  kodo_error error = KODO_ERROR_INIT;
  if (fn(handle, &page, &error) != KODO_OK) {
    kodo_error_release(&error);
    return out;
  }
  for (size_t i = 0; i < page.count; ++i) {
    const kodo_metric &m = *page.metrics[i];
    out.push_back(PluginMetric{m.name ? m.name : "", m.help ? m.help : "", m.labels ? m.labels : "",
                               m.type, m.value});
  }
  if (page.release) page.release(&page);
  return out;
}

// False when a figure named "up" is 0 (a plugin whose server is away): all samples must be up.
bool reports_up(const std::vector<PluginMetric> &metrics);

// Appends plugin figures as kodo_<kind>_<name>, one HELP/TYPE per name. Names or labels that
// would break the exposition format are left out.
void render_plugin_metrics(std::string &out, const std::string &kind,
                           const std::vector<PluginMetric> &metrics);

struct Metrics {
  Metrics();
  std::atomic<uint64_t> events_published{0};  // handed to the transport
  std::atomic<uint64_t> events_stored{0};     // committed by storage and acked
  std::atomic<uint64_t> batches_stored{0};
  std::atomic<uint64_t> store_failures{0};  // append attempts that failed (then retried)
  std::atomic<uint64_t> ack_failures{0};
  std::atomic<uint64_t> events_refused{0};       // refused by storage for good, recorded as errors
  std::atomic<uint64_t> redeliveries{0};         // deliveries seen with delivery_count > 1
  std::atomic<uint64_t> executions_finished{0};  // final status stored
  std::atomic<uint64_t> events_lost{0};          // missing when their run ended (lost_events.hpp)
  std::atomic<int64_t> events_missing{0};        // in gaps of runs under way (lost_events.hpp)
  std::atomic<int64_t> storage_up{1};            // 0 while appends fail
  std::atomic<int64_t> spool_lag_ms{0};          // age of the newest event stored in the last batch
  Histogram batch_size;                          // events per stored batch
  Histogram stored_latency;                      // seconds from an event's timestamp to its commit
  // Seconds from a commit to its frames being handed to a viewer's socket, once per viewer
  // (the SSE hub's part of commit-to-viewer; the network and the client come after).
  Histogram sse_sent_latency;

  // Gauges owned elsewhere are passed in at render time.
  struct Gauges {
    int64_t running_executions = 0;
    int64_t queued_executions = 0;
    uint64_t executions_launched = 0;
    uint64_t events_emitted = 0;
    uint64_t events_rejected = 0;
  };
  std::string render(const Gauges &gauges) const;
};

}  // namespace kodo
