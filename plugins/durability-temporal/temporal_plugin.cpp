// temporal_plugin.cpp: the durability kind's table (kodo_durability_api) on top of the client and
// the two workers: submit starts AgentWorkflow with id <prefix><fid>, signals are Temporal
// signals, describe folds the workflow's history (no worker needed), and a worker handle runs
// both workers, handing each activity attempt to the host's run_job.
#include <kodo/durability.hpp>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "activity_worker.hpp"
#include "agent_workflow.hpp"
#include "temporal_client.hpp"
#include "workflow_worker.hpp"

namespace {

namespace sdk = kodo::sdk;
namespace tp = kodo::temporal;
using sdk::OptionSpec;

constexpr kodo_option_spec kHost = OptionSpec("host", KODO_OPTION_STRING)
                                       .default_value("localhost:7233")
                                       .env_name("KODO_TEMPORAL_HOST")
                                       .description("the Temporal frontend, host:port");
constexpr kodo_option_spec kNamespace = OptionSpec("namespace", KODO_OPTION_STRING)
                                            .default_value("default")
                                            .env_name("KODO_TEMPORAL_NAMESPACE")
                                            .description("the Temporal namespace");
constexpr kodo_option_spec kTaskQueue = OptionSpec("task_queue", KODO_OPTION_STRING)
                                            .default_value("kodosumi-agents")
                                            .env_name("KODO_TEMPORAL_TASK_QUEUE")
                                            .description("the task queue of workflows and workers");
constexpr kodo_option_spec kPrefix = OptionSpec("workflow_id_prefix", KODO_OPTION_STRING)
                                         .default_value("kodo-")
                                         .env_name("KODO_TEMPORAL_WORKFLOW_ID_PREFIX")
                                         .description("workflow id = prefix + fid");
constexpr kodo_option_spec kExecutionTimeout =
    OptionSpec("execution_timeout", KODO_OPTION_INT)
        .default_value("3600")
        .env_name("KODO_TEMPORAL_EXECUTION_TIMEOUT")
        .description("seconds a job may run when its input names none (start-to-close)");
constexpr kodo_option_spec kHeartbeatTimeout =
    OptionSpec("heartbeat_timeout_s", KODO_OPTION_DOUBLE)
        .default_value("120")
        .description("an attempt silent this long is lost and retried");
constexpr kodo_option_spec kHeartbeatInterval =
    OptionSpec("heartbeat_interval_s", KODO_OPTION_DOUBLE)
        .default_value("5")
        .description("how often a worker heartbeats its jobs (well under the timeout)");
constexpr kodo_option_spec kMaxAttempts = OptionSpec("max_attempts", KODO_OPTION_INT)
                                              .default_value("3")
                                              .description("attempts per job, the first included");
constexpr kodo_option_spec kRetryInitial = OptionSpec("retry_initial_s", KODO_OPTION_DOUBLE)
                                               .default_value("5")
                                               .description("wait before the first retry");
constexpr kodo_option_spec kRetryBackoff = OptionSpec("retry_backoff", KODO_OPTION_DOUBLE)
                                               .default_value("2")
                                               .description("each retry waits this much longer");
constexpr kodo_option_spec kRetryMaximum = OptionSpec("retry_maximum_s", KODO_OPTION_DOUBLE)
                                               .default_value("60")
                                               .description("the longest wait between retries");
constexpr kodo_option_spec kConnectTimeout =
    OptionSpec("connect_timeout_s", KODO_OPTION_DOUBLE)
        .default_value("10")
        .description("how long open waits for an unreachable server before it fails");
constexpr kodo_option_spec kSubmitWait =
    OptionSpec("submit_wait_s", KODO_OPTION_DOUBLE)
        .default_value("5")
        .description("how long a launch waits for an unreachable server before it is refused");
constexpr kodo_option_spec kHealthInterval =
    OptionSpec("health_interval_s", KODO_OPTION_DOUBLE)
        .default_value("2")
        .description("how often the server is checked while nothing else calls it (metric up)");
constexpr kodo_option_spec kMaxConcurrent = OptionSpec("max_concurrent_jobs", KODO_OPTION_INT)
                                                .default_value("100")
                                                .description("jobs one worker runs at once");

const kodo_option_spec *const kOptions[] = {&kHost,
                                            &kNamespace,
                                            &kTaskQueue,
                                            &kPrefix,
                                            &kExecutionTimeout,
                                            &kHeartbeatTimeout,
                                            &kHeartbeatInterval,
                                            &kMaxAttempts,
                                            &kRetryInitial,
                                            &kRetryBackoff,
                                            &kRetryMaximum,
                                            &kMaxConcurrent,
                                            &kConnectTimeout,
                                            &kSubmitWait,
                                            &kHealthInterval};

double double_option(const sdk::Options &options, const kodo_option_spec &spec, double min) {
  const double value = options.get_double(spec.name, std::stod(spec.default_value));
  if (!(value >= min))
    throw sdk::Error(KODO_ERR_INVALID_ARGUMENT, std::string("option ") + spec.name +
                                                    " must be at least " + std::to_string(min));
  return value;
}

// A client error as a kodo error: unreachable is retryable, an unknown workflow NOT_FOUND.
[[noreturn]] void rethrow(const tp::TemporalError &e) {
  if (e.not_found()) throw sdk::Error(KODO_ERR_NOT_FOUND, e.what());
  if (e.unavailable()) throw sdk::Error(KODO_ERR_UNAVAILABLE, e.what(), true);
  if (e.code() == grpc::StatusCode::DEADLINE_EXCEEDED)
    throw sdk::Error(KODO_ERR_TIMEOUT, e.what(), true);
  if (e.code() == grpc::StatusCode::INVALID_ARGUMENT)
    throw sdk::Error(KODO_ERR_INVALID_ARGUMENT, e.what());
  throw sdk::Error(KODO_ERR_UNKNOWN, e.what());
}

// The SDK's view of one attempt, over the activity worker's Job. The host's listener is
// called only until it detaches (kodo_durability_api.on_control): detach() waits out a call in
// flight and silences the rest, since the Job's own threads go on after run_job returns.
class JobAdapter : public sdk::JobBase {
 public:
  explicit JobAdapter(tp::Job &job) : job_(job), gate_(std::make_shared<Gate>()) {}
  ~JobAdapter() override { detach(); }
  JobAdapter(const JobAdapter &) = delete;
  JobAdapter &operator=(const JobAdapter &) = delete;

