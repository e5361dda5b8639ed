// A storage plugin for the plugin-options fuzz target: it declares one option of every type
// (required, secret and env_name too) and, in open(), reads each with the SDK's typed
// getters. Whatever the host's validation let through must read back without an exception,
// which the SDK would report as KODO_ERR_INTERNAL.
#include <kodo/plugin.hpp>

namespace {

class EveryOptionType : public kodo::sdk::StorageBase {
 public:
  EveryOptionType(const kodo::sdk::Options &options, const kodo_host_api *) {
    options.get("text");
    options.get("dir");
    options.get("url");
    options.get_int("count");
    options.get_int("limit");
    options.get_double("ratio");
    options.get_bool("flag");
  }
  void create_schema() override {}
  void append(const kodo_event *const *, size_t) override {}
  void read_events(const kodo_read_request &, kodo::sdk::EventPageBuilder &) override {}
  void get_execution(const char *, const char *, kodo::sdk::ExecutionPageBuilder &) override {
    throw kodo::sdk::Error(KODO_ERR_NOT_FOUND, "no executions here");
  }
};

constexpr kodo_option_spec kText =
    kodo::sdk::option("text", KODO_OPTION_STRING, 0, "hello", nullptr, "a string");
constexpr kodo_option_spec kDir =
    kodo::sdk::option("dir", KODO_OPTION_PATH, 0, nullptr, nullptr, "a path");
constexpr kodo_option_spec kUrl =
    kodo::sdk::option("url", KODO_OPTION_URL, KODO_OPTION_REQUIRED | KODO_OPTION_SECRET, nullptr,
                      "KODO_FUZZ_EVERY_URL", "a required secret URL");
constexpr kodo_option_spec kCount =
    kodo::sdk::option("count", KODO_OPTION_INT, 0, "3", nullptr, "an int");
constexpr kodo_option_spec kLimit =
    kodo::sdk::option("limit", KODO_OPTION_INT, 0, nullptr, nullptr, "an int without default");
constexpr kodo_option_spec kRatio =
    kodo::sdk::option("ratio", KODO_OPTION_DOUBLE, 0, "0.5", nullptr, "a double");
constexpr kodo_option_spec kFlag =
    kodo::sdk::option("flag", KODO_OPTION_BOOL, 0, "false", nullptr, "a bool");
const kodo_option_spec *const kOptions[] = {&kText,  &kDir,   &kUrl, &kCount,
                                            &kLimit, &kRatio, &kFlag};

}  // namespace

KODO_STORAGE_PLUGIN(EveryOptionType, "every-option-type", "1.0",
                    "declares an option of every type, for fuzzing the host's validation", 0,
                    kOptions, 7)
