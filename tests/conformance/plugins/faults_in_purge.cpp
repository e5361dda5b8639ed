// faults_in_purge.cpp: a correct storage except that purge crashes (fault=crash, SIGSEGV) or
// never returns (fault=hang). The kit must name the purge case and how it ended, and still
// run and report every other case.
#include "memory_storage.hpp"

#include <csignal>
#include <thread>

namespace {

class FaultyStorage : public kodo_test::MemoryStorage {
 public:
  FaultyStorage(const kodo::sdk::Options &options, const kodo_host_api *host)
      : MemoryStorage(options, host), fault_(options.get("fault")) {}
  int64_t purge(double older_than) override {
    if (fault_ == "crash") std::raise(SIGSEGV);
    if (fault_ == "hang")
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    return MemoryStorage::purge(older_than);
  }

 private:
  std::string fault_;
};

constexpr kodo_option_spec kFault =
    kodo::sdk::option("fault", KODO_OPTION_STRING, 0, "crash", nullptr, "crash or hang in purge");
const kodo_option_spec *const kOptions[] = {&kFault};

}  // namespace

KODO_STORAGE_PLUGIN(FaultyStorage, "faults_in_purge", "1.0", "a storage whose purge fails hard",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE,
                    kOptions, 1)
