#include "core/host_options.hpp"

#include <kodo/host/error.hpp>
#include "core/flow_env.hpp"

#include <kodo/url.hpp>

#include <unistd.h>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string_view>

extern char **environ;

namespace kodo {

namespace fs = std::filesystem;

constexpr unsigned kHelpWidth = 100;

po::options_description host_option_descriptions() {
  po::options_description general("General", kHelpWidth);
  general.add_options()("help,h", "show this help")("version", "print the version")(
      "config,c", po::value<std::string>(), "INI config file (also KODO_CONFIG)")(
      "plugin-dir", po::value<std::string>(),
      "where short plugin names are looked up (default: beside the executable)")(
      "log-level", po::value<std::string>()->default_value("info"), "debug, info, warn or error");

  po::options_description backends("Backends", kHelpWidth);
  backends.add_options()(
      "storage", po::value<std::string>()->default_value("sqlite"),
      "storage plugin: a short name (kodo-storage-NAME.so in --plugin-dir) or a path")(
      "transport", po::value<std::string>()->default_value("inproc"),
      "transport plugin: short name or path (also KODO_EVENT_TRANSPORT)")(
      "execution-mode", po::value<std::string>()->default_value("direct"),
      "direct: the host runs flows itself; otherwise the durability plugin that runs them "
      "(temporal: launches become Temporal workflows, run by `kodo-host worker`)")(
      "durability", po::value<std::string>(),
      "the same as execution-mode (the fork's `durability = temporal`)")(
      "durability-option", po::value<std::vector<std::string>>()->composing(),
      "KEY=VALUE for the durability plugin (repeatable)")(
      "execution-database", po::value<std::string>(),
      "kodosumi's KODO_EXECUTION_DATABASE: a postgresql:// URL selects storage postgres "
      "with that url")("storage-option", po::value<std::vector<std::string>>()->composing(),
                       "KEY=VALUE for the storage plugin (repeatable; see `plugins describe`)")(
      "transport-option", po::value<std::vector<std::string>>()->composing(),
      "KEY=VALUE for the transport plugin (repeatable)")(
      "exec-dir", po::value<std::string>()->default_value("./data/execution"),
      "where executions are kept (storages that declare exec_dir)");

  po::options_description server("HTTP API", kHelpWidth);
  server.add_options()(
      "address", po::value<std::string>()->default_value("127.0.0.1:3370"),
      "listen address: host:port or http://host:port (spool: /health and /metrics, only when "
      "given)")("default-user", po::value<std::string>()->default_value("admin"),
                "the user every request acts as while logins are off (--auth)")(
      "sse-keepalive", po::value<double>()->default_value(3), "seconds between SSE `alive` events")(
      "http-max-connections", po::value<size_t>()->default_value(0),
      "open client connections at most (more get 503); 0: sized from the open-files limit")(
      "http-max-header-bytes", po::value<size_t>()->default_value(16384),
      "a request's head (request line and header fields) at most; more gets 431")(
      "http-max-body-bytes", po::value<size_t>()->default_value(size_t{8} << 20),
      "a request body at most; more gets 413")(
      "http-json-depth", po::value<size_t>()->default_value(64),
      "JSON nesting at most in request bodies (deeper gets 400) and in stored payloads rendered")(
      "http-head-timeout", po::value<double>()->default_value(30),
      "seconds a request head may take, whole (also the idle time of a kept-alive connection)")(
      "http-body-timeout", po::value<double>()->default_value(60),
      "seconds a request body may take, whole")("http-io-threads",
                                                po::value<size_t>()->default_value(2),
                                                "threads running every connection's I/O")(
      "http-handler-threads", po::value<size_t>()->default_value(16),
      "threads answering requests (event streams do not hold one)")(
      "sse-viewer-buffer", po::value<size_t>()->default_value(size_t{256} << 10),
      "bytes waiting for one stream viewer at most; a viewer this far behind is cut off")(
      "sse-buffer-total", po::value<size_t>()->default_value(size_t{256} << 20),
      "bytes waiting for all connections together; past this, viewers more than 64 KiB behind "
      "are cut off first")(
      "sse-batch", po::value<double>()->default_value(0.02),
      "seconds at least between two sends to one execution's viewers: events committed "
      "meanwhile go out in one write per viewer (0: every commit at once)")(
      "tls-cert", po::value<std::string>()->default_value(""),
      "PEM certificate chain: serve HTTPS (with --tls-key)")(
      "tls-key", po::value<std::string>()->default_value(""),
      "PEM private key of --tls-cert (unencrypted; keep it readable by this user only)")(
      "allowed-hosts", po::value<std::string>()->default_value(""),
      "comma-separated host names the API answers to (the Host header; others get 421); "
      "default: localhost, 127.0.0.1, ::1 and the --address host; * for any");

  po::options_description flows("Flows", kHelpWidth);
  flows.add_options()("flow", po::value<std::vector<std::string>>()->composing(),
                      "NAME=COMMAND: register a flow (repeatable)")(
      "flow-arg", po::value<std::vector<std::string>>()->composing(),
      "NAME=ARG: one more argument for a flow's command")(
      "flow-env", po::value<std::vector<std::string>>()->composing(),
      "NAME=KEY=VALUE: an environment variable for a flow; NAME=KEY passes the host's KEY")(
      "flow-cwd", po::value<std::vector<std::string>>()->composing(),
      "NAME=DIR: a flow's working directory")(
      "flow-timeout", po::value<std::vector<std::string>>()->composing(),
      "NAME=SECONDS: end a run that takes longer, with an error")(
      "flow-description", po::value<std::vector<std::string>>()->composing(),
      "NAME=TEXT: shown in meta and /api/v1/flows")(
      "max-running", po::value<size_t>()->default_value(16),
      "flow processes running at once; more launches wait")(
      "max-event-bytes", po::value<size_t>()->default_value(1 << 20),
      "longest event line a flow may write")(
      "kill-grace", po::value<double>()->default_value(5),
      "seconds between SIGTERM and SIGKILL when a run is stopped")(
      "app-url", po::value<std::string>()->default_value(""), "app_url reported in meta");

  po::options_description spool("Spooler", kHelpWidth);
  spool.add_options()("spooler-batch-size", po::value<size_t>()->default_value(1000),
                      "most events per storage commit")(
      "spooler-batch-timeout", po::value<double>()->default_value(0.005, "0.005"),
      "seconds a batch may wait to fill after its first event")(
      "spooler-interval", po::value<double>()->default_value(0.25), "seconds one idle read blocks")(
      "spoolers", po::value<size_t>()->default_value(1), "consumer threads in this process")(
      "spooler-group", po::value<std::string>()->default_value("kodo-spooler"),
      "consumer group (also KODO_REDIS_CONSUMER_GROUP)")(
      "spooler-name", po::value<std::string>()->default_value(""),
      "consumer name (default spooler-<host>-<pid>)")(
      "no-spooler", po::bool_switch(), "serve without spooling (run `kodo-host spool` too)")(
      "publish-timeout", po::value<double>()->default_value(5),
      "seconds a producer waits on a full transport before the run fails")(
      "retention", po::value<std::string>()->default_value(""),
      "serve: purge executions older than this, e.g. 30d (off when empty)")(
      "purge-interval", po::value<std::string>()->default_value("1h"),
      "how often the retention purge runs")("shutdown-grace",
                                            po::value<double>()->default_value(10),
                                            "seconds running flows get to end when the host stops");

  po::options_description accounts("Accounts and login (kodosumi's settings)", kHelpWidth);
  accounts.add_options()(
      "auth", po::value<std::string>()->default_value("auto"),
      "auto: logins are required when the admin database exists or the address is not "
      "loopback; on; off: every request acts as --default-user (loopback only)")(
      "admin-database",
      po::value<std::string>()->default_value("sqlite+aiosqlite:///./data/admin.db"),
      "kodosumi's accounts database: sqlite+aiosqlite:///PATH or postgresql+asyncpg://...")(
      "admin-email", po::value<std::string>()->default_value("admin@example.com"),
      "the email of the account `admin` made on first start")(
      "admin-password", po::value<std::string>(),
      "the password of `admin` made on first start (default kodosumi's \"admin\"; on a "
      "non-loopback address one is generated and printed once)")(
      "secret-key", po::value<std::string>(),
      "the tokens' HS256 signing key (kodosumi's KODO_SECRET_KEY: the same key makes tokens "
      "valid on both); default: a random key kept in --secret-key-file")(
      "secret-key-file", po::value<std::string>()->default_value("./data/secret.key"),
      "where the generated signing key is kept (mode 0600)")(
      "login-failures", po::value<size_t>()->default_value(5),
      "failed logins per client, and per account, within --login-window; more get 429")(
      "login-window", po::value<double>()->default_value(60), "seconds failed logins count");

  po::options_description all(kHelpWidth);
  all.add(general).add(backends).add(server).add(accounts).add(flows).add(spool);
  return all;
}

// A URL as it may be shown: any password replaced (see kodo/url.hpp); a URL that does not parse
// is not shown at all, since where its password starts is unknown.
static std::string redacted_url(const std::string &url) {
  try {
    return sdk::parse_url(url).redacted();
  } catch (const Error &) {
    return "(a URL that does not parse)";
  }
}

// Boost.Program_options 1.74 loops forever in error::what() when an option name or value it
// quotes holds one of its own placeholders ("%value%", "%canonical_option%", ...): it replaces
// each placeholder until none is left. Input holding such a sequence gets our own message.
static bool has_placeholder(std::string_view text) {
  for (size_t at = text.find('%'); at != std::string_view::npos; at = text.find('%', at + 1)) {
    size_t end = at + 1;
    while (end < text.size() && ((text[end] >= 'a' && text[end] <= 'z') || text[end] == '_')) ++end;
    if (end > at + 1 && end < text.size() && text[end] == '%') return true;
  }
  return false;
}

static std::string option_error(const po::error &e, bool input_has_placeholder) {
  if (input_has_placeholder)
    return "an option name or value holds a '%word%' sequence, which cannot be quoted here; "
           "remove the '%' signs";
  return e.what();
}

static std::string env_name_for(const std::string &option) {
  std::string out = "KODO_";
  for (char c : option)
    out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// "a, b,,c" -> {"a", "b", "c"}
static std::vector<std::string> split_list(const std::string &text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t first = item.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    out.push_back(item.substr(first, item.find_last_not_of(" \t") - first + 1));
  }
  return out;
}

double parse_duration(const std::string &text, const std::string &what) {
  if (text.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, what + " is empty");
  char *end = nullptr;
  errno = 0;
  double value = std::strtod(text.c_str(), &end);
  std::string unit = end ? end : "";
  double scale = unit.empty() || unit == "s" ? 1
                 : unit == "ms"              ? 0.001
                 : unit == "m"               ? 60
                 : unit == "h"               ? 3600
                 : unit == "d"               ? 86400
                                             : -1;
  if (errno != 0 || end == text.c_str() || scale < 0 || !std::isfinite(value) || value < 0)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                what + " '" + text + "' is not a duration (like 90s, 15m, 12h, 30d)");
  return value * scale;
}

