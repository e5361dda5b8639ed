// narrows_by_option.cpp: a storage whose handles narrow its declared capabilities by an
// option (kodo_storage_api.capabilities): with archive=false a handle claims no ARCHIVE and
// refuses archive_execution. With honest=false it claims no ARCHIVE yet still archives,
// which breaks "held to what it claims: no more" for the instance.
#include "memory_storage.hpp"

namespace {

class NarrowingStorage : public kodo_test::MemoryStorage {
 public:
  NarrowingStorage(const kodo::sdk::Options &options, const kodo_host_api *host)
      : MemoryStorage(options, host),
        archive_(options.get_bool("archive", true)),
        honest_(options.get_bool("honest", true)) {}
  uint64_t capabilities() override {
    return KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_PURGE |
           (archive_ ? KODO_STORAGE_CAP_ARCHIVE : 0);
  }
  void archive_execution(const char *fid, const char *username) override {
    if (!archive_ && honest_) kodo::sdk::not_supported("archive_execution");
    MemoryStorage::archive_execution(fid, username);
  }

 private:
  bool archive_, honest_;
};

constexpr kodo_option_spec kArchive = kodo::sdk::option(
    "archive", KODO_OPTION_BOOL, 0, "true", nullptr, "false: this handle cannot archive");
constexpr kodo_option_spec kHonest = kodo::sdk::option(
    "honest", KODO_OPTION_BOOL, 0, "true", nullptr, "false: archives even when it says it cannot");
const kodo_option_spec *const kOptions[] = {&kArchive, &kHonest};

}  // namespace

KODO_STORAGE_PLUGIN(NarrowingStorage, "narrows_by_option", "1.0",
                    "in-memory storage whose handles may not archive",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE,
                    kOptions, 2)