  void heartbeat(const std::string &progress_json) override { job_.heartbeat(progress_json); }
  void on_control(std::function<void(const sdk::JobControl &)> listener) override {
    if (!listener) return detach();
    job_.on_control([gate = gate_, listener = std::move(listener)](const tp::Control &control) {
      std::lock_guard<std::mutex> lock(gate->mutex);
      if (gate->open)
        listener(sdk::JobControl{control.paused, control.cancelled, control.cancel_reason});
    });
  }
  void detach() {
    std::lock_guard<std::mutex> lock(gate_->mutex);
    gate_->open = false;
  }

 private:
  struct Gate {
    std::mutex mutex;
    bool open = true;
  };
  tp::Job &job_;
  std::shared_ptr<Gate> gate_;
};

tp::JobInput to_temporal(const sdk::JobInput &in, double default_timeout) {
  tp::JobInput out;
  out.fid = in.fid;
  out.username = in.username;
  out.app_url = in.app_url;
  out.entry_point = in.entry_point;
  out.panel_url = in.panel_url;
  out.jwt = in.jwt;
  out.inputs = in.inputs_json.empty() ? "{}" : in.inputs_json;
  out.extra = in.extra_json.empty() ? "{}" : in.extra_json;
  out.execution_timeout = in.execution_timeout > 0 ? in.execution_timeout : default_timeout;
  return out;
}

sdk::JobInput to_sdk(const tp::JobInput &in) {
  sdk::JobInput out;
  out.fid = in.fid;
  out.username = in.username;
  out.app_url = in.app_url;
  out.entry_point = in.entry_point;
  out.panel_url = in.panel_url;
  out.jwt = in.jwt;
  out.inputs_json = in.inputs;
  out.extra_json = in.extra;
  out.execution_timeout = in.execution_timeout;
  return out;
}

double seconds_of(const google::protobuf::Timestamp &time) {
  return static_cast<double>(time.seconds()) + time.nanos() / 1e9;
}

class TemporalDurability : public sdk::DurabilityBase {
 public:
  TemporalDurability(const sdk::Options &options, const kodo_host_api *host)
      : log_(host),
        prefix_(options.get(kPrefix.name, kPrefix.default_value)),
        task_queue_(options.get(kTaskQueue.name, kTaskQueue.default_value)),
        execution_timeout_(
            static_cast<double>(sdk::int_option(options, kExecutionTimeout, 1, 365LL * 86400))),
        heartbeat_interval_(double_option(options, kHeartbeatInterval, 0.05)),
        submit_wait_(double_option(options, kSubmitWait, 0)),
        health_interval_(double_option(options, kHealthInterval, 0.05)),
        max_concurrent_(static_cast<int>(sdk::int_option(options, kMaxConcurrent, 1, 100000))) {
    activity_.heartbeat_timeout = double_option(options, kHeartbeatTimeout, 0.1);
    activity_.maximum_attempts = static_cast<int>(sdk::int_option(options, kMaxAttempts, 1, 1000));
    activity_.initial_interval = double_option(options, kRetryInitial, 0.001);
    activity_.backoff_coefficient = double_option(options, kRetryBackoff, 1);
    activity_.maximum_interval = double_option(options, kRetryMaximum, 0.001);
    if (heartbeat_interval_ >= activity_.heartbeat_timeout)
      throw sdk::Error(KODO_ERR_INVALID_ARGUMENT,
                       "option heartbeat_interval_s must be shorter than heartbeat_timeout_s");
    tp::ClientOptions client;
    client.address = options.get(kHost.name, kHost.default_value);
    client.namespace_name = options.get(kNamespace.name, kNamespace.default_value);
    try {
      client_ = std::make_unique<tp::TemporalClient>(client);
      // A server down at start is reported within connect_timeout_s, naming its address;
      // later calls wait for a server that went away as long as the client's retry window.
      tp::ClientOptions first = client;
      first.retry_for = double_option(options, kConnectTimeout, 0);
      tp::TemporalClient(first).check_namespace();
    } catch (const tp::TemporalError &e) {
      rethrow(e);
    } catch (const std::invalid_argument &e) {
      throw sdk::Error(KODO_ERR_INVALID_ARGUMENT, e.what());
    }
    health_ = std::thread([this] { watch_server(); });
  }

