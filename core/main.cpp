// kodo-host: the minimal host. Loads the backends named in config and runs one of:
//   serve                  HTTP API + executor + spooler (the default stack)
//   spool                  a standalone spooler (for cross-process transports)
//   worker                 runs the jobs of a durability plugin (execution-mode temporal)
//   plugins list           what is in --plugin-dir
//   plugins describe NAME  a plugin's options, capabilities and versions
//   db create-tables       make the storage schema (idempotent)
//   db purge --older-than  delete executions older than a retention
#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>
#include "core/api.hpp"
#include "core/fd_limit.hpp"
#include "core/host_options.hpp"
#include "core/host_users.hpp"
#include "core/http_response.hpp"
#include "core/job_worker.hpp"
#include "core/lock_resume.hpp"
#include "core/lost_events.hpp"
#include "core/run_journal.hpp"
#include "core/spooler.hpp"

#include <pthread.h>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <thread>

namespace kodo {
namespace {

const char *const kUsage =
    "usage: kodo-host [options] COMMAND\n"
    "\n"
    "commands:\n"
    "  serve                       run the HTTP API, the executor and a spooler\n"
    "  spool                       run a standalone spooler (cross-process transports)\n"
    "  worker                      run the flows of durable jobs (execution-mode temporal;\n"
    "                              also temporal-worker)\n"
    "  plugins list                list the plugins in --plugin-dir\n"
    "  plugins describe NAME|PATH  show a plugin's options, capabilities and versions\n"
    "  db create-tables            make the storage schema (idempotent)\n"
    "  db purge --older-than AGE   delete executions older than AGE (e.g. 30d)\n"
    "  users list                  the accounts in --admin-database (kodosumi's roles)\n"
    "  users add NAME EMAIL        add an account; its password is read from standard input\n"
    "  users passwd NAME           set an account's password (from standard input)\n"
    "  users disable|enable NAME   refuse or allow an account's logins\n"
    "  users operator NAME on|off  let an account see and manage every user's executions\n"
    "\n"
    "Every option can also be set in the config file (--config) or as KODO_<NAME>\n"
    "(e.g. --exec-dir is KODO_EXEC_DIR); the command line wins over the environment,\n"
    "which wins over the file.\n";

// SIGINT/SIGTERM are blocked in every thread and taken by sigwait in the main thread, so
// shutdown runs in ordinary code. Children get an empty mask from the executor.
sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

int wait_for_shutdown_signal() {
  sigset_t set = shutdown_signals();
  int signal_number = 0;
  sigwait(&set, &signal_number);
  return signal_number;
}

std::shared_ptr<Plugin> load_kind(const HostConfig &config, const std::string &name, int32_t kind) {
  return Plugin::load(name, config.plugin_dir, kind);
}

std::unique_ptr<Storage> open_storage(const HostConfig &config) {
  auto plugin = load_kind(config, config.storage, KODO_KIND_STORAGE);
  auto options = resolve_plugin_options(*plugin, config.storage_options);
  return std::make_unique<Storage>(plugin, options);
}

std::unique_ptr<Transport> open_transport(const HostConfig &config) {
  auto plugin = load_kind(config, config.transport, KODO_KIND_TRANSPORT);
  auto options = resolve_plugin_options(*plugin, config.transport_options);
  return std::make_unique<Transport>(plugin, options);
}

std::unique_ptr<Durability> open_durability(const HostConfig &config) {
  if (config.execution_mode == "direct")
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "this command needs a durability plugin: set execution-mode "
                "(KODO_EXECUTION_MODE), e.g. temporal");
  auto plugin = load_kind(config, config.execution_mode, KODO_KIND_DURABILITY);
  auto options = resolve_plugin_options(*plugin, config.durability_options);
  return std::make_unique<Durability>(plugin, options);
}

// Deletes executions older than the retention every interval, until stopped.
class RetentionTask {
 public:
  RetentionTask(Storage &storage, double retention_s, double interval_s)
      : storage_(storage), retention_s_(retention_s), interval_s_(interval_s) {
    if (retention_s_ > 0 && storage_.has(KODO_STORAGE_CAP_PURGE))
      thread_ = std::thread([this] { run(); });
    else if (retention_s_ > 0)
      log_warn(storage_.plugin().label() + " cannot purge: --retention is ignored");
  }
  RetentionTask(const RetentionTask &) = delete;  // its thread holds `this`
  RetentionTask &operator=(const RetentionTask &) = delete;
  ~RetentionTask() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      lock.unlock();
      try {
        int64_t purged = storage_.purge(now_seconds() - retention_s_);
        if (purged > 0) log_info("retention: purged " + std::to_string(purged) + " executions");
      } catch (const Error &e) {
        log_error(std::string("retention: ") + e.what());
      }
      lock.lock();
      wake_.wait_for(lock, std::chrono::duration<double>(interval_s_), [this] { return stop_; });
    }
  }
  Storage &storage_;
  double retention_s_, interval_s_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