// Splits a command like a shell would for words and quotes (no expansion).
static std::vector<std::string> split_command(const std::string &text, const std::string &flow) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quote) {
      if (c == quote) {
        quote = 0;
      } else if (c == '\\' && quote == '"' && i + 1 < text.size()) {
        word += text[++i];
      } else {
        word += c;
      }
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < text.size()) {
      word += text[++i];
      in_word = true;
    } else if (std::isspace(static_cast<unsigned char>(c))) {
      if (in_word) words.push_back(word);
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (quote)
    throw Error(KODO_ERR_INVALID_ARGUMENT, "command of flow '" + flow + "' has an unclosed quote");
  if (in_word) words.push_back(word);
  if (words.empty())
    throw Error(KODO_ERR_INVALID_ARGUMENT, "flow '" + flow + "' has an empty command");
  return words;
}

static void check_flow_name(const std::string &name) {
  bool ok = !name.empty() && name.size() <= 64;
  for (char c : name)
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.');
  if (!ok)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "invalid flow name '" + name + "': use letters, digits, '_', '-', '.'");
}

namespace {

// Flows as they are assembled from the three sources and the [flow.NAME] sections.
class FlowTable {
 public:
  FlowSpec &get(const std::string &name, const std::string &origin) {
    auto it = flows_.find(name);
    if (it == flows_.end())
      throw Error(KODO_ERR_INVALID_ARGUMENT, origin + " names flow '" + name +
                                                 "', which has no command (--flow " + name +
                                                 "=COMMAND)");
    return it->second;
  }
  void add(const std::string &name, const std::string &command) {
    check_flow_name(name);
    if (flows_.count(name)) return;  // the higher-precedence source came first
    FlowSpec spec;
    spec.name = name;
    spec.argv = split_command(command, name);
    flows_.emplace(name, std::move(spec));
    order_.push_back(name);
  }
  std::vector<FlowSpec> take() {
    std::vector<FlowSpec> out;
    for (const auto &name : order_) out.push_back(flows_.at(name));
    return out;
  }

