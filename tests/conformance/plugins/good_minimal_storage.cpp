// good_minimal_storage.cpp: a correct storage that claims no capability and needs a
// directory. The kit must pass it: it must skip the capability cases, see the unclaimed
// functions refuse with KODO_ERR_NOT_SUPPORTED, and hand the required PATH option a
// directory of its own.
#include "memory_storage.hpp"

#include <sys/stat.h>

namespace {

class MinimalStorage : public kodo_test::MemoryStorage {
 public:
  MinimalStorage(const kodo::sdk::Options &options, const kodo_host_api *host)
      : MemoryStorage(options, host) {
    struct stat info {};
    const std::string dir = options.get("dir");
    if (stat(dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode))
      throw kodo::sdk::Error(KODO_ERR_UNAVAILABLE, "dir '" + dir + "' is not a directory");
  }
  void list_executions(const kodo_list_request &, kodo::sdk::ExecutionPageBuilder &) override {
    kodo::sdk::not_supported("list_executions");
  }
  void archive_execution(const char *, const char *) override {
    kodo::sdk::not_supported("archive_execution");
  }
  int64_t purge(double) override { kodo::sdk::not_supported("purge"); }
};

constexpr kodo_option_spec kDir = kodo::sdk::option("dir", KODO_OPTION_PATH, KODO_OPTION_REQUIRED,
                                                    nullptr, nullptr, "an existing directory");
const kodo_option_spec *const kOptions[] = {&kDir};

}  // namespace

KODO_STORAGE_PLUGIN(MinimalStorage, "good_minimal_storage", "1.0",
                    "in-memory storage without capabilities", 0, kOptions, 1)
