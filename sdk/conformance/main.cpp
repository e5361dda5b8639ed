// kodo-conformance: runs the conformance kit against one plugin file.
//
//   kodo-conformance --plugin PATH [--option key=value ...] [--keep-scratch]
//                    [--case-timeout SECONDS] [--in-process] [gtest flags]
//
// The cases run in a child process, restarted past a case that crashes or hangs, so such a
// case is reported by name and every other case still runs (supervisor.hpp).
//
// Exit status: 0 when the plugin keeps every contract of its kind, 1 when a case failed,
// 2 when the contract could not be run at all (bad arguments, the plugin does not load,
// its options do not resolve, or it cannot be opened).
#include "conformance.hpp"
#include "supervisor.hpp"

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>

#include <gtest/gtest.h>

#include <cstring>
#include <iostream>

namespace {

constexpr const char *kUsage =
    "usage: kodo-conformance --plugin PATH [--option key=value ...] [--keep-scratch] "
    "[gtest flags]\n"
    "  --plugin PATH        the plugin's shared object\n"
    "  --option key=value   an option for the plugin (repeatable); PATH options not given\n"
    "                       get a fresh directory for each handle the kit opens\n"
    "  --keep-scratch       keep the kit's scratch directory (its path is printed)\n"
    "  --case-timeout S     a case still running after S seconds is reported as hung and\n"
    "                       the kit goes on with the next (default 300)\n"
    "  --in-process         run the cases in this process (for a debugger); a crash then\n"
    "                       ends the kit\n"
    "  gtest flags such as --gtest_filter=Storage* select or repeat cases\n";

struct Arguments {
  std::string plugin;
  std::vector<std::string> options;
  bool keep_scratch = false;
  double case_timeout_s = 300;
  bool in_process = false;
  int report_fd = -1;   // set in a child: where to report cases
  std::string scratch;  // set in a child: the parent's scratch directory
};

// Takes "--name value" or "--name=value"; returns false when argv[i] is not --name.
bool take_value(int argc, char **argv, int &i, const char *name, std::string *value) {
  const size_t length = std::strlen(name);
  if (std::strncmp(argv[i], name, length) != 0) return false;
  if (argv[i][length] == '=') {
    *value = argv[i] + length + 1;
    return true;
  }
  if (argv[i][length] != '\0') return false;
  if (i + 1 >= argc) throw kodo::Error(std::string(name) + " needs a value");
  *value = argv[++i];
  return true;
}

Arguments parse_arguments(int argc, char **argv) {
  Arguments args;
  for (int i = 1; i < argc; ++i) {
    std::string value;
    if (take_value(argc, argv, i, "--plugin", &value)) {
      args.plugin = value;
    } else if (take_value(argc, argv, i, "--option", &value)) {
      args.options.push_back(value);
    } else if (std::strcmp(argv[i], "--keep-scratch") == 0) {
      args.keep_scratch = true;
    } else if (std::strcmp(argv[i], "--in-process") == 0) {
      args.in_process = true;
    } else if (take_value(argc, argv, i, "--case-timeout", &value)) {
      char *end = nullptr;
      args.case_timeout_s = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !(args.case_timeout_s > 0))
        throw kodo::Error("--case-timeout needs a number of seconds > 0, got '" + value + "'");
    } else if (take_value(argc, argv, i, "--kit-report-fd", &value)) {
      args.report_fd = std::stoi(value);
    } else if (take_value(argc, argv, i, "--kit-scratch", &value)) {
      args.scratch = value;
    } else {
      throw kodo::Error(std::string("unknown argument '") + argv[i] + "'");
    }
  }
  if (args.plugin.empty()) throw kodo::Error("--plugin PATH is required");
  return args;
}

// Opens and closes one handle the way the host would, so a plugin that cannot even be
// opened gets one clear line instead of a failure in every case. Answers what the handle
// claims (its options may narrow the descriptor's capabilities).
template <class Handle, class Api>
uint64_t open_once(const kodo::Plugin &plugin, const kodo::OptionList &options, const Api &api) {
  Handle *handle = kodo::open_plugin_handle<Handle>(plugin, options, api.open);
  const uint64_t claimed = kodo::instance_capabilities(plugin, api.capabilities, handle);
  api.close(handle);
  return claimed;
}
uint64_t open_once(const kodo::Plugin &plugin, const kodo::OptionList &options) {
  if (plugin.kind() == KODO_KIND_STORAGE)
    return open_once<kodo_storage>(plugin, options, plugin.storage_api());
  if (plugin.kind() == KODO_KIND_DURABILITY)
    return open_once<kodo_durability>(plugin, options, plugin.durability_api());
  return open_once<kodo_transport>(plugin, options, plugin.transport_api());
}

