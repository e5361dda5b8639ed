#include <kodo/host/plugin_loader.hpp>

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>

#include <kodo/plugin.hpp>

#include <dlfcn.h>
#include <boost/dll/shared_library_load_mode.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>

namespace kodo {

const char *kind_name(int32_t kind) {
  switch (kind) {
    case KODO_KIND_STORAGE: return "storage";
    case KODO_KIND_TRANSPORT: return "transport";
    case KODO_KIND_DURABILITY: return "durability";
    default: return "unknown";
  }
}

std::string plugin_file_for(const std::string &name_or_path, const std::string &plugin_dir,
                            int32_t kind) {
  const bool is_path =
      name_or_path.find('/') != std::string::npos ||
      (name_or_path.size() > 3 && name_or_path.compare(name_or_path.size() - 3, 3, ".so") == 0);
  if (is_path) return name_or_path;
  return (std::filesystem::path(plugin_dir) /
          ("kodo-" + std::string(kind_name(kind)) + "-" + name_or_path + ".so"))
      .string();
}

// Structs the plugin gave us are copied into zeroed ones of our size (sdk::read_sized):
// fields the plugin's (older) struct lacks read as zero/NULL.
using sdk::read_sized;

std::shared_ptr<Plugin> Plugin::load(const std::string &name_or_path, const std::string &plugin_dir,
                                     int32_t expected_kind, AbiRange offered) {
  const std::string path =
      plugin_file_for(name_or_path, plugin_dir, expected_kind ? expected_kind : KODO_KIND_STORAGE);
  std::error_code exists_error;
  if (!std::filesystem::exists(path, exists_error)) {
    std::string what =
        expected_kind ? std::string(kind_name(expected_kind)) + " plugin" : std::string("plugin");
    throw Error(KODO_ERR_NOT_FOUND,
                what + " '" + name_or_path + "' not found: no file " + path +
                    (path == name_or_path ? "" : " (looked in --plugin-dir " + plugin_dir + ")"));
  }

  std::shared_ptr<Plugin> plugin(new Plugin());
  plugin->path_ = path;
  boost::dll::fs::error_code load_error;
  plugin->library_.load(path, boost::dll::load_mode::rtld_local | boost::dll::load_mode::rtld_now,
                        load_error);
  if (load_error)
    throw Error(KODO_ERR_IO, "cannot load plugin " + path + ": " + load_error.message());
  // A plugin stays mapped until the process ends (RTLD_NODELETE on the loaded object; the extra
  // reference is deliberate). Its dependencies outlive any handle: libpq pulls in OpenSSL and
  // Kerberos, which leave exit handlers and thread-local state behind; unmapping them first
  // made the process crash at exit (LeakSanitizer's exit scan found it).
  (void)dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD | RTLD_NODELETE);
  if (!plugin->library_.has(KODO_ENTRY_SYMBOL))
    throw Error(KODO_ERR_NOT_FOUND, "plugin " + path +
                                        " does not export the entry symbol " KODO_ENTRY_SYMBOL
                                        " (declare it extern \"C\" with KODO_EXPORT)");
  auto entry = plugin->library_.get<std::remove_pointer_t<kodo_plugin_entry_fn>>(KODO_ENTRY_SYMBOL);

