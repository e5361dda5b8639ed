// durability.hpp: the C++ helper for durability plugins (ABI version 2), beside plugin.hpp's
// storage and transport helpers.
//
// Write a class derived from kodo::sdk::DurabilityBase with a constructor
// CLASS(const kodo::sdk::Options&, const kodo_host_api*), and add one KODO_DURABILITY_PLUGIN
// line. Jobs the worker takes are handed to the host through JobHost::run, with a JobBase of
// the plugin's that carries the job's heartbeats and control; exceptions become kodo_errors
// at the boundary as everywhere in the SDK.
#ifndef KODO_DURABILITY_HPP
#define KODO_DURABILITY_HPP

#include <kodo/plugin.hpp>

#include <functional>

namespace kodo::sdk {

// kodo_job_input with strings it owns.
struct JobInput {
  std::string fid, username, app_url, entry_point, panel_url, jwt;
  std::string inputs_json = "{}";
  std::string extra_json = "{}";
  double execution_timeout = 0;

  static JobInput copy(const kodo_job_input *given) {
    if (!given) throw Error(KODO_ERR_INVALID_ARGUMENT, "the job input is NULL");
    const kodo_job_input in = read_sized(given);
    auto text = [](const char *s, const char *fallback = "") {
      return std::string(s ? s : fallback);
    };
    JobInput out;
    out.fid = text(in.fid);
    out.username = text(in.username);
    out.app_url = text(in.app_url);
    out.entry_point = text(in.entry_point);
    out.panel_url = text(in.panel_url);
    out.jwt = text(in.jwt);
    out.inputs_json = text(in.inputs_json, "{}");
    out.extra_json = text(in.extra_json, "{}");
    out.execution_timeout = in.execution_timeout;
    return out;
  }
  // The C struct, pointing into this object.
  kodo_job_input view() const {
    kodo_job_input in{};
    in.struct_size = sizeof in;
    in.fid = fid.c_str();
    in.username = username.c_str();
    in.app_url = app_url.c_str();
    in.entry_point = entry_point.c_str();
    in.panel_url = panel_url.c_str();
    in.jwt = jwt.c_str();
    in.inputs_json = inputs_json.c_str();
    in.extra_json = extra_json.c_str();
    in.execution_timeout = execution_timeout;
    return in;
  }
};

struct JobControl {
  bool paused = false;
  bool cancelled = false;
  std::string cancel_reason;
};

struct JobResult {
  std::string status;  // "finished" or "error"
  std::string error;
};

// One running attempt, as the plugin keeps it; the host reaches it through the table's
// heartbeat and on_control. Threading: see kodo_durability_api.
class JobBase {
 public:
  virtual ~JobBase() = default;
  virtual void heartbeat(const std::string &progress_json) = 0;
  // Calls `listener` at once with the current control and on every change. An empty
  // listener detaches: return once no call is in flight, and call nothing after.
  virtual void on_control(std::function<void(const JobControl &)> listener) = 0;
};

// The host's kodo_job_host, for the plugin's worker threads.
class JobHost {
 public:
  JobHost() = default;
  explicit JobHost(const kodo_job_host *host) : host_(read_sized(host)) {
    if (!host_.run_job) throw Error(KODO_ERR_INVALID_ARGUMENT, "the job host has no run_job");
  }
  // Runs one attempt through the host. Throws Error with the host's status and retryability
  // when the host failed the attempt.
  JobResult run(JobBase &job, const JobInput &input, int32_t attempt,
                const std::string &last_heartbeat_json) const {
    const kodo_job_input in = input.view();
    kodo_job_result result{};
    result.struct_size = sizeof result;
    kodo_error error = KODO_ERROR_INIT;
    const kodo_status status = host_.run_job(
        host_.host_data, reinterpret_cast<kodo_job *>(&job), &in, attempt,
        last_heartbeat_json.empty() ? nullptr : last_heartbeat_json.c_str(), &result, &error);
    if (status != KODO_OK) {
      const std::string message = error.message ? error.message : "the host failed the job";
      const bool retryable = error.retryable != 0;
      kodo_error_release(&error);
      throw Error(status, message, retryable);
    }
    JobResult out{result.status ? result.status : "", result.error ? result.error : ""};
    if (result.release) result.release(&result);
    return out;
  }