// The HTTP server's options from the host's.
HttpServer::Options http_options(const HostConfig &config, const FdBudget &fds) {
  HttpServer::Options o;
  o.address = config.address;
  o.max_connections = config.http_max_connections ? config.http_max_connections : fds.connections;
  o.idle_timeout_ms = static_cast<int>(config.http_head_timeout_s * 1000);
  o.body_timeout_ms = static_cast<int>(config.http_body_timeout_s * 1000);
  o.io_threads = config.http_io_threads;
  o.handler_threads = config.http_handler_threads;
  o.stream_buffer_bytes = config.sse_viewer_buffer;
  o.stream_buffer_total_bytes = config.sse_buffer_total;
  o.limits.max_header_bytes = config.http_max_header_bytes;
  o.limits.max_body_bytes = config.http_max_body_bytes;
  o.tls_cert = config.tls_cert;
  o.tls_key = config.tls_key;
  return o;
}

// "https://host:port" as the log shows where the API is.
std::string served_at(const HostConfig &config, uint16_t port) {
  const ListenAddress bound = parse_listen_address(config.address);
  std::string host = bound.host.empty() ? std::string("0.0.0.0") : bound.host;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return (config.tls_cert.empty() ? "http://" : "https://") + host + ":" + std::to_string(port);
}

int serve(const HostConfig &given) {
  const FdBudget fds = raise_open_files_limit();
  HostConfig config = given;
  // A default only: an explicit storage option wins.
  config.storage_options.host_defaults.emplace_back("max_open_databases",
                                                    std::to_string(fds.open_databases));
  // First: a host that must not listen as configured stops before it opens anything.
  std::unique_ptr<Auth> auth = open_auth_for_serve(config);
  if (auth)
    config.executor.run_token = [&auth](const std::string &user, const std::string &fid,
                                        double lifetime_s) {
      return auth->flow_token(user, fid, lifetime_s);
    };
  auto storage = open_storage(config);
  auto transport = open_transport(config);
  if (!config.run_spooler && !transport->has(KODO_TRANSPORT_CAP_CROSS_PROCESS))
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                transport->plugin().label() +
                    " carries events only inside this process: serve needs its own spooler "
                    "(drop --no-spooler)");
  Metrics metrics;
  StoreNotifier notifier;
  LostEventsWatch lost_events(*storage, metrics);
  TransportSink transport_sink(*transport, config.publish_timeout_ms, &metrics.events_published);
  // Beside the exec dir: the journals of this machine's hosts (see run_journal.hpp).
  std::filesystem::path exec_dir = std::filesystem::path(config.exec_dir).lexically_normal();
  if (!exec_dir.has_filename()) exec_dir = exec_dir.parent_path();  // it ended with '/'
  RunJournal journal((exec_dir.parent_path() / "kodo-hosts").string());
  JournalingSink sink(transport_sink, journal);
  Executor executor(config.executor, config.flows, sink);
  log_info("runs are contained by " + executor.containment());
  SseHubConfig hub_config;
  hub_config.json_max_depth = config.json_max_depth;
  hub_config.keepalive_s = config.sse_keepalive_s;
  hub_config.batch_s = config.sse_batch_s;
  hub_config.sent_latency = &metrics.sse_sent_latency;
  SseHub hub(*storage, executor, hub_config);
  hub.start();
  StatusCache status_cache;
  std::unique_ptr<Spooler> spooler;
  if (config.run_spooler) {
    spooler = std::make_unique<Spooler>(
        config.spooler, *transport, *storage, metrics,
        std::vector<StoredObserver *>{&notifier, &lost_events, &hub, &status_cache});
    spooler->start();
  }
  reconcile_dead_hosts(journal, *storage, sink,
                       [&](const RunJournal::Orphan &orphan, const ExecutionInfo &info) {
                         return resume_awaiting_run(executor, *storage, orphan, info);
                       });
  ApiContext context{*storage,
                     executor,
                     metrics,
                     spooler ? &notifier : nullptr,
                     config.default_user,
                     /*delete_wait_s=*/config.shutdown_grace_s + 20,
                     transport->plugin().name(),
                     transport.get()};
  context.json_max_depth = config.json_max_depth;
  context.hub = &hub;
  // Without a spooler here, nothing would drop an answer when more is stored.
  if (spooler) context.status_cache = &status_cache;
  context.auth = auth.get();
  // Launches become durable jobs that `kodo-host worker` processes run.
  std::unique_ptr<Durability> durability;
  if (config.execution_mode != "direct") {
    durability = open_durability(config);
    context.durability = durability.get();
    context.app_url = config.executor.app_url;
    log_info("launches go through " + durability->plugin().label());
  }
  const RequestGuard guard(config.allowed_hosts, config.address);
  context.guard = &guard;
  std::unique_ptr<Api> api;
  HttpServer::Options server_options = http_options(config, fds);
  server_options.quick_handler = [&api](const HttpRequest &request, HttpResponder &response) {
    return api->handle_quick(request, response);
  };
  HttpServer server(server_options, [&api](const HttpRequest &request, HttpResponder &response) {
    api->handle(request, response);
  });
  context.server = &server;
  api = std::make_unique<Api>(context);
  server.start();
  log_info("open files: limit " + std::to_string(fds.limit) +
           (fds.was != fds.limit ? " (raised from " + std::to_string(fds.was) + ")" : "") +
           "; up to " + std::to_string(server_options.max_connections) + " connections, " +
           std::to_string(fds.open_databases) + " databases kept open");
  RetentionTask retention(*storage, config.retention_s, config.purge_interval_s);
  log_info("kodo-host " KODO_VERSION " serving on " + served_at(config, server.port()) +
           " for host names " + guard.describe() + " (storage " + storage->plugin().name() +
           ", transport " + transport->plugin().name() + ", " +
           std::to_string(config.flows.size()) + " flows, data in " + config.exec_dir + ")");

  int signal_number = wait_for_shutdown_signal();
  log_info(std::string("received ") + (signal_number == SIGINT ? "SIGINT" : "SIGTERM") +
           ": stopping the API, ending runs, draining the spooler");
  hub.stop();  // streams end; their clients reconnect with Last-Event-ID
  server.stop();
  executor.shutdown(config.shutdown_grace_s);
  if (spooler) spooler->stop_and_drain();
  log_info("stopped: " + std::to_string(metrics.events_stored.load()) + " events stored");
  return 0;
}

