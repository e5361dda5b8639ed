#include <kodo/host/plugin_options.hpp>

#include <kodo/host/error.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <set>
#include <sstream>

namespace kodo {

static const char *type_name(int32_t type) {
  switch (type) {
    case KODO_OPTION_STRING: return "string";
    case KODO_OPTION_INT: return "int";
    case KODO_OPTION_BOOL: return "bool";
    case KODO_OPTION_DOUBLE: return "double";
    case KODO_OPTION_PATH: return "path";
    case KODO_OPTION_URL: return "url";
    default: return "unknown";
  }
}

std::string option_value_problem(const kodo_option_spec &spec, const std::string &value) {
  switch (spec.type) {
    case KODO_OPTION_INT: {
      if (value.empty()) return "must be an integer";
      errno = 0;
      char *end = nullptr;
      (void)std::strtoll(value.c_str(), &end, 10);  // only whether it parses matters here
      if (errno != 0 || *end != '\0') return "must be an integer";
      return "";
    }
    case KODO_OPTION_DOUBLE: {
      if (value.empty()) return "must be a number";
      errno = 0;
      char *end = nullptr;
      (void)std::strtod(value.c_str(), &end);
      if (errno != 0 || *end != '\0') return "must be a number";
      return "";
    }
    case KODO_OPTION_BOOL: {
      static const std::set<std::string> ok = {"1", "0", "true", "false", "yes", "no", "on", "off"};
      return ok.count(value) ? "" : "must be true or false";
    }
    case KODO_OPTION_URL:
      return value.find("://") == std::string::npos ? "must be a URL (scheme://...)" : "";
    case KODO_OPTION_PATH: return value.empty() ? "must be a non-empty path" : "";
    case KODO_OPTION_STRING: return "";
    default: return "has an unknown declared type " + std::to_string(spec.type);
  }
}

std::pair<std::string, std::string> split_key_value(const std::string &text,
                                                    const std::string &what) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    throw Error(KODO_ERR_INVALID_ARGUMENT, what + " '" + text + "' must have the form key=value");
  return {text.substr(0, eq), text.substr(eq + 1)};
}

