#include "core/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace kodo {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(bounds_.size() + 1) {}

void Histogram::observe(double value, uint64_t count) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  buckets_[i].fetch_add(count, std::memory_order_relaxed);
  count_.fetch_add(count, std::memory_order_relaxed);
  if (value > 0)
    sum_micro_.fetch_add(static_cast<uint64_t>(std::llround(value * 1e6)) * count,
                         std::memory_order_relaxed);
}

// "%.17g" round-trips a double and needs at most 24 characters.
static std::string number(double v) {
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%.17g", v);
  return std::string(buf, n > 0 ? std::min(static_cast<size_t>(n), sizeof buf - 1) : 0);
}

void Histogram::render(std::string &out, const std::string &name, const std::string &help) const {
  out.append("# HELP ").append(name).append(" ").append(help);
  out.append("\n# TYPE ").append(name).append(" histogram\n");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out.append(name).append("_bucket{le=\"").append(le).append("\"} ");
    out.append(std::to_string(cumulative)).append("\n");
  }
  // A double holds every sum below 2^53 microseconds (285 years) exactly.
  const auto sum_micro = static_cast<double>(sum_micro_.load(std::memory_order_relaxed));
  out.append(name).append("_sum ").append(number(sum_micro / 1e6)).append("\n");
  out.append(name).append("_count ");
  out.append(std::to_string(count_.load(std::memory_order_relaxed))).append("\n");
}

Metrics::Metrics()
    : batch_size({1, 10, 100, 1000, 10000, 100000}),
      stored_latency({0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      sse_sent_latency({0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}) {}

static void counter(std::string &out, const char *name, const char *help, uint64_t value) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name +
         " " + std::to_string(value) + "\n";
}

static void gauge(std::string &out, const char *name, const char *help, int64_t value) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " " +
         std::to_string(value) + "\n";
}

std::string Metrics::render(const Gauges &g) const {
  std::string out;
  auto load = [](const std::atomic<uint64_t> &a) { return a.load(std::memory_order_relaxed); };
  counter(out, "kodo_events_in_total", "Events made by executors (flow lines and host events).",
          g.events_emitted);
  counter(out, "kodo_events_published_total", "Events handed to the transport.",
          load(events_published));
  counter(out, "kodo_events_rejected_total",
          "Events the transport refused (their runs end in error).", g.events_rejected);
  counter(out, "kodo_events_stored_total", "Events committed to storage and acknowledged.",
          load(events_stored));
  counter(out, "kodo_batches_stored_total", "Batches committed to storage.", load(batches_stored));
  counter(out, "kodo_events_lost_total",
          "Events lost in the transport before storage (e.g. Redis lost its data): still missing "
          "when their execution ended, which says so in an error event.",
          load(events_lost));
  counter(out, "kodo_store_failures_total", "Storage append attempts that failed and were retried.",
          load(store_failures));
  counter(out, "kodo_events_refused_total",
          "Events storage refused for good (not retryable); each is recorded as an error event.",
          load(events_refused));
  counter(out, "kodo_ack_failures_total", "Acknowledgements the transport refused.",
          load(ack_failures));
  counter(out, "kodo_redeliveries_total", "Deliveries received more than once.",
          load(redeliveries));
  counter(out, "kodo_executions_launched_total", "Executions launched.", g.executions_launched);
  counter(out, "kodo_executions_finished_total", "Executions whose final status is stored.",
          load(executions_finished));
  gauge(out, "kodo_events_missing",
        "Events missing now in runs under way (a seq stored past them); late ones fill the gap.",
        events_missing.load(std::memory_order_relaxed));
  gauge(out, "kodo_running_executions", "Flow processes running now.", g.running_executions);
  gauge(out, "kodo_queued_executions", "Launches waiting for a free slot.", g.queued_executions);
  gauge(out, "kodo_storage_up", "1 while storage accepts appends, 0 while they fail.",
        storage_up.load(std::memory_order_relaxed));
  gauge(out, "kodo_spool_lag_milliseconds",
        "Age of the newest event in the last stored batch when it was committed.",
        spool_lag_ms.load(std::memory_order_relaxed));
  batch_size.render(out, "kodo_spool_batch_size", "Events per stored batch.");
  stored_latency.render(out, "kodo_event_stored_latency_seconds",
                        "Time from an event's timestamp to its storage commit.");
  sse_sent_latency.render(out, "kodo_sse_sent_latency_seconds",
                          "Time from a commit to its frames being written to a viewer's socket, "
                          "per viewer.");
  return out;
}

static bool metric_name_ok(const std::string &name) {
  if (name.empty()) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

// name="value" pairs separated by commas, with no newline or brace that could end the line.
static bool metric_labels_ok(const std::string &labels) {
  return labels.find_first_of("\n\r{}") == std::string::npos;
}

bool reports_up(const std::vector<PluginMetric> &metrics) {
  return std::none_of(metrics.begin(), metrics.end(),
                      [](const PluginMetric &m) { return m.name == "up" && m.value == 0; });
}

void render_plugin_metrics(std::string &out, const std::string &kind,
                           const std::vector<PluginMetric> &unsorted) {
  // A metric family's samples must be adjacent, whatever order the plugin gave them in.
  std::vector<PluginMetric> metrics = unsorted;
  std::stable_sort(metrics.begin(), metrics.end(),
                   [](const PluginMetric &a, const PluginMetric &b) { return a.name < b.name; });
  std::vector<std::string> described;
  for (const auto &m : metrics) {
    if (!metric_name_ok(m.name) || !metric_labels_ok(m.labels)) continue;
    std::string name = "kodo_";
    name.append(kind).append("_").append(m.name);
    if (std::find(described.begin(), described.end(), name) == described.end()) {
      described.push_back(name);
      std::string help = m.help;
      std::replace(help.begin(), help.end(), '\n', ' ');
      out.append("# HELP ").append(name).append(" ").append(help);
      out.append("\n# TYPE ").append(name).append(" ");
      out.append(m.type == KODO_METRIC_COUNTER ? "counter" : "gauge").append("\n");
    }
    out += name;
    if (!m.labels.empty()) out.append("{").append(m.labels).append("}");
    out.append(" ").append(number(m.value)).append("\n");
  }
}

}  // namespace kodo
