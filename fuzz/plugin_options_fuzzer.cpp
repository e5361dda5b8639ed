// Fuzzes the validation of plugin options (core/plugin_options.cpp) against what a plugin
// declares, end to end: resolve the configured values by precedence, then open the plugin
// with them. Input: lines "<source><key>=<value>", source c (command line), e (environment
// option), f (config file), h (host default) or v (an environment variable KODO_STORAGE_<key>
// or KODO_TRANSPORT_<key>, or, for "url", KODO_FUZZ_EVERY_URL). The first byte picks the plugin:
// a test plugin with one option of every type, or the real inproc transport.
// Properties: resolution gives the values or a kodo::Error; values the host accepted open
// the plugin or get the plugin's own error, never an internal error (an exception in the
// plugin's parsing of a value the host called valid).
#include <kodo/host/error.hpp>
#include <kodo/host/plugin_options.hpp>
#include "core/storage.hpp"
#include "core/transport.hpp"
#include "fuzz/fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

extern char **environ;

namespace {

std::shared_ptr<kodo::Plugin> load(const char *path) {
  try {
    return kodo::Plugin::load(path, "", 0);
  } catch (const kodo::Error &e) {
    (void)std::fprintf(stderr, "cannot load %s: %s\n", path, e.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const auto every = load(KODO_FUZZ_EVERY_OPTION_PLUGIN);
  static const auto inproc = load(KODO_FUZZ_INPROC_PLUGIN);
  if (size == 0) return 0;
  const bool storage = (data[0] & 1) == 0;
  const kodo::Plugin &plugin = storage ? *every : *inproc;

  kodo::PluginOptionSources sources;
  std::vector<std::string> variables;
  std::string_view text(reinterpret_cast<const char *>(data) + 1, size - 1);
  while (!text.empty()) {
    const size_t end = text.find('\n');
    const std::string line(text.substr(0, end));
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    if (line.size() < 2 || line.find('\0') != std::string::npos) continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = line.substr(1, eq - 1), value = line.substr(eq + 1);
    switch (line[0]) {
      case 'c': sources.command_line.emplace_back(key, value); break;
      case 'e': sources.environment.emplace_back(key, value); break;
      case 'f': sources.file.emplace_back(key, value); break;
      case 'h': sources.host_defaults.emplace_back(key, value); break;
      case 'v':
        if (key == "url") {
          variables.push_back("KODO_FUZZ_EVERY_URL=" + value);
        } else {
          for (char &c : key) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
          std::string variable = storage ? "KODO_STORAGE_" : "KODO_TRANSPORT_";
          variable += key;
          variable += '=';
          variable += value;
          variables.push_back(std::move(variable));
        }
        break;
      default: break;
    }
  }
  std::vector<char *> env;
  env.reserve(variables.size() + 1);
  for (auto &v : variables) env.push_back(v.data());
  env.push_back(nullptr);

  kodo::OptionList values;
  char **saved = environ;
  environ = env.data();
  try {
    values = kodo::resolve_plugin_options(plugin, sources);
  } catch (const kodo::Error &e) {
    environ = saved;
    FUZZ_CHECK(e.code() == KODO_ERR_INVALID_ARGUMENT);
    return 0;
  }
  environ = saved;

  for (const auto &spec : plugin.options()) {
    for (const auto &[name, value] : values)
      if (name == spec.name) FUZZ_CHECK(kodo::option_value_problem(spec, value).empty());
  }
  const std::string shown = kodo::format_options(plugin, values);
  if (storage)
    for (const auto &[name, value] : values)
      if (name == "url" && !value.empty())
        FUZZ_CHECK(shown.find("url=<secret>") != std::string::npos);

  try {
    if (storage)
      kodo::Storage opened(every, values);
    else
      kodo::Transport opened(inproc, values);
  } catch (const kodo::Error &e) {
    if (e.code() == KODO_ERR_INTERNAL) (void)std::fprintf(stderr, "%s\n", e.what());
    FUZZ_CHECK(e.code() != KODO_ERR_INTERNAL);
  }
  return 0;
}
