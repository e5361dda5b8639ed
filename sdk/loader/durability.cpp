#include <kodo/host/durability.hpp>

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>

#include <cstdlib>
#include <cstring>

namespace kodo {

HostJob::~HostJob() {
  if (!listener_) return;
  kodo_error error = KODO_ERROR_INIT;
  if (api_.on_control(job_, nullptr, nullptr, &error) != KODO_OK)
    log_warn("job " + input_.fid + ": detaching its control listener failed: " +
             (error.message ? error.message : "no message"));
  kodo_error_release(&error);
}

void HostJob::heartbeat(const std::string &progress_json) {
  kodo_error error = KODO_ERROR_INIT;
  const kodo_status status = api_.heartbeat(job_, progress_json.c_str(), &error);
  if (status != KODO_OK) throw_plugin_error("heartbeat of job " + input_.fid, status, error);
}

void HostJob::call_listener(void *data, const kodo_job_control *given) {
  const kodo_job_control control = sdk::read_sized(given);
  static_cast<HostJob *>(data)->listener_(
      sdk::JobControl{control.paused != 0, control.cancelled != 0,
                      control.cancel_reason ? control.cancel_reason : ""});
}

void HostJob::on_control(std::function<void(const sdk::JobControl &)> listener) {
  listener_ = std::move(listener);
  kodo_error error = KODO_ERROR_INIT;
  const kodo_status status = api_.on_control(job_, call_listener, this, &error);
  if (status != KODO_OK) throw_plugin_error("on_control of job " + input_.fid, status, error);
}

Durability::Durability(std::shared_ptr<Plugin> plugin, const OptionList &options)
    : plugin_(std::move(plugin)),
      api_(plugin_->durability_api()),
      handle_(open_plugin_handle<kodo_durability>(*plugin_, options, api_.open)),
      capabilities_(instance_capabilities(*plugin_, api_.capabilities, handle_)) {}

Durability::~Durability() {
  stop_worker();
  if (handle_) api_.close(handle_);
}

bool Durability::submit(const sdk::JobInput &input, const std::string &request_id) {
  const kodo_job_input in = input.view();
  int32_t started = 0;
  kodo_error error = KODO_ERROR_INIT;
  const kodo_status status = api_.submit(handle_, &in, request_id.c_str(), &started, &error);
  if (status != KODO_OK)
    throw_plugin_error(plugin_->label() + ": submit of " + input.fid, status, error);
  return started != 0;
}

void Durability::signal(const std::string &fid, int32_t signal, const std::string &reason) {
  if (!api_.signal) throw Error(KODO_ERR_NOT_SUPPORTED, plugin_->label() + " takes no signals");
  kodo_error error = KODO_ERROR_INIT;
  const kodo_status status = api_.signal(handle_, fid.c_str(), signal, reason.c_str(), &error);
  if (status != KODO_OK) throw_plugin_error(plugin_->label() + ": signal to " + fid, status, error);
}

std::string Durability::describe(const std::string &fid) {
  if (!api_.describe)
    throw Error(KODO_ERR_NOT_SUPPORTED, plugin_->label() + " cannot describe a job");
  kodo_text text{};
  text.struct_size = sizeof text;
  kodo_error error = KODO_ERROR_INIT;
  const kodo_status status = api_.describe(handle_, fid.c_str(), &text, &error);
  if (status != KODO_OK)
    throw_plugin_error(plugin_->label() + ": describe of " + fid, status, error);
  std::string out = text.text ? std::string(text.text, text.length) : std::string();
  if (text.release) text.release(&text);
  return out;
}

void Durability::start_worker(JobRunner runner) {
  runner_ = std::move(runner);
  job_host_.struct_size = sizeof job_host_;
  job_host_.host_data = this;
  job_host_.run_job = run_job;
  kodo_error error = KODO_ERROR_INIT;
  const kodo_status status = api_.start_worker(handle_, &job_host_, &error);
  if (status != KODO_OK) throw_plugin_error(plugin_->label() + ": start_worker", status, error);
  worker_running_ = true;
}

void Durability::stop_worker() {
  if (!worker_running_) return;
  api_.stop_worker(handle_);
  worker_running_ = false;
}

namespace {

char *copy_text(const std::string &text) {
  char *copy = static_cast<char *>(std::malloc(text.size() + 1));
  if (copy) std::memcpy(copy, text.c_str(), text.size() + 1);
  return copy;
}

// The strings of a kodo_job_result the host filled, freed by its release.
struct ResultStrings {
  char *status;
  char *error;
};

}  // namespace

kodo_status Durability::run_job(void *host_data, kodo_job *job, const kodo_job_input *input,
                                int32_t attempt, const char *last_heartbeat_json,
                                kodo_job_result *result, kodo_error *error) {
  auto *self = static_cast<Durability *>(host_data);
  return sdk::guard(error, [&] {
    if (!result || !KODO_HAS_FIELD(result, private_data))
      throw Error(KODO_ERR_INVALID_ARGUMENT, "run_job: the result struct is missing or too small");
    HostJob host_job(self->api_, job, sdk::JobInput::copy(input), attempt,
                     last_heartbeat_json ? last_heartbeat_json : "");
    const sdk::JobResult outcome = self->runner_(host_job);
    auto *strings = new ResultStrings{copy_text(outcome.status), copy_text(outcome.error)};
    result->status = strings->status;
    result->error = strings->error;
    result->private_data = strings;
    result->release = [](kodo_job_result *r) {
      auto *s = static_cast<ResultStrings *>(r->private_data);
      std::free(s->status);
      std::free(s->error);
      delete s;
      r->private_data = nullptr;
      r->release = nullptr;
    };
  });
}

}  // namespace kodo