  ~TemporalDurability() override {
    stop_worker();
    {
      std::lock_guard<std::mutex> lock(health_mutex_);
      stopping_ = true;
    }
    health_wake_.notify_all();
    health_.join();
  }
  TemporalDurability(const TemporalDurability &) = delete;
  TemporalDurability &operator=(const TemporalDurability &) = delete;

  bool submit(const sdk::JobInput &input, const std::string &request_id) override {
    sdk::check_name("fid", input.fid.c_str());
    tp::StartRequest start;
    start.workflow_id = prefix_ + input.fid;
    start.workflow_type = tp::kWorkflowType;
    start.task_queue = task_queue_;
    start.input_json = tp::to_json(to_temporal(input, execution_timeout_));
    start.request_id = request_id;
    try {
      // A server away refuses the launch after submit_wait_s, before the HTTP client gives up:
      // nothing was accepted, so nothing is lost; the caller may launch again.
      return client_->start_workflow(start, submit_wait_).started;
    } catch (const tp::TemporalError &e) {
      if (e.unavailable())
        throw sdk::Error(KODO_ERR_UNAVAILABLE,
                         std::string("launch refused, nothing was started: ") + e.what(), true);
      rethrow(e);
    }
  }

  void signal(const std::string &fid, int32_t signal, const std::string &reason) override {
    sdk::check_name("fid", fid.c_str());
    const char *name = signal == KODO_JOB_SIGNAL_PAUSE    ? "pause"
                       : signal == KODO_JOB_SIGNAL_RESUME ? "resume"
                       : signal == KODO_JOB_SIGNAL_CANCEL ? "cancel_workflow"
                                                          : nullptr;
    if (!name)
      throw sdk::Error(KODO_ERR_INVALID_ARGUMENT, "unknown signal " + std::to_string(signal));
    std::optional<std::string> argument;
    if (!reason.empty()) argument = tp::json_string(reason);
    try {
      client_->signal(prefix_ + fid, name, argument);
    } catch (const tp::TemporalError &e) {
      if (!e.not_found()) rethrow(e);
      // Temporal refuses signals to a closed workflow as NOT_FOUND: a job that ended takes
      // the signal as changing nothing; only an unknown fid is NOT_FOUND.
      try {
        client_->describe(prefix_ + fid);
      } catch (const tp::TemporalError &unknown) {
        rethrow(unknown);
      }
    }
  }

