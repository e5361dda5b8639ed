// durability.hpp: an open durability backend, as the host uses it (kodo_durability_api): the
// serving side submits, signals and describes jobs; a worker host runs them through a JobRunner.
#pragma once

#include <kodo/host/plugin_loader.hpp>
#include <kodo/host/plugin_options.hpp>

#include <kodo/durability.hpp>

#include <functional>
#include <memory>
#include <string>

namespace kodo {

// One running attempt, as the host's runner sees it. Valid while the runner runs.
class HostJob {
 public:
  HostJob(const kodo_durability_api &api, kodo_job *job, sdk::JobInput input, int32_t attempt,
          std::string last_heartbeat)
      : api_(api),
        job_(job),
        input_(std::move(input)),
        attempt_(attempt),
        last_heartbeat_(std::move(last_heartbeat)) {}
  ~HostJob();  // detaches the listener: no call reaches this object after it
  HostJob(const HostJob &) = delete;
  HostJob &operator=(const HostJob &) = delete;
  const sdk::JobInput &input() const { return input_; }
  int32_t attempt() const { return attempt_; }
  // The previous attempt's last progress (JSON), "" on the first.
  const std::string &last_heartbeat() const { return last_heartbeat_; }
  // Throws kodo::Error when the plugin refuses it.
  void heartbeat(const std::string &progress_json);
  // Called at once and on every change of the job's control, from a plugin thread, until the
  // runner returns. Set once.
  void on_control(std::function<void(const sdk::JobControl &)> listener);

 private:
  static void call_listener(void *data, const kodo_job_control *control);
  const kodo_durability_api &api_;
  kodo_job *job_;
  sdk::JobInput input_;
  int32_t attempt_;
  std::string last_heartbeat_;
  std::function<void(const sdk::JobControl &)> listener_;
};

// Runs one attempt to its end. Throw kodo::Error to fail the attempt (retryable: it runs
// again; otherwise the job fails for good).
using JobRunner = std::function<sdk::JobResult(HostJob &)>;

class Durability {
 public:
  Durability(std::shared_ptr<Plugin> plugin, const OptionList &options);
  ~Durability();  // stops the worker first
  Durability(const Durability &) = delete;
  Durability &operator=(const Durability &) = delete;

  const Plugin &plugin() const { return *plugin_; }
  uint64_t capabilities() const { return capabilities_; }
  bool has(uint64_t capability) const { return (capabilities_ & capability) != 0; }

  // True when this call started the job (false: the fid's job existed already).
  bool submit(const sdk::JobInput &input, const std::string &request_id);
  void signal(const std::string &fid, int32_t signal, const std::string &reason);
  std::string describe(const std::string &fid);
  // The table and handle, for the host's optional calls (metrics).
  const kodo_durability_api &api() const { return api_; }
  kodo_durability *handle() const { return handle_; }

  void start_worker(JobRunner runner);
  void stop_worker();

 private:
  static kodo_status run_job(void *host_data, kodo_job *job, const kodo_job_input *input,
                             int32_t attempt, const char *last_heartbeat_json,
                             kodo_job_result *result, kodo_error *error);

  std::shared_ptr<Plugin> plugin_;
  const kodo_durability_api &api_;
  kodo_durability *handle_ = nullptr;
  uint64_t capabilities_ = 0;
  JobRunner runner_;
  kodo_job_host job_host_{};
  bool worker_running_ = false;
};

}  // namespace kodo
