// target.cpp: which plugin the kit runs against, and the options each new handle gets.
#include "conformance.hpp"

#include <kodo/host/error.hpp>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>

namespace kodo::conformance {

namespace {

struct TargetState {
  std::shared_ptr<Plugin> plugin;
  OptionList given;
  std::mutex scratch_mutex;
  std::string scratch;
  std::atomic<uint64_t> next_dir{0};
  std::atomic<uint64_t> instance_capabilities{~0ull};  // all: until a handle says otherwise
};

TargetState &state() {
  static TargetState s;
  return s;
}

// The kit's own defaults, used when neither the user nor the case chose a value.
// claim_idle_ms: a short claim time keeps the redelivery case quick.
const OptionList &kit_defaults() {
  static const OptionList defaults = {{"claim_idle_ms", "200"}};
  return defaults;
}

bool given_by_user(const std::string &name) {
  for (const auto &[given_name, value] : state().given)
    if (given_name == name) return true;
  return false;
}

std::string fresh_directory() {
  auto dir = std::filesystem::path(scratch_root()) /
             ("handle-" + std::to_string(state().next_dir.fetch_add(1)));
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace

void set_target(std::shared_ptr<Plugin> plugin, OptionList given) {
  state().plugin = std::move(plugin);
  state().given = std::move(given);
}

std::shared_ptr<Plugin> target_ptr() {
  if (!state().plugin)
    throw Error("conformance kit: no plugin chosen; call kodo::conformance::set_target first");
  return state().plugin;
}

const Plugin &target() {
  return *target_ptr();
}

void set_instance_capabilities(uint64_t capabilities) {
  state().instance_capabilities = capabilities;
}

uint64_t claimed_capabilities() {
  return target().capabilities() & state().instance_capabilities.load();
}

bool claims(uint64_t capability) {
  return (claimed_capabilities() & capability) != 0;
}

const char *capability_name(int32_t kind, uint64_t capability) {
  if (kind == KODO_KIND_STORAGE) {
    switch (capability) {
      case KODO_STORAGE_CAP_LIST: return "LIST";
      case KODO_STORAGE_CAP_ARCHIVE: return "ARCHIVE";
      case KODO_STORAGE_CAP_PURGE: return "PURGE";
    }
  } else if (kind == KODO_KIND_TRANSPORT) {
    switch (capability) {
      case KODO_TRANSPORT_CAP_GROUPS: return "GROUPS";
      case KODO_TRANSPORT_CAP_REDELIVERY: return "REDELIVERY";
      case KODO_TRANSPORT_CAP_CROSS_PROCESS: return "CROSS_PROCESS";
      case KODO_TRANSPORT_CAP_FINISH: return "FINISH";
    }
  } else if (kind == KODO_KIND_DURABILITY) {
    switch (capability) {
      case KODO_DURABILITY_CAP_RETRY: return "RETRY";
      case KODO_DURABILITY_CAP_PAUSE: return "PAUSE";
      case KODO_DURABILITY_CAP_CANCEL: return "CANCEL";
      case KODO_DURABILITY_CAP_QUERY: return "QUERY";
      case KODO_DURABILITY_CAP_CROSS_PROCESS: return "CROSS_PROCESS";
    }
  }
  return "UNKNOWN";
}

std::string capability_names(int32_t kind, uint64_t capabilities) {
  std::string out;
  for (uint64_t bit = 1; bit != 0; bit <<= 1)
    if (capabilities & bit) {
      out += out.empty() ? "" : ", ";
      const char *name = capability_name(kind, bit);
      out += std::string(name) == "UNKNOWN" ? "bit " + std::to_string(bit) : name;
    }
  return out.empty() ? "none" : out;
}

bool declares_option(const std::string &name) {
  for (const auto &spec : target().options())
    if (name == spec.name) return true;
  return false;
}

std::optional<std::string> option_value(const OptionList &options, const std::string &name) {
  for (const auto &[option_name, value] : options)
    if (option_name == name) return value;
  return std::nullopt;
}

OptionList options_for_new_handle(const OptionList &preferred) {
  PluginOptionSources sources;
  sources.command_line = state().given;
  for (const auto &spec : target().options())
    if (spec.type == KODO_OPTION_PATH && !given_by_user(spec.name))
      sources.command_line.emplace_back(spec.name, fresh_directory());
  // Preferred values sit where the host puts its own defaults: the environment still wins,
  // so a user can set them there too.
  for (const auto &[name, value] : preferred)
    if (declares_option(name)) sources.host_defaults.emplace_back(name, value);
  for (const auto &[name, value] : kit_defaults())
    if (declares_option(name)) sources.host_defaults.emplace_back(name, value);
  return resolve_plugin_options(target(), sources);
}

std::string scratch_root() {
  std::lock_guard<std::mutex> lock(state().scratch_mutex);
  if (state().scratch.empty()) {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "kodo-conformance-XXXXXX").string();
    if (!mkdtemp(pattern.data()))
      throw Error(KODO_ERR_IO, "conformance kit: cannot make a scratch directory from " + pattern);
    state().scratch = pattern;
  }
  return state().scratch;
}

void set_scratch_root(const std::string &dir) {
  std::lock_guard<std::mutex> lock(state().scratch_mutex);
  state().scratch = dir;
}

void remove_scratch_root() {
  std::lock_guard<std::mutex> lock(state().scratch_mutex);
  if (state().scratch.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(state().scratch, ignored);
  state().scratch.clear();
}

}  // namespace kodo::conformance