 private:
  std::map<std::string, FlowSpec> flows_;
  std::vector<std::string> order_;
};

struct Sources {
  po::variables_map cli, env, file;
};

}  // namespace

static OptionList key_values(const po::variables_map &values, const char *option) {
  OptionList out;
  if (!values.count(option)) return out;
  for (const auto &text : values[option].as<std::vector<std::string>>())
    out.push_back(split_key_value(text, std::string("--") + option + " value"));
  return out;
}

static void apply_flow_settings(const po::variables_map &values, FlowTable &flows) {
  auto each = [&](const char *option, auto &&fn) {
    if (!values.count(option)) return;
    for (const auto &text : values[option].as<std::vector<std::string>>()) {
      auto [name, value] = split_key_value(text, std::string("--") + option + " value");
      fn(flows.get(name, std::string("--") + option), value);
    }
  };
  each("flow-arg", [](FlowSpec &f, const std::string &v) { f.argv.push_back(v); });
  each("flow-env", [](FlowSpec &f, const std::string &v) {
    if (std::string problem = flow_env_entry_problem(v); !problem.empty())
      throw Error(KODO_ERR_INVALID_ARGUMENT, "--flow-env for flow '" + f.name + "': " + problem);
    f.env.push_back(v);
  });
  each("flow-cwd", [](FlowSpec &f, const std::string &v) { f.cwd = v; });
  each("flow-description", [](FlowSpec &f, const std::string &v) { f.description = v; });
  each("flow-timeout", [](FlowSpec &f, const std::string &v) {
    f.timeout_s = parse_duration(v, "--flow-timeout for flow '" + f.name + "'");
  });
}

