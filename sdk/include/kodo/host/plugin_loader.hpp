// plugin_loader.hpp: finds a plugin by short name or path, loads it with Boost.DLL,
// negotiates the ABI version through its one entry symbol and checks its descriptor.
// Every failure is a kodo::Error naming the file, the symbol, the version or the function.
#pragma once

#include <kodo/kodo_plugin.h>

#include <boost/dll/shared_library.hpp>

#include <memory>
#include <string>
#include <vector>

namespace kodo {

// The ABI versions this host speaks.
constexpr uint32_t kHostAbiMin = KODO_ABI_VERSION_1;
constexpr uint32_t kHostAbiMax = KODO_ABI_VERSION;

// The versions offered to a plugin's entry point: the host's whole range, or (in tests that
// play an older host) part of it.
struct AbiRange {
  uint32_t min = kHostAbiMin;
  uint32_t max = kHostAbiMax;
};

// "storage", "transport", "durability" or "unknown".
const char *kind_name(int32_t kind);

// The file a short name stands for: <plugin_dir>/kodo-<kind>-<name>.so. A value that
// contains '/' or ends in ".so" is taken as a path as it is.
std::string plugin_file_for(const std::string &name_or_path, const std::string &plugin_dir,
                            int32_t kind);

class Plugin {
 public:
  // expected_kind 0 accepts any kind.
  static std::shared_ptr<Plugin> load(const std::string &name_or_path,
                                      const std::string &plugin_dir, int32_t expected_kind,
                                      AbiRange offered = {});
  ~Plugin();
  Plugin(const Plugin &) = delete;
  Plugin &operator=(const Plugin &) = delete;

  const std::string &path() const { return path_; }
  const std::string &name() const { return name_; }
  int32_t kind() const { return descriptor_.kind; }
  // The version agreed with the plugin (its descriptor's, checked at load).
  uint32_t abi_version() const { return descriptor_.abi_version; }
  // What the plugin declares; an opened handle may narrow it (Storage / Transport::has).
  uint64_t capabilities() const { return descriptor_.capabilities; }
  const char *version() const { return descriptor_.version ? descriptor_.version : ""; }
  const char *description() const { return descriptor_.description ? descriptor_.description : ""; }
  const std::vector<kodo_option_spec> &options() const { return options_; }
  // The kind's function table, copied into a zeroed table of this host's size, so a
  // function past the plugin's struct_size reads as NULL ("not supported").
  const kodo_storage_api &storage_api() const { return storage_; }
  const kodo_transport_api &transport_api() const { return transport_; }
  const kodo_durability_api &durability_api() const { return durability_; }
  const kodo_host_api *host_api() const { return &host_; }
  // "storage plugin 'sqlite' (/path/kodo-storage-sqlite.so)", for messages.
  std::string label() const;

 private:
  Plugin() = default;
  static void log(void *host_data, int32_t level, const char *message);

  boost::dll::shared_library library_;
  std::string path_;
  std::string name_;
  kodo_plugin descriptor_{};
  std::vector<kodo_option_spec> options_;
  kodo_storage_api storage_{};
  kodo_transport_api transport_{};
  kodo_durability_api durability_{};
  kodo_host_api host_{};
};

}  // namespace kodo