  // The workflow's own state folded from its history, with DescribeWorkflowExecution's view of
  // the running attempt: both answer with no worker alive.
  std::string describe(const std::string &fid) override {
    sdk::check_name("fid", fid.c_str());
    const std::string id = prefix_ + fid;
    try {
      const auto description = client_->describe(id);
      tp::wf::GetWorkflowExecutionHistoryRequest request;
      request.set_namespace_(client_->options().namespace_name);
      request.mutable_execution()->set_workflow_id(id);
      tp::WorkflowState state;
      do {
        tp::wf::GetWorkflowExecutionHistoryResponse page;
        client_->history_page(request, page, nullptr);
        for (const auto &event : page.history().events()) tp::apply(state, event);
        request.set_next_page_token(page.next_page_token());
      } while (!request.next_page_token().empty());

      const auto &info = description.workflow_execution_info();
      std::string out =
          "{\"fid\":" + tp::json_string(fid) + ",\"workflow_id\":" + tp::json_string(id) +
          ",\"run_id\":" + tp::json_string(info.execution().run_id()) +
          ",\"state\":" + tp::json_string(tp::status(state)) + ",\"temporal_status\":" +
          tp::json_string(::temporal::api::enums::v1::WorkflowExecutionStatus_Name(info.status())) +
          ",\"paused\":" + (state.paused ? "true" : "false") +
          ",\"pauses\":" + std::to_string(state.pauses) +
          ",\"resumes\":" + std::to_string(state.resumes);
      std::string error = !state.input_error.empty() ? state.input_error : state.error;
      if (error.empty() && state.cancel_requested) error = "cancelled by " + state.cancel_reason;
      out += ",\"error\":" + (error.empty() ? std::string("null") : tp::json_string(error));
      if (description.pending_activities_size() > 0) {
        const auto &pending = description.pending_activities(0);
        std::string heartbeat = "null";
        if (pending.heartbeat_details().payloads_size() > 0) {
          try {
            heartbeat = tp::payload_json(pending.heartbeat_details().payloads(0), "heartbeat");
          } catch (const std::exception &) {  // another SDK's details: left out
          }
        }
        out += ",\"attempt\":" + std::to_string(pending.attempt()) +
               ",\"last_heartbeat\":" + heartbeat + ",\"last_heartbeat_time\":" +
               (pending.has_last_heartbeat_time()
                    ? std::to_string(seconds_of(pending.last_heartbeat_time()))
                    : std::string("null")) +
               ",\"pending_activity\":{\"state\":" +
               tp::json_string(
                   ::temporal::api::enums::v1::PendingActivityState_Name(pending.state())) +
               ",\"worker\":" + tp::json_string(pending.last_worker_identity()) +
               ",\"last_failure\":" + tp::json_string(pending.last_failure().message()) + "}";
      } else {
        out += ",\"attempt\":null,\"last_heartbeat\":null,\"pending_activity\":null";
      }
      return out + "}";
    } catch (const tp::TemporalError &e) {
      rethrow(e);
    }
  }