  // abi_version stays 0 until the entry has answered: nothing is agreed during the call.
  plugin->host_ = kodo_host_api{sizeof(kodo_host_api), 0, plugin.get(), &Plugin::log};
  const kodo_plugin *descriptor = nullptr;
  uint32_t plugin_abi = 0;
  kodo_error error = KODO_ERROR_INIT;
  kodo_status status =
      entry(offered.min, offered.max, &plugin->host_, &descriptor, &plugin_abi, &error);
  const std::string speaks = "this host speaks ABI versions " + std::to_string(offered.min) + ".." +
                             std::to_string(offered.max);
  if (status == KODO_ERR_ABI_MISMATCH ||
      (status == KODO_OK && (plugin_abi < offered.min || plugin_abi > offered.max))) {
    kodo_error_release(&error);
    throw Error(KODO_ERR_ABI_MISMATCH,
                "ABI mismatch: plugin " + path +
                    " (symbol " KODO_ENTRY_SYMBOL ") implements ABI version " +
                    std::to_string(plugin_abi) + ", which is " +
                    (plugin_abi < offered.min ? "older than" : "newer than") + " what " + speaks);
  }
  if (status != KODO_OK)
    throw_plugin_error("plugin " + path + " failed in " KODO_ENTRY_SYMBOL, status, error);
  kodo_error_release(&error);
  if (!descriptor)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "plugin " + path + ": " KODO_ENTRY_SYMBOL " returned no descriptor");
  if (descriptor->struct_size < offsetof(kodo_plugin, storage))
    throw Error(KODO_ERR_INVALID_ARGUMENT, "plugin " + path + ": descriptor struct_size " +
                                               std::to_string(descriptor->struct_size) +
                                               " is too small");
  plugin->descriptor_ = read_sized(descriptor);
  const kodo_plugin &d = plugin->descriptor_;
  if (d.abi_version != plugin_abi)
    throw Error(KODO_ERR_ABI_MISMATCH,
                "plugin " + path + ": " KODO_ENTRY_SYMBOL " agreed on ABI version " +
                    std::to_string(plugin_abi) + " but returned a descriptor of version " +
                    std::to_string(d.abi_version));
  plugin->host_.abi_version = plugin_abi;
  if (!d.name || !*d.name)
    throw Error(KODO_ERR_INVALID_ARGUMENT, "plugin " + path + ": descriptor has no name");
  plugin->name_ = d.name;
  if (d.kind != KODO_KIND_STORAGE && d.kind != KODO_KIND_TRANSPORT &&
      d.kind != KODO_KIND_DURABILITY)
    throw Error(KODO_ERR_NOT_SUPPORTED, "plugin " + path + " declares kind " +
                                            std::to_string(d.kind) +
                                            ", which this host does not run");
  if (plugin_abi < KODO_KIND_MIN_ABI(d.kind))
    throw Error(KODO_ERR_ABI_MISMATCH, "plugin " + path + " is a " + kind_name(d.kind) +
                                           " plugin, which needs ABI version " +
                                           std::to_string(KODO_KIND_MIN_ABI(d.kind)) +
                                           " or newer, but agreed on " +
                                           std::to_string(plugin_abi));
  if (expected_kind && d.kind != expected_kind)
    throw Error(KODO_ERR_INVALID_ARGUMENT, "plugin " + path + " is a " + kind_name(d.kind) +
                                               " plugin ('" + d.name + "'), but a " +
                                               kind_name(expected_kind) + " plugin was asked for");
  for (size_t i = 0; i < d.option_count; ++i) {
    if (!d.options || !d.options[i] || !d.options[i]->name)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  plugin->label() + ": option " + std::to_string(i) + " is malformed");
    plugin->options_.push_back(read_sized(d.options[i]));
  }

  auto require = [&](const void *fn, const char *fn_name) {
    if (!fn)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  plugin->label() + " lacks the required function " + fn_name);
  };
  // A claimed capability makes its function required: refused now, not answered 501 later.
  auto require_for = [&](uint64_t capability, const char *capability_name, const void *fn,
                         const char *fn_name) {
    if ((d.capabilities & capability) && !fn)
      throw Error(KODO_ERR_INVALID_ARGUMENT, plugin->label() + " claims the capability " +
                                                 capability_name + " but lacks its function " +
                                                 fn_name);
  };
  if (d.kind == KODO_KIND_STORAGE) {
    if (!d.storage) throw Error(plugin->label() + " has no storage function table");
    plugin->storage_ = read_sized(d.storage);
    const auto &s = plugin->storage_;
    require(reinterpret_cast<const void *>(s.open), "open");
    require(reinterpret_cast<const void *>(s.close), "close");
    require(reinterpret_cast<const void *>(s.create_schema), "create_schema");
    require(reinterpret_cast<const void *>(s.append), "append");
    require(reinterpret_cast<const void *>(s.read_events), "read_events");
    require(reinterpret_cast<const void *>(s.get_execution), "get_execution");
    require_for(KODO_STORAGE_CAP_LIST, "LIST", reinterpret_cast<const void *>(s.list_executions),
                "list_executions");
    require_for(KODO_STORAGE_CAP_ARCHIVE, "ARCHIVE",
                reinterpret_cast<const void *>(s.archive_execution), "archive_execution");
    require_for(KODO_STORAGE_CAP_PURGE, "PURGE", reinterpret_cast<const void *>(s.purge), "purge");
  } else if (d.kind == KODO_KIND_DURABILITY) {
    if (!d.durability) throw Error(plugin->label() + " has no durability function table");
    plugin->durability_ = read_sized(d.durability);
    const auto &u = plugin->durability_;
    require(reinterpret_cast<const void *>(u.open), "open");
    require(reinterpret_cast<const void *>(u.close), "close");
    require(reinterpret_cast<const void *>(u.submit), "submit");
    require(reinterpret_cast<const void *>(u.start_worker), "start_worker");
    require(reinterpret_cast<const void *>(u.stop_worker), "stop_worker");
    require(reinterpret_cast<const void *>(u.heartbeat), "heartbeat");
    require(reinterpret_cast<const void *>(u.on_control), "on_control");
    require_for(KODO_DURABILITY_CAP_PAUSE, "PAUSE", reinterpret_cast<const void *>(u.signal),
                "signal");
    require_for(KODO_DURABILITY_CAP_CANCEL, "CANCEL", reinterpret_cast<const void *>(u.signal),
                "signal");
    require_for(KODO_DURABILITY_CAP_QUERY, "QUERY", reinterpret_cast<const void *>(u.describe),
                "describe");
  } else {
    if (!d.transport) throw Error(plugin->label() + " has no transport function table");
    plugin->transport_ = read_sized(d.transport);
    const auto &t = plugin->transport_;
    require(reinterpret_cast<const void *>(t.open), "open");
    require(reinterpret_cast<const void *>(t.close), "close");
    require(reinterpret_cast<const void *>(t.publish), "publish");
    require(reinterpret_cast<const void *>(t.consumer_open), "consumer_open");
    require(reinterpret_cast<const void *>(t.consumer_close), "consumer_close");
    require(reinterpret_cast<const void *>(t.read), "read");
    require(reinterpret_cast<const void *>(t.ack), "ack");
    require_for(KODO_TRANSPORT_CAP_FINISH, "FINISH",
                reinterpret_cast<const void *>(t.finish_execution), "finish_execution");
  }
  return plugin;
}

Plugin::~Plugin() = default;

std::string Plugin::label() const {
  return std::string(kind_name(descriptor_.kind)) + " plugin '" + name_ + "' (" + path_ + ")";
}

void Plugin::log(void *host_data, int32_t level, const char *message) {
  auto *self = static_cast<Plugin *>(host_data);
  log_line(level, std::string("plugin ") + self->name_ + ": " + (message ? message : ""));
}

[[noreturn]] void throw_plugin_error(const std::string &context, kodo_status status,
                                     kodo_error &error) {
  std::string message = error.message ? error.message : "no message";
  const bool retryable = error.retryable != 0;
  kodo_error_release(&error);
  throw Error(status, context + ": " + message, retryable);
}

}  // namespace kodo
