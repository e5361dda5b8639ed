// redis_server.hpp: a real Redis for tests, run in the foreground on its own loopback port with a
// password, its data (append-only file) in a scratch directory, so a restart keeps what it held.
#pragma once

#include "service_process.hpp"

#include <filesystem>

namespace kodo::testing {

class RedisServer {
 public:
  static constexpr const char *kPassword = "r3dis-pw";

  RedisServer() : dir_("kodo-redis") {
    log_ = dir_.path() + "/server.log";
    port_ = free_loopback_port();
  }

  // Starts the server (again, on the same port and data) and waits until it answers PING.
  void start() {
    process_.start({binary(), "--port", std::to_string(port_), "--bind", "127.0.0.1", "--dir",
                    dir_.path(), "--appendonly", "yes", "--save", "", "--requirepass", kPassword,
                    "--daemonize", "no", "--protected-mode", "yes", "--logfile", ""},
                   "", log_);
    if (!process_.wait_until([&] { return cli({"PING"}) == "PONG"; }))
      throw std::runtime_error("redis-server did not come up: " + slurp(log_));
  }

  // SIGTERM: Redis writes its append-only file and exits, as in a real restart.
  void stop() { process_.stop(SIGTERM); }
  void restart() {
    stop();
    start();
  }
  // As a Redis without persistence, or a failover to an empty replica: back, with nothing.
  void restart_empty() {
    stop();
    std::filesystem::remove_all(dir_.path() + "/appendonlydir");
    std::filesystem::remove(dir_.path() + "/dump.rdb");
    start();
  }
  bool running() { return process_.running(); }

  int port() const { return port_; }
  std::string url() const {
    return std::string("redis://:") + kPassword + "@127.0.0.1:" + std::to_string(port_) + "/0";
  }
  std::string log() const { return slurp(log_); }

  // Runs one command with redis-cli; returns its raw output without the last newline.
  std::string cli(const std::vector<std::string> &args) const {
    std::vector<std::string> all = {cli_binary(), "-p",        std::to_string(port_),
                                    "-h",         "127.0.0.1", "--no-auth-warning",
                                    "-a",         kPassword};
    all.insert(all.end(), args.begin(), args.end());
    const std::string out_path = dir_.path() + "/cli.out";
    run_as(all, "", out_path + ".tmp");
    std::string out = slurp(out_path + ".tmp");
    unlink((out_path + ".tmp").c_str());
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    return out;
  }

  static std::string binary() {
    const char *env = std::getenv("KODO_TEST_REDIS_SERVER");
    return env ? env : "/usr/bin/redis-server";
  }
  static std::string cli_binary() {
    const char *env = std::getenv("KODO_TEST_REDIS_CLI");
    return env ? env : "/usr/bin/redis-cli";
  }

 private:
  TempDir dir_;
  std::string log_;
  int port_ = 0;
  ServiceProcess process_;
};

}  // namespace kodo::testing
