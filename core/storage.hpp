// storage.hpp: an open storage backend, as the host uses it. Turns the C table into C++
// calls that throw kodo::Error and return owned results.
#pragma once

#include "core/metrics.hpp"

#include <kodo/host/plugin_loader.hpp>
#include <kodo/host/plugin_options.hpp>
#include "core/event.hpp"
#include "core/interrupter.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kodo {

// Threading: as kodo_storage_api; every method but the destructor may run concurrently.
class Storage {
 public:
  Storage(std::shared_ptr<Plugin> plugin, const OptionList &options);
  ~Storage();
  Storage(const Storage &) = delete;
  Storage &operator=(const Storage &) = delete;

  const Plugin &plugin() const { return *plugin_; }
  // What this handle can do: the plugin's declared capabilities, narrowed by the handle's
  // own answer when the plugin reports one (kodo_storage_api.capabilities).
  uint64_t capabilities() const { return capabilities_; }
  bool has(uint64_t capability) const { return (capabilities_ & capability) != 0; }

  void create_schema();
  void append(const kodo_event *const *events, size_t count);
  void append(const std::vector<Event> &events);
  std::vector<Event> read_events(const EventQuery &query, bool *has_more = nullptr);
  std::optional<ExecutionInfo> get_execution(const std::string &fid,
                                             const std::string &username = "");
  std::vector<ExecutionInfo> list_executions(const std::string &username, size_t offset,
                                             size_t limit, bool *has_more = nullptr);
  // False when the execution is unknown.
  bool archive_execution(const std::string &fid, const std::string &username = "");
  int64_t purge(double older_than);
  // Deadlines: an append or a read still running after this many seconds is interrupted
  // (when the plugin offers interrupt) and fails with the plugin's KODO_ERR_TIMEOUT.
  void set_call_timeouts(double append_s, double read_s);
  // Interrupts every call now running (shutdown); false when the plugin cannot be.
  void interrupt();
  bool can_interrupt() const { return interrupter_->can_interrupt(); }
  // The plugin's own figures for /metrics (none when it reports none).
  std::vector<PluginMetric> metrics() const;

 private:
  std::shared_ptr<Plugin> plugin_;
  const kodo_storage_api &api_;
  kodo_storage *handle_ = nullptr;
  uint64_t capabilities_ = 0;
  double append_timeout_s_ = 60;
  double read_timeout_s_ = 30;
  // Stopped before close: interrupt never runs concurrently with it.
  std::unique_ptr<Interrupter> interrupter_;
};

}  // namespace kodo