// Each KODO_* variable that names an option is parsed as if given on the command line, one
// variable at a time so an error can name it. A repeatable option takes one value a line.
static po::variables_map parse_environment(const po::options_description &desc) {
  static const std::map<std::string, std::string> aliases = {
      {"KODO_EVENT_TRANSPORT", "transport"},
      {"KODO_CONFIG", "config"},
      {"KODO_REDIS_CONSUMER_GROUP", "spooler-group"}};
  std::map<std::string, std::string> by_env;
  for (const auto &option : desc.options()) {
    const std::string &name = option->long_name();
    if (name == "help" || name == "version") continue;
    by_env[env_name_for(name)] = name;
  }
  for (const auto &[env, name] : aliases) by_env[env] = name;

  po::variables_map values;
  for (char **entry = environ; entry && *entry; ++entry) {
    std::string text = *entry;
    auto eq = text.find('=');
    if (eq == std::string::npos) continue;
    auto it = by_env.find(text.substr(0, eq));
    if (it == by_env.end()) continue;
    const std::string value = text.substr(eq + 1);
    const po::option_description &option = desc.find(it->second, false);
    std::vector<std::string> args;
    const bool repeatable = option.semantic()->is_composing();
    if (option.semantic()->max_tokens() == 0) {
      if (value == "1" || value == "true" || value == "yes") args.push_back("--" + it->second);
    } else if (repeatable) {
      size_t start = 0;
      while (start <= value.size()) {
        size_t end = value.find('\n', start);
        std::string line =
            value.substr(start, end == std::string::npos ? std::string::npos : end - start);
        if (!line.empty()) args.push_back("--" + it->second + "=" + line);
        if (end == std::string::npos) break;
        start = end + 1;
      }
    } else {
      args.push_back("--" + it->second + "=" + value);
    }
    try {
      po::store(po::command_line_parser(args).options(desc).run(), values);
    } catch (const po::error &e) {
      throw Error(KODO_ERR_INVALID_ARGUMENT, "environment variable " + it->first + ": " +
                                                 option_error(e, has_placeholder(value)));
    }
  }
  return values;
}