 private:
  kodo_job_host host_{};
};

// Base class of a durability backend. Methods of capabilities the plugin does not claim keep
// their default, which reports KODO_ERR_NOT_SUPPORTED.
class DurabilityBase {
 public:
  virtual ~DurabilityBase() = default;
  // Returns whether this call started the job (false: it existed already).
  virtual bool submit(const JobInput &input, const std::string &request_id) = 0;
  virtual void signal(const std::string &, int32_t, const std::string &) {
    not_supported("signal");
  }
  virtual std::string describe(const std::string &) { not_supported("describe"); }
  virtual void start_worker(const JobHost &host) = 0;
  virtual void stop_worker() = 0;
  virtual std::vector<Metric> metrics() { return {}; }
  virtual void interrupt() {}
  virtual uint64_t capabilities() { return 0; }
};

namespace detail {

template <class T>
struct DurabilityThunks {
  using Self = Instance<DurabilityBase>;
  static DurabilityBase *self(kodo_durability *d) {
    return reinterpret_cast<Self *>(d)->object.get();
  }
  static JobBase *job(kodo_job *j) {
    if (!j) throw Error(KODO_ERR_INVALID_ARGUMENT, "the job is NULL");
    return reinterpret_cast<JobBase *>(j);
  }
  static std::string text(const char *s) { return s ? s : ""; }
  static kodo_status open(const kodo_option *const *options, size_t count,
                          const kodo_host_api *host, kodo_durability **out, kodo_error *error) {
    return guard(error, [&] { open_instance<T, DurabilityBase>(options, count, host, out); });
  }
  static void close(kodo_durability *d) {
    try {
      delete reinterpret_cast<Self *>(d);
    } catch (...) {
    }
  }
  static kodo_status submit(kodo_durability *d, const kodo_job_input *input, const char *request_id,
                            int32_t *started_out, kodo_error *error) {
    return guard(error, [&] {
      const bool started = self(d)->submit(JobInput::copy(input), text(request_id));
      if (started_out) *started_out = started ? 1 : 0;
    });
  }
  static kodo_status signal(kodo_durability *d, const char *fid, int32_t signal, const char *reason,
                            kodo_error *error) {
    return guard(error, [&] { self(d)->signal(text(fid), signal, text(reason)); });
  }
  static kodo_status describe(kodo_durability *d, const char *fid, kodo_text *out,
                              kodo_error *error) {
    return guard(error, [&] {
      check_output_size(out, out && KODO_HAS_FIELD(out, private_data), "text");
      auto *owned = new std::string(self(d)->describe(text(fid)));
      out->text = owned->c_str();
      out->length = owned->size();
      out->private_data = owned;
      out->release = [](kodo_text *t) {
        delete static_cast<std::string *>(t->private_data);
        t->private_data = nullptr;
        t->text = nullptr;
        t->release = nullptr;
      };
    });
  }
  static kodo_status start_worker(kodo_durability *d, const kodo_job_host *host,
                                  kodo_error *error) {
    return guard(error, [&] {
      if (!host) throw Error(KODO_ERR_INVALID_ARGUMENT, "start_worker: the job host is NULL");
      self(d)->start_worker(JobHost(host));
    });
  }
  static void stop_worker(kodo_durability *d) {
    try {
      self(d)->stop_worker();
    } catch (...) {  // nothing crosses the boundary
    }
  }
  static kodo_status heartbeat(kodo_job *j, const char *progress_json, kodo_error *error) {
    return guard(error, [&] { job(j)->heartbeat(text(progress_json)); });
  }
  static kodo_status on_control(kodo_job *j, kodo_job_listener listener, void *data,
                                kodo_error *error) {
    return guard(error, [&] {
      if (!listener) return job(j)->on_control(nullptr);
      job(j)->on_control([listener, data](const JobControl &control) {
        kodo_job_control c{};
        c.struct_size = sizeof c;
        c.paused = control.paused ? 1 : 0;
        c.cancelled = control.cancelled ? 1 : 0;
        c.cancel_reason = control.cancel_reason.c_str();
        listener(data, &c);
      });
    });
  }
  static kodo_status metrics(kodo_durability *d, kodo_metric_page *out, kodo_error *error) {
    return guard(error, [&] { finish_metric_page(self(d)->metrics(), out); });
  }
  static void interrupt(kodo_durability *d) {
    try {
      self(d)->interrupt();
    } catch (...) {  // nothing crosses the boundary; the call then simply runs on
    }
  }
  static uint64_t capabilities(kodo_durability *d) {
    try {
      return self(d)->capabilities();
    } catch (...) {  // an instance that cannot say what it can is held to nothing optional
      return 0;
    }
  }
  static const kodo_durability_api *table() {
    static const kodo_durability_api api = [] {
      kodo_durability_api a{};
      a.struct_size = sizeof a;
      a.open = open;
      a.close = close;
      a.submit = submit;
      a.signal = signal;
      a.describe = describe;
      a.start_worker = start_worker;
      a.stop_worker = stop_worker;
      a.heartbeat = heartbeat;
      a.on_control = on_control;
      a.metrics = metrics;
      a.interrupt = overrides_interrupt<T, DurabilityBase> ? interrupt : nullptr;
      a.capabilities = overrides_capabilities<T, DurabilityBase> ? capabilities : nullptr;
      return a;
    }();
    return &api;
  }
};

}  // namespace detail
}  // namespace kodo::sdk

// Defines the entry point of a durability plugin written as a class (see the top).
#define KODO_DURABILITY_PLUGIN(CLASS, NAME, VERSION, DESCRIPTION, CAPS, OPTIONS, OPTION_COUNT)  \
  extern "C" KODO_DEFINE_ENTRY(host_min, host_max, host, plugin_out, abi_out, error) {          \
    (void)host;                                                                                 \
    static const auto descriptors = kodo::sdk::detail::descriptors<KODO_ABI_VERSION>(           \
        kodo_plugin{sizeof(kodo_plugin), KODO_ABI_VERSION, KODO_KIND_DURABILITY, NAME, VERSION, \
                    DESCRIPTION, CAPS, OPTIONS, OPTION_COUNT, nullptr, nullptr,                 \
                    kodo::sdk::detail::DurabilityThunks<CLASS>::table()});                      \
    return kodo::sdk::detail::negotiate(host_min, host_max,                                     \
                                        KODO_KIND_MIN_ABI(KODO_KIND_DURABILITY), descriptors,   \
                                        plugin_out, abi_out, error);                            \
  }

#endif  // KODO_DURABILITY_HPP
