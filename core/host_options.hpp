// host_options.hpp: one options model for the command line, the INI config file and KODO_*
// environment variables (precedence: command line, environment, file, defaults), with
// kodosumi's setting names where they exist. kodo-host and kodo-bench share it.
#pragma once

#include <kodo/host/plugin_options.hpp>
#include "core/auth.hpp"
#include "core/executor.hpp"
#include "core/spooler.hpp"

#include <boost/program_options.hpp>

#include <string>
#include <vector>

namespace kodo {

namespace po = boost::program_options;

struct HostConfig {
  std::string config_file;
  std::string plugin_dir;
  std::string storage = "sqlite";
  std::string transport = "inproc";
  // "direct", or the durability plugin that runs flows (kodo-<durability>.so: "temporal").
  std::string execution_mode = "direct";
  PluginOptionSources storage_options;
  PluginOptionSources transport_options;
  PluginOptionSources durability_options;
  std::string exec_dir = "./data/execution";
  std::string address = "127.0.0.1:3370";
  bool address_given = false;  // spool serves /health and /metrics only when asked to
  std::string default_user = "admin";
  AuthConfig auth;
  std::string log_level = "info";
  std::vector<FlowSpec> flows;
  ExecutorConfig executor;
  SpoolerConfig spooler;
  bool run_spooler = true;        // serve: also spool in this process
  int publish_timeout_ms = 5000;  // how long a producer waits on a full transport
  double retention_s = 0;         // purge executions older than this; 0 keeps everything
  double purge_interval_s = 3600;
  double sse_keepalive_s = 3;       // kodosumi's `alive` every 3 s
  double sse_batch_s = 0.02;        // least time between two sends to one execution's viewers
  size_t http_max_connections = 0;  // 0: from the open-files limit
  size_t http_max_header_bytes = 16384;
  size_t http_max_body_bytes = size_t{8} << 20;
  size_t json_max_depth = 64;
  double http_head_timeout_s = 30;
  double http_body_timeout_s = 60;
  size_t http_io_threads = 2;
  size_t http_handler_threads = 16;
  size_t sse_viewer_buffer = size_t{256} << 10;
  size_t sse_buffer_total = size_t{256} << 20;
  double shutdown_grace_s = 10;
  std::string tls_cert;  // both or neither: HTTPS
  std::string tls_key;
  std::vector<std::string> allowed_hosts;  // empty: the defaults (see request_guard.hpp)
};

// The options every command understands, grouped for --help.
po::options_description host_option_descriptions();

struct ParsedCommandLine {
  po::variables_map values;
  std::vector<std::string> positional;  // the command and its arguments
};

// Parses argv (with `extra` options of a specific program added), the KODO_* environment
// and the config file named by --config / KODO_CONFIG. Throws kodo::Error naming the
// option, variable, file or line that is wrong.
ParsedCommandLine parse_command_line(int argc, const char *const *argv,
                                     const po::options_description &extra, HostConfig &config);

// The plugin directory next to the executable: <exe>/../plugins (build tree) or
// <exe>/../lib/kodo/plugins (installed).
std::string default_plugin_dir(const char *argv0);

// Parses "30d", "12h", "15m", "90s" or plain seconds; throws naming `what`.
double parse_duration(const std::string &text, const std::string &what);

}  // namespace kodo