// Runs only the cases of the plugin's kind, within whatever --gtest_filter chose.
void restrict_cases_to_kind(int32_t kind) {
  std::string filter = GTEST_FLAG_GET(filter);
  const char *other_kinds = kind == KODO_KIND_STORAGE     ? "Transport*:Durability*"
                            : kind == KODO_KIND_TRANSPORT ? "Storage*:Durability*"
                                                          : "Storage*:Transport*";
  filter += filter.find('-') == std::string::npos ? "-" : ":";
  filter += other_kinds;
  GTEST_FLAG_SET(filter, filter);
}

}  // namespace

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::cout << kUsage << "\n";  // gtest adds its own flags below
      testing::InitGoogleTest(&argc, argv);
      return 0;
    }
  // A child gets the same arguments but its own filter.
  std::vector<std::string> child_arguments;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--gtest_filter", 14) != 0) child_arguments.emplace_back(argv[i]);
  testing::InitGoogleTest(&argc, argv);  // takes the gtest flags out of argv
  kodo::set_log_level(KODO_LOG_WARN);    // a plugin's info lines would drown the report
  Arguments args;
  try {
    args = parse_arguments(argc, argv);
  } catch (const std::exception &e) {
    std::cerr << "kodo-conformance: " << e.what() << "\n" << kUsage;
    return 2;
  }
  const bool child = args.report_fd >= 0;
  if (child) {
    kodo::conformance::set_scratch_root(args.scratch);
    kodo::conformance::report_cases_to(args.report_fd);
  }
  std::shared_ptr<kodo::Plugin> plugin;
  try {
    plugin = kodo::Plugin::load(args.plugin, "", 0);
    kodo::OptionList given;
    for (const auto &text : args.options) given.push_back(kodo::split_key_value(text, "--option"));
    kodo::conformance::set_target(plugin, given);
    const kodo::OptionList options = kodo::conformance::options_for_new_handle();
    kodo::conformance::set_instance_capabilities(open_once(*plugin, options));
    if (!child)
      std::cout << "kodo-conformance: " << plugin->label() << " version " << plugin->version()
                << ", ABI version " << plugin->abi_version() << "\n"
                << "  capabilities: "
                << kodo::conformance::capability_names(plugin->kind(),
                                                       kodo::conformance::claimed_capabilities())
                << (kodo::conformance::claimed_capabilities() != plugin->capabilities()
                        ? " (narrowed by the options from " +
                              kodo::conformance::capability_names(plugin->kind(),
                                                                  plugin->capabilities()) +
                              ")"
                        : std::string())
                << "\n  options: "
                << (options.empty() ? "(none)" : kodo::format_options(*plugin, options)) << "\n";
  } catch (const std::exception &e) {
    std::cerr << "kodo-conformance: " << e.what() << "\n";
    if (!child) kodo::conformance::remove_scratch_root();
    return 2;
  }

  if (child) return RUN_ALL_TESTS() ? 1 : 0;  // the parent keeps and removes the scratch
  restrict_cases_to_kind(plugin->kind());
  int failed = 0;
  if (args.in_process) {
    failed = RUN_ALL_TESTS();
  } else {
    try {
      failed = kodo::conformance::supervise_cases("/proc/self/exe", child_arguments,
                                                  GTEST_FLAG_GET(filter), args.case_timeout_s,
                                                  kodo::conformance::scratch_root());
    } catch (const std::exception &e) {
      std::cerr << "kodo-conformance: cannot run the cases in a child process: " << e.what()
                << "\n";
      failed = 2;
    }
  }
  if (args.keep_scratch)
    std::cout << "kodo-conformance: scratch kept in " << kodo::conformance::scratch_root() << "\n";
  else
    kodo::conformance::remove_scratch_root();
  return failed == 2 ? 2 : failed ? 1 : 0;
}