// What a process without the API (spool, worker) says on /health: each part up or down.
struct HealthPart {
  const char *name;
  bool up;
};

// /health and /metrics only, on --address when it was given (null otherwise), so that each
// spooler or worker of a fleet can be watched on its own; `who` names it in the log.
std::unique_ptr<HttpServer> start_watch_server(const HostConfig &config, const std::string &who,
                                               std::function<std::vector<HealthPart>()> health,
                                               std::function<std::string()> metrics) {
  if (!config.address_given) return nullptr;
  HttpServer::Options options;
  options.address = config.address;
  options.tls_cert = config.tls_cert;
  options.tls_key = config.tls_key;
  auto server = std::make_unique<HttpServer>(
      options,
      [who, guard = RequestGuard(config.allowed_hosts, config.address), health = std::move(health),
       metrics = std::move(metrics)](const HttpRequest &request, HttpResponder &response) {
        if (auto refusal = guard.check(request)) {
          response.send(refusal->status, "application/json", json_error(refusal->message));
        } else if (request.method != "GET") {
          response.send(405, "text/plain", "only GET\n");
        } else if (request.path == "/metrics") {
          response.send(200, "text/plain; version=0.0.4", metrics());
        } else if (request.path == "/health") {
          const auto parts = health();
          const bool up = std::all_of(parts.begin(), parts.end(),
                                      [](const HealthPart &part) { return part.up; });
          std::string body = std::string("{\"status\":\"") + (up ? "ok" : "degraded") + "\"";
          for (const auto &part : parts)
            body += std::string(",\"") + part.name + "\":\"" + (part.up ? "up" : "down") + "\"";
          response.send(up ? 200 : 503, "application/json", body + "}");
        } else {
          response.send(404, "text/plain", who + " serves only /health and /metrics\n");
        }
      });
  server->start();
  log_info("kodo-host " + who + ": metrics on " + served_at(config, server->port()) + "/metrics");
  return server;
}

