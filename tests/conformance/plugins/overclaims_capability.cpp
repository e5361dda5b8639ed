// overclaims_capability.cpp: claims PURGE but purge answers KODO_ERR_NOT_SUPPORTED. Breaks
// "a plugin is held to what it claims: no less".
#include "memory_storage.hpp"

namespace {

class NoPurgeStorage : public kodo_test::MemoryStorage {
 public:
  using MemoryStorage::MemoryStorage;
  int64_t purge(double) override { kodo::sdk::not_supported("purge"); }
};

}  // namespace

KODO_STORAGE_PLUGIN(NoPurgeStorage, "overclaims_capability", "1.0",
                    "claims PURGE without implementing it",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE,
                    nullptr, 0)
