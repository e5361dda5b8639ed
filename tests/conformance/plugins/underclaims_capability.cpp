// underclaims_capability.cpp: purges although it does not claim PURGE. Breaks "a plugin is
// held to what it claims: no more" (an unclaimed function is NULL or not supported).
#include "memory_storage.hpp"

KODO_STORAGE_PLUGIN(kodo_test::MemoryStorage, "underclaims_capability", "1.0",
                    "purges without claiming PURGE",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE, nullptr, 0)