// Runs durable jobs: each attempt is an executor run whose events go out through the
// transport as in direct mode (and are stored here when the transport is in-process).
int worker(const HostConfig &config) {
  auto storage = open_storage(config);
  auto transport = open_transport(config);
  auto durability = open_durability(config);
  Metrics metrics;
  TransportSink transport_sink(*transport, config.publish_timeout_ms, &metrics.events_published);
  OutcomeSink outcomes(transport_sink);
  Executor executor(config.executor, config.flows, outcomes);
  std::unique_ptr<Spooler> spooler;
  if (!transport->has(KODO_TRANSPORT_CAP_CROSS_PROCESS)) {
    spooler = std::make_unique<Spooler>(config.spooler, *transport, *storage, metrics,
                                        std::vector<StoredObserver *>{});
    spooler->start();
  }
  const JobWorkerConfig job_config;
  durability->start_worker([&](HostJob &job) {
    return run_job_attempt(job, executor, outcomes, storage.get(), job_config);
  });
  log_info("kodo-host worker: " + durability->plugin().label() + ", " +
           std::to_string(config.flows.size()) + " flows, runs contained by " +
           executor.containment());
  auto server = start_watch_server(
      config, "worker",
      [&] {
        std::vector<HealthPart> parts;
        if (spooler) parts.push_back({"storage", metrics.storage_up.load() != 0});
        parts.push_back({"transport", transport->up()});
        parts.push_back({"durability", reports_up(durability_metrics(*durability))});
        return parts;
      },
      [&] { return metrics_text(metrics, {}, *storage, transport.get(), durability.get()); });
  const int signal_number = wait_for_shutdown_signal();
  log_info(std::string("received ") + (signal_number == SIGINT ? "SIGINT" : "SIGTERM") +
           ": handing running jobs back");
  if (server) server->stop();
  durability->stop_worker();
  executor.shutdown(config.shutdown_grace_s);
  if (spooler) spooler->stop_and_drain();
  return 0;
}

int spool(const HostConfig &config) {
  auto storage = open_storage(config);
  auto transport = open_transport(config);
  if (!transport->has(KODO_TRANSPORT_CAP_CROSS_PROCESS))
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                transport->plugin().label() +
                    " carries events only inside one kodo-host process; a standalone spooler "
                    "needs a cross-process transport (such as redis)");
  Metrics metrics;
  SpoolerConfig spooler_config = config.spooler;
  spooler_config.stop_at_once = true;
  LostEventsWatch lost_events(*storage, metrics);
  Spooler spooler(spooler_config, *transport, *storage, metrics, {&lost_events});
  spooler.start();
  log_info("kodo-host spool: group " + config.spooler.group + ", storage " +
           storage->plugin().name() + ", transport " + transport->plugin().name());
  auto server = start_watch_server(
      config, "spool",
      [&] {
        return std::vector<HealthPart>{{"storage", metrics.storage_up.load() != 0},
                                       {"transport", transport->up()}};
      },
      [&] { return metrics_text(metrics, {}, *storage, transport.get()); });
  wait_for_shutdown_signal();
  log_info("stopping: draining what was read");
  if (server) server->stop();
  spooler.stop_and_drain();
  log_info("stopped: " + std::to_string(metrics.events_stored.load()) + " events stored");
  return 0;
}

int plugins_list(const HostConfig &config) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto &entry : fs::directory_iterator(config.plugin_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("kodo-", 0) == 0 && entry.path().extension() == ".so")
      files.push_back(entry.path());
  }
  if (ec)
    throw Error(KODO_ERR_IO,
                "cannot read plugin directory " + config.plugin_dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  (void)std::printf("plugins in %s:\n", config.plugin_dir.c_str());
  for (const auto &file : files) {
    try {
      auto plugin = Plugin::load(file.string(), config.plugin_dir, 0);
      (void)std::printf("  %-10s %-10s %-8s ABI %u  %s\n", plugin->name().c_str(),
                        kind_name(plugin->kind()), plugin->version(), plugin->abi_version(),
                        plugin->description());
    } catch (const Error &e) {
      (void)std::printf("  %s: cannot load: %s\n", file.filename().c_str(), e.what());
    }
  }
  return 0;
}

