// plugin_options.hpp: checks configured values against the options a plugin declares
// (name, type, required) before the plugin is opened, and prints them as documentation.
#pragma once

#include <kodo/host/error.hpp>
#include <kodo/host/plugin_loader.hpp>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace kodo {

using OptionList = std::vector<std::pair<std::string, std::string>>;

// Where a plugin's option values come from, highest precedence first. Within one level
// the first value of a name wins.
struct PluginOptionSources {
  OptionList command_line;   // --storage-option k=v
  OptionList environment;    // KODO_STORAGE_OPTION lines
  OptionList file;           // storage-option = k=v in the config file
  OptionList host_defaults;  // host settings that map onto an option (exec_dir)
};

// Resolves the values to pass to open(): explicit values by precedence, then each option's
// env_name and KODO_<KIND>_<NAME> variables (at the environment level), then host
// defaults, then declared defaults. Throws kodo::Error naming the plugin and option for
// an unknown name, a value that does not parse as its type, or a missing required option.
OptionList resolve_plugin_options(const Plugin &plugin, const PluginOptionSources &sources);

// Checks one value against its declared type; empty when fine, otherwise why not.
std::string option_value_problem(const kodo_option_spec &spec, const std::string &value);

// "k=v" → (k, v); throws naming the text when there is no '='.
std::pair<std::string, std::string> split_key_value(const std::string &text,
                                                    const std::string &what);

// The text `kodo-host plugins describe` prints. Secret defaults are never shown.
std::string describe_plugin(const Plugin &plugin);

// The C form of resolved options, for a plugin's open(). Points into `values`, which
// must outlive it.
class OptionArray {
 public:
  explicit OptionArray(const OptionList &values) {
    structs_.reserve(values.size());
    for (const auto &[name, value] : values)
      structs_.push_back(kodo_option{sizeof(kodo_option), name.c_str(), value.c_str()});
    for (const auto &o : structs_) pointers_.push_back(&o);
  }
  const kodo_option *const *data() const { return pointers_.data(); }
  size_t size() const { return pointers_.size(); }

 private:
  std::vector<kodo_option> structs_;
  std::vector<const kodo_option *> pointers_;
};

// Calls a plugin's open() with resolved options and returns its handle; throws kodo::Error
// naming the plugin and its options (secrets masked) when it fails.
template <class Handle, class OpenFn>
Handle *open_plugin_handle(const Plugin &plugin, const OptionList &options, OpenFn open);

// Lists options for messages, secrets masked: "url=<secret>, block_ms=1000".
std::string format_options(const Plugin &plugin, const OptionList &values);

template <class Handle, class OpenFn>
Handle *open_plugin_handle(const Plugin &plugin, const OptionList &options, OpenFn open) {
  OptionArray array(options);
  Handle *handle = nullptr;
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status = open(array.data(), array.size(), plugin.host_api(), &handle, &error);
  if (status != KODO_OK)
    throw_plugin_error("cannot open " + plugin.label() + " with " + format_options(plugin, options),
                       status, error);
  if (!handle) throw Error(plugin.label() + ": open succeeded but returned no handle");
  return handle;
}

// What an opened handle can do: the declared capabilities, narrowed by the handle's own
// answer when its table has one (bits the descriptor does not declare are ignored).
template <class Handle>
uint64_t instance_capabilities(const Plugin &plugin, uint64_t (*capabilities)(Handle *),
                               Handle *handle) {
  const uint64_t declared = plugin.capabilities();
  return capabilities && handle ? declared & capabilities(handle) : declared;
}

}  // namespace kodo