// The INI file: registered options at the top level; [storage] and [transport] sections
// hold plugin options; [flow.NAME] sections hold command, arg, env, cwd, timeout and
// description.
static po::variables_map parse_config_file(const std::string &path,
                                           const po::options_description &desc, HostConfig &config,
                                           FlowTable &flows) {
  std::ifstream file(path);
  if (!file) throw Error(KODO_ERR_IO, "cannot read config file " + path);
  std::stringstream in;
  in << file.rdbuf();
  const bool placeholder = has_placeholder(in.str());
  po::parsed_options parsed(&desc);
  try {
    parsed = po::parse_config_file(in, desc, true);
  } catch (const po::error &e) {
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "config file " + path + ": " + option_error(e, placeholder));
  }
  std::vector<po::option> registered;
  std::map<std::string, std::map<std::string, std::vector<std::string>>> flow_sections;
  std::vector<std::string> flow_order;
  for (auto &option : parsed.options) {
    if (!option.unregistered) {
      registered.push_back(option);
      continue;
    }
    const std::string &key = option.string_key;
    const std::string value = option.value.empty() ? "" : option.value.front();
    auto dot = key.find('.');
    const std::string section = dot == std::string::npos ? "" : key.substr(0, dot);
    const std::string rest = dot == std::string::npos ? key : key.substr(dot + 1);
    if (section == "storage") {
      config.storage_options.file.emplace_back(rest, value);
    } else if (section == "transport") {
      config.transport_options.file.emplace_back(rest, value);
    } else if (section == "durability") {
      config.durability_options.file.emplace_back(rest, value);
    } else if (section == "flow" && rest.find('.') != std::string::npos) {
      auto name = rest.substr(0, rest.find('.'));
      if (!flow_sections.count(name)) flow_order.push_back(name);
      flow_sections[name][rest.substr(rest.find('.') + 1)].push_back(value);
    } else {
      throw Error(
          KODO_ERR_INVALID_ARGUMENT,
          std::string("config file ").append(path).append(": unknown setting '").append(key) + "'");
    }
  }
  parsed.options = registered;
  po::variables_map values;
  try {
    po::store(parsed, values);
  } catch (const po::error &e) {
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "config file " + path + ": " + option_error(e, placeholder));
  }
  for (const auto &name : flow_order) {
    auto &settings = flow_sections[name];
    const std::string where =
        std::string("config file ").append(path).append(", [flow.").append(name).append("]");
    if (!settings.count("command"))
      throw Error(KODO_ERR_INVALID_ARGUMENT, where + " has no command");
    flows.add(name, settings["command"].front());
    FlowSpec &flow = flows.get(name, where);
    for (const auto &[key, list] : settings) {
      if (key == "command") continue;
      for (const auto &value : list) {
        if (key == "arg")
          flow.argv.push_back(value);
        else if (key == "env")
          flow.env.push_back(value);
        else if (key == "cwd")
          flow.cwd = value;
        else if (key == "description")
          flow.description = value;
        else if (key == "timeout")
          flow.timeout_s = parse_duration(value, where + " timeout");
        else
          throw Error(KODO_ERR_INVALID_ARGUMENT,
                      std::string(where).append(": unknown setting '").append(key) + "'");
      }
    }
  }
  return values;
}

std::string default_plugin_dir(const char *argv0) {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) exe = fs::absolute(argv0 ? argv0 : ".", ec);
  fs::path bin = exe.parent_path();
  for (const fs::path &candidate :
       {bin / ".." / "plugins", bin / ".." / "lib" / "kodo" / "plugins"})
    if (fs::is_directory(candidate, ec)) return fs::weakly_canonical(candidate, ec).string();
  return (bin / ".." / "plugins").lexically_normal().string();
}