  void start_worker(const sdk::JobHost &host) override {
    if (activity_worker_)
      throw sdk::Error(KODO_ERR_INVALID_ARGUMENT, "start_worker: the worker runs already");
    auto errors = [this](const std::string &message) { log_(KODO_LOG_WARN, message); };
    tp::WorkflowWorkerOptions workflow;
    workflow.task_queue = task_queue_;
    workflow.activity = activity_;
    tp::ActivityWorkerOptions activity;
    activity.task_queue = task_queue_;
    activity.max_concurrent = max_concurrent_;
    activity.heartbeat_interval = heartbeat_interval_;
    host_ = host;
    workflow_worker_ = std::make_unique<tp::WorkflowWorker>(*client_, workflow, errors);
    activity_worker_ = std::make_unique<tp::ActivityWorker>(
        *client_, activity,
        [this](tp::Job &job) {
          JobAdapter adapter(job);
          try {
            const auto result =
                host_.run(adapter, to_sdk(job.input()), job.attempt(), job.last_heartbeat());
            return tp::JobResult{job.input().fid, result.status, result.error};
          } catch (const sdk::Error &e) {
            if (!e.retryable()) throw tp::FinalJobError(e.what());
            throw;
          }
        },
        errors);
    workflow_worker_->start();
    activity_worker_->start();
  }

  void stop_worker() override {
    if (activity_worker_) activity_worker_->stop();
    if (workflow_worker_) workflow_worker_->stop();
    activity_worker_.reset();
    workflow_worker_.reset();
  }

  std::vector<sdk::Metric> metrics() override {
    std::vector<sdk::Metric> out;
    out.push_back({"up", "1 while the Temporal server answers", "", KODO_METRIC_GAUGE,
                   client_->up() ? 1.0 : 0.0});
    if (activity_worker_) {
      out.push_back({"jobs_running", "attempts this worker runs now", "", KODO_METRIC_GAUGE,
                     static_cast<double>(activity_worker_->running())});
      out.push_back({"jobs_done", "attempts this worker ended", "", KODO_METRIC_COUNTER,
                     static_cast<double>(activity_worker_->jobs_done())});
    }
    if (workflow_worker_)
      out.push_back({"workflow_tasks", "workflow tasks this worker answered", "",
                     KODO_METRIC_COUNTER,
                     static_cast<double>(workflow_worker_->tasks_completed())});
    return out;
  }

 private:
  // Keeps up() current while no call reaches for the server (an idle `serve`); says when the
  // server goes away and when it is back.
  void watch_server() {
    std::unique_lock<std::mutex> lock(health_mutex_);
    bool was_up = true;
    while (!health_wake_.wait_for(lock, std::chrono::duration<double>(health_interval_),
                                  [this] { return stopping_; })) {
      lock.unlock();
      // As long as an ordinary call may take: a slow answer is not an absent server.
      const bool up = client_->probe(client_->options().call_timeout);
      if (up != was_up)
        log_(up ? KODO_LOG_INFO : KODO_LOG_WARN,
             "temporal at " + client_->options().address +
                 (up ? " answers again" : " does not answer; retrying with backoff"));
      was_up = up;
      lock.lock();
    }
  }

  sdk::HostLog log_;
  std::string prefix_;
  std::string task_queue_;
  double execution_timeout_;
  double heartbeat_interval_;
  double submit_wait_;
  double health_interval_;
  int max_concurrent_;
  tp::ActivityOptions activity_;
  std::unique_ptr<tp::TemporalClient> client_;
  sdk::JobHost host_;
  std::unique_ptr<tp::WorkflowWorker> workflow_worker_;
  std::unique_ptr<tp::ActivityWorker> activity_worker_;
  std::mutex health_mutex_;
  std::condition_variable health_wake_;
  bool stopping_ = false;
  std::thread health_;
};

}  // namespace

KODO_DURABILITY_PLUGIN(TemporalDurability, "temporal", "0.2.0",
                       "executions as Temporal workflows (AgentWorkflow, activity execute_agent)",
                       KODO_DURABILITY_CAP_RETRY | KODO_DURABILITY_CAP_PAUSE |
                           KODO_DURABILITY_CAP_CANCEL | KODO_DURABILITY_CAP_QUERY |
                           KODO_DURABILITY_CAP_CROSS_PROCESS,
                       kOptions, sizeof kOptions / sizeof kOptions[0])