static std::string upper_env(const std::string &s) {
  std::string out;
  for (char c : s)
    out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

static const kodo_option_spec *find_spec(const Plugin &plugin, const std::string &name) {
  for (const auto &spec : plugin.options())
    if (name == spec.name) return &spec;
  return nullptr;
}

static std::string declared_names(const Plugin &plugin) {
  std::string names;
  for (const auto &spec : plugin.options())
    names += (names.empty() ? "" : ", ") + std::string(spec.name);
  return names.empty() ? "none" : names;
}

OptionList resolve_plugin_options(const Plugin &plugin, const PluginOptionSources &sources) {
  std::map<std::string, std::string> chosen;
  auto take = [&](const OptionList &values, const char *origin) {
    for (const auto &[name, value] : values) {
      if (!find_spec(plugin, name))
        throw Error(KODO_ERR_INVALID_ARGUMENT, "unknown option '" + name + "' (from " + origin +
                                                   ") for " + plugin.label() +
                                                   "; it takes: " + declared_names(plugin));
      chosen.emplace(name, value);  // keeps the first, i.e. the highest precedence
    }
  };
  take(sources.command_line, "the command line");
  take(sources.environment, "the environment");
  const std::string kind_prefix = "KODO_" + upper_env(kind_name(plugin.kind())) + "_";
  for (const auto &spec : plugin.options()) {
    if (chosen.count(spec.name)) continue;
    if (spec.env_name)
      if (const char *v = std::getenv(spec.env_name)) {
        chosen.emplace(spec.name, v);
        continue;
      }
    if (const char *v = std::getenv((kind_prefix + upper_env(spec.name)).c_str()))
      chosen.emplace(spec.name, v);
  }
  take(sources.file, "the config file");
  for (const auto &[name, value] : sources.host_defaults)
    if (find_spec(plugin, name)) chosen.emplace(name, value);

  OptionList out;
  for (const auto &spec : plugin.options()) {
    auto it = chosen.find(spec.name);
    if (it == chosen.end()) {
      if (spec.default_value) {
        out.emplace_back(spec.name, spec.default_value);
      } else if (spec.flags & KODO_OPTION_REQUIRED) {
        std::string how = "--" + std::string(kind_name(plugin.kind())) + "-option " + spec.name +
                          "=..., " + kind_prefix + upper_env(spec.name);
        if (spec.env_name) how += " or " + std::string(spec.env_name);
        throw Error(KODO_ERR_INVALID_ARGUMENT,
                    plugin.label() + " needs option '" + spec.name + "' (set " + how + ")");
      }
      continue;
    }
    std::string problem = option_value_problem(spec, it->second);
    if (!problem.empty()) {
      const bool secret = spec.flags & KODO_OPTION_SECRET;
      throw Error(KODO_ERR_INVALID_ARGUMENT, "option '" + std::string(spec.name) + "' of " +
                                                 plugin.label() + " " + problem + ", got " +
                                                 (secret ? "<secret>" : "'" + it->second + "'"));
    }
    out.emplace_back(spec.name, it->second);
  }
  return out;
}

std::string format_options(const Plugin &plugin, const OptionList &values) {
  std::string out;
  for (const auto &[name, value] : values) {
    const kodo_option_spec *spec = find_spec(plugin, name);
    const bool secret = spec && (spec->flags & KODO_OPTION_SECRET);
    out += (out.empty() ? "" : ", ") + name + "=" + (secret ? "<secret>" : value);
  }
  return out;
}

static std::string capability_names(int32_t kind, uint64_t caps) {
  struct Named {
    uint64_t bit;
    const char *name;
  };
  static const Named storage[] = {{KODO_STORAGE_CAP_LIST, "list"},
                                  {KODO_STORAGE_CAP_ARCHIVE, "archive"},
                                  {KODO_STORAGE_CAP_PURGE, "purge"}};
  static const Named transport[] = {{KODO_TRANSPORT_CAP_GROUPS, "groups"},
                                    {KODO_TRANSPORT_CAP_REDELIVERY, "redelivery"},
                                    {KODO_TRANSPORT_CAP_CROSS_PROCESS, "cross-process"},
                                    {KODO_TRANSPORT_CAP_FINISH, "finish"}};
  static const Named durability[] = {{KODO_DURABILITY_CAP_RETRY, "retry"},
                                     {KODO_DURABILITY_CAP_PAUSE, "pause"},
                                     {KODO_DURABILITY_CAP_CANCEL, "cancel"},
                                     {KODO_DURABILITY_CAP_QUERY, "query"},
                                     {KODO_DURABILITY_CAP_CROSS_PROCESS, "cross-process"}};
  std::string out;
  auto add = [&](const Named *begin, const Named *end) {
    for (auto *n = begin; n != end; ++n)
      if (caps & n->bit) out += (out.empty() ? "" : ", ") + std::string(n->name);
  };
  if (kind == KODO_KIND_STORAGE) add(std::begin(storage), std::end(storage));
  if (kind == KODO_KIND_TRANSPORT) add(std::begin(transport), std::end(transport));
  if (kind == KODO_KIND_DURABILITY) add(std::begin(durability), std::end(durability));
  return out.empty() ? "none" : out;
}

std::string describe_plugin(const Plugin &plugin) {
  std::ostringstream out;
  out << plugin.name() << " (" << kind_name(plugin.kind()) << " plugin)\n"
      << "  version:      " << plugin.version() << "\n"
      << "  ABI version:  " << plugin.abi_version() << "\n"
      << "  file:         " << plugin.path() << "\n"
      << "  description:  " << plugin.description() << "\n"
      << "  capabilities: " << capability_names(plugin.kind(), plugin.capabilities()) << "\n"
      << "  options:\n";
  if (plugin.options().empty()) out << "    (none)\n";
  const std::string kind_prefix = "KODO_" + upper_env(kind_name(plugin.kind())) + "_";
  for (const auto &spec : plugin.options()) {
    const bool secret = spec.flags & KODO_OPTION_SECRET;
    out << "    " << spec.name << " (" << type_name(spec.type)
        << ((spec.flags & KODO_OPTION_REQUIRED) ? ", required" : "") << (secret ? ", secret" : "")
        << ")";
    if (spec.default_value)
      out << " default: " << (secret ? "<secret>" : std::string(spec.default_value));
    out << "\n      env: " << kind_prefix << upper_env(spec.name)
        << (spec.env_name ? std::string(", ") + spec.env_name : "") << "\n";
    if (spec.description) out << "      " << spec.description << "\n";
  }
  return out.str();
}

}  // namespace kodo