ParsedCommandLine parse_command_line(int argc, const char *const *argv,
                                     const po::options_description &extra, HostConfig &config) {
  po::options_description desc = host_option_descriptions();
  desc.add(extra);
  po::options_description with_positional(desc);
  with_positional.add_options()("command-words", po::value<std::vector<std::string>>(),
                                "the command");
  po::positional_options_description positional;
  positional.add("command-words", -1);

  Sources sources;
  try {
    po::store(
        po::command_line_parser(argc, argv).options(with_positional).positional(positional).run(),
        sources.cli);
  } catch (const po::error &e) {
    bool placeholder = false;
    for (int i = 0; i < argc; ++i) placeholder = placeholder || has_placeholder(argv[i]);
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                std::string("command line: ") + option_error(e, placeholder));
  }
  sources.env = parse_environment(desc);

  FlowTable flows;
  std::string config_file;
  if (sources.cli.count("config"))
    config_file = sources.cli["config"].as<std::string>();
  else if (sources.env.count("config"))
    config_file = sources.env["config"].as<std::string>();
  if (!config_file.empty()) {
    // Flows of higher-precedence sources are added first, so they win over the file's.
    for (auto *values : {&sources.cli, &sources.env})
      if (values->count("flow"))
        for (const auto &text : (*values)["flow"].as<std::vector<std::string>>()) {
          auto [name, command] = split_key_value(text, "--flow value");
          flows.add(name, command);
        }
    sources.file = parse_config_file(config_file, desc, config, flows);
  }

  ParsedCommandLine out;
  po::variables_map &values = out.values;
  for (auto *source : {&sources.cli, &sources.env, &sources.file})
    for (const auto &[name, value] : *source)
      if (!values.count(name) || values[name].defaulted()) values.insert_or_assign(name, value);
  // Defaults for whatever no source set.
  {
    po::variables_map defaults;
    po::store(po::parsed_options(&desc), defaults);
    for (const auto &[name, value] : defaults)
      if (!values.count(name)) values.insert_or_assign(name, value);
  }
  if (values.count("command-words"))
    out.positional = values["command-words"].as<std::vector<std::string>>();

  config.config_file = config_file;
  config.storage_options.command_line = key_values(sources.cli, "storage-option");
  config.storage_options.environment = key_values(sources.env, "storage-option");
  config.transport_options.command_line = key_values(sources.cli, "transport-option");
  config.transport_options.environment = key_values(sources.env, "transport-option");
  config.durability_options.command_line = key_values(sources.cli, "durability-option");
  config.durability_options.environment = key_values(sources.env, "durability-option");
  for (auto *source : {&sources.file}) {
    for (auto &kv : key_values(*source, "storage-option"))
      config.storage_options.file.push_back(kv);
    for (auto &kv : key_values(*source, "transport-option"))
      config.transport_options.file.push_back(kv);
    for (auto &kv : key_values(*source, "durability-option"))
      config.durability_options.file.push_back(kv);
  }

  for (auto *source : {&sources.cli, &sources.env, &sources.file})
    if (source->count("flow"))
      for (const auto &text : (*source)["flow"].as<std::vector<std::string>>()) {
        auto [name, command] = split_key_value(text, "--flow value");
        flows.add(name, command);
      }
  for (auto *source : {&sources.cli, &sources.env, &sources.file})
    apply_flow_settings(*source, flows);
  config.flows = flows.take();

  auto str = [&](const char *name) { return values[name].as<std::string>(); };
  // A time in seconds: finite, not negative, and small enough to count in int milliseconds,
  // which is what the waits it feeds take (a larger value overflowed that conversion).
  auto seconds = [&](const char *name) {
    constexpr double kMax = 2000000;  // about 23 days; * 1000 still fits an int
    const double value = values[name].as<double>();
    if (!std::isfinite(value) || value < 0 || value > kMax) {
      std::ostringstream shown;
      shown << value;
      throw Error(
          KODO_ERR_INVALID_ARGUMENT,
          std::string("--") + name + " must be between 0 and 2000000 seconds, got " + shown.str());
    }
    return value;
  };
  config.plugin_dir = values.count("plugin-dir") ? str("plugin-dir") : default_plugin_dir(argv[0]);
  config.storage = str("storage");
  config.transport = str("transport");
  config.execution_mode = str("execution-mode");
  if (values.count("durability")) {
    // Two names for one setting: they must not disagree.
    const std::string durability = str("durability");
    if (!values["execution-mode"].defaulted() && durability != config.execution_mode)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "durability '" + durability +
                                                 "' and execution-mode '" + config.execution_mode +
                                                 "' disagree; set one of them");
    config.execution_mode = durability;
  }
  if (values.count("execution-database")) {
    const std::string url = str("execution-database");
    const bool storage_chosen = !values["storage"].defaulted();
    if (url.rfind("postgresql", 0) == 0 || url.rfind("postgres://", 0) == 0) {
      if (!storage_chosen) config.storage = "postgres";
      config.storage_options.host_defaults.emplace_back("url", url);
    } else if (!url.empty() && url.rfind("sqlite", 0) != 0) {
      throw Error(KODO_ERR_INVALID_ARGUMENT, "KODO_EXECUTION_DATABASE '" + redacted_url(url) +
                                                 "' is neither a postgresql:// nor a sqlite URL");
    }
  }
  config.exec_dir = str("exec-dir");
  config.storage_options.host_defaults.emplace_back("exec_dir", config.exec_dir);
  config.address = str("address");
  config.address_given = !values["address"].defaulted();
  config.default_user = str("default-user");
  config.auth.mode = str("auth");
  if (config.auth.mode != "auto" && config.auth.mode != "on" && config.auth.mode != "off")
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "--auth must be auto, on or off, not '" + config.auth.mode.substr(0, 32) + "'");
  config.auth.admin_database = str("admin-database");
  config.auth.admin_email = str("admin-email");
  config.auth.admin_password_given = values.count("admin-password") != 0;
  if (config.auth.admin_password_given) config.auth.admin_password = str("admin-password");
  if (values.count("secret-key")) config.auth.secret_key = str("secret-key");
  config.auth.secret_key_file = str("secret-key-file");
  config.auth.login_failures = values["login-failures"].as<size_t>();
  config.auth.login_window_s = values["login-window"].as<double>();
  config.log_level = str("log-level");
  config.sse_keepalive_s = seconds("sse-keepalive");
  config.sse_batch_s = seconds("sse-batch");
  config.http_max_connections = values["http-max-connections"].as<size_t>();
  config.http_max_header_bytes =
      std::max<size_t>(256, values["http-max-header-bytes"].as<size_t>());
  config.http_max_body_bytes = values["http-max-body-bytes"].as<size_t>();
  config.json_max_depth = std::max<size_t>(1, values["http-json-depth"].as<size_t>());
  config.http_head_timeout_s = seconds("http-head-timeout");
  config.http_body_timeout_s = seconds("http-body-timeout");
  config.http_io_threads = std::max<size_t>(1, values["http-io-threads"].as<size_t>());
  config.http_handler_threads = std::max<size_t>(1, values["http-handler-threads"].as<size_t>());
  config.sse_viewer_buffer = std::max<size_t>(4096, values["sse-viewer-buffer"].as<size_t>());
  config.sse_buffer_total = std::max<size_t>(4096, values["sse-buffer-total"].as<size_t>());
  config.tls_cert = str("tls-cert");
  config.tls_key = str("tls-key");
  if (config.tls_cert.empty() != config.tls_key.empty())
    throw Error(
        KODO_ERR_INVALID_ARGUMENT,
        "--tls-cert and --tls-key go together: HTTPS needs both the certificate and its key");
  config.allowed_hosts = split_list(str("allowed-hosts"));

  config.executor.max_running = std::max<size_t>(1, values["max-running"].as<size_t>());
  config.executor.max_event_bytes = values["max-event-bytes"].as<size_t>();
  config.executor.kill_grace_s = seconds("kill-grace");
  config.executor.app_url = str("app-url");

  config.spooler.batch_size = std::max<size_t>(1, values["spooler-batch-size"].as<size_t>());
  config.spooler.batch_timeout_s = seconds("spooler-batch-timeout");
  config.spooler.interval_s = seconds("spooler-interval");
  config.spooler.consumers = std::max<size_t>(1, values["spoolers"].as<size_t>());
  config.spooler.group = str("spooler-group");
  config.spooler.consumer_name = str("spooler-name");
  config.run_spooler = !values["no-spooler"].as<bool>();
  config.publish_timeout_ms = static_cast<int>(seconds("publish-timeout") * 1000);
  config.executor.publish_retry_ms = config.publish_timeout_ms;
  if (!str("retention").empty())
    config.retention_s = parse_duration(str("retention"), "--retention");
  config.purge_interval_s = parse_duration(str("purge-interval"), "--purge-interval");
  config.shutdown_grace_s = seconds("shutdown-grace");
  return out;
}

}  // namespace kodo
