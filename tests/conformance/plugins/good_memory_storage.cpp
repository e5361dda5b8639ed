// good_memory_storage.cpp: a correct storage that claims every capability. The kit must
// pass it; if it does not, the kit is wrong.
#include "memory_storage.hpp"

KODO_STORAGE_PLUGIN(kodo_test::MemoryStorage, "good_memory_storage", "1.0",
                    "in-memory storage that keeps every contract",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE,
                    nullptr, 0)