int plugins_describe(const HostConfig &config, const std::string &name) {
  std::vector<std::string> tried;
  for (int32_t kind : {KODO_KIND_STORAGE, KODO_KIND_TRANSPORT, KODO_KIND_DURABILITY}) {
    const std::string file = plugin_file_for(name, config.plugin_dir, kind);
    if (std::filesystem::exists(file)) {
      std::cout << describe_plugin(*Plugin::load(file, "", 0));
      return 0;
    }
    tried.push_back(file);
  }
  throw Error(KODO_ERR_NOT_FOUND, "no plugin '" + name + "': none of " + tried[0] + ", " +
                                      tried[1] + ", " + tried[2] + " exists");
}

int run(int argc, char **argv) {
  po::options_description command_options("Command options");
  command_options.add_options()("older-than", po::value<std::string>(),
                                "db purge: the age, e.g. 30d, 12h, 3600");
  HostConfig config;
  ParsedCommandLine parsed = parse_command_line(argc, argv, command_options, config);
  set_log_level(parse_log_level(config.log_level));
  const auto &words = parsed.positional;
  if (parsed.values.count("version")) {
    (void)std::printf("kodo-host %s (plugin ABI %u..%u)\n", KODO_VERSION, kHostAbiMin, kHostAbiMax);
    return 0;
  }
  if (parsed.values.count("help") || words.empty()) {
    std::cout << kUsage << "\n" << host_option_descriptions() << command_options;
    return words.empty() && !parsed.values.count("help") ? 2 : 0;
  }
  auto expect_words = [&](size_t n) {
    if (words.size() != n)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "`" + words[0] + "` takes " + std::to_string(n - 1) +
                                                 " word(s) after it; see --help");
  };
  const std::string &command = words[0];
  if (command == "serve") {
    expect_words(1);
    return serve(config);
  }
  if (command == "spool") {
    expect_words(1);
    return spool(config);
  }
  if (command == "worker" || command == "temporal-worker") {
    expect_words(1);
    return worker(config);
  }
  if (command == "plugins" && words.size() >= 2 && words[1] == "list") {
    expect_words(2);
    return plugins_list(config);
  }
  if (command == "plugins" && words.size() >= 2 && words[1] == "describe") {
    expect_words(3);
    return plugins_describe(config, words[2]);
  }
  if (command == "users") return users_command(config, words);
  if (command == "db" && words.size() >= 2 && words[1] == "create-tables") {
    expect_words(2);
    auto storage = open_storage(config);
    storage->create_schema();
    (void)std::printf("schema ready in %s\n", storage->plugin().label().c_str());
    return 0;
  }
  if (command == "db" && words.size() >= 2 && words[1] == "purge") {
    expect_words(2);
    if (!parsed.values.count("older-than"))
      throw Error(KODO_ERR_INVALID_ARGUMENT, "db purge needs --older-than AGE (e.g. 30d)");
    double age = parse_duration(parsed.values["older-than"].as<std::string>(), "--older-than");
    auto storage = open_storage(config);
    int64_t purged = storage->purge(now_seconds() - age);
    (void)std::printf("purged %lld executions\n", static_cast<long long>(purged));
    return 0;
  }
  throw Error(KODO_ERR_INVALID_ARGUMENT, "unknown command '" + command +
                                             (words.size() > 1 ? " " + words[1] : "") +
                                             "'; see kodo-host --help");
}

// The commands print their answers with printf and iostreams without checking each write:
// a failed write leaves stdout's error flag set, and this checks it once at the end, so
// `kodo-host plugins list >/dev/full` fails instead of reporting success. (A failed write
// to stderr has nowhere to be reported.)
int finish_output(int status) {
  std::cout.flush();
  const bool failed = !std::cout || std::fflush(stdout) != 0 || std::ferror(stdout) != 0;
  if (!failed || status != 0) return status;
  (void)std::fputs("kodo-host: cannot write to standard output\n", stderr);
  return 1;
}

}  // namespace
}  // namespace kodo

int main(int argc, char **argv) {
  sigset_t set = kodo::shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  if (std::signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
    (void)std::fputs("kodo-host: cannot ignore SIGPIPE\n", stderr);
    return 1;
  }
  int status = 1;
  try {
    status = kodo::run(argc, argv);
  } catch (const kodo::Error &e) {
    (void)std::fprintf(stderr, "kodo-host: %s\n", e.what());
    status = e.code() == KODO_ERR_INVALID_ARGUMENT || e.code() == KODO_ERR_NOT_FOUND ||
                     e.code() == KODO_ERR_ABI_MISMATCH
                 ? 2
                 : 1;
  } catch (const std::exception &e) {
    (void)std::fprintf(stderr, "kodo-host: %s\n", e.what());
  }
  return kodo::finish_output(status);
}
