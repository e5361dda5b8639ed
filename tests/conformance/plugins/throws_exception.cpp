// throws_exception.cpp: append and read_events throw std::runtime_error. The SDK helper must
// turn that into KODO_ERR_INTERNAL with the message at the boundary: the host never crashes.
#include "memory_storage.hpp"

#include <stdexcept>

namespace {

class ThrowingStorage : public kodo_test::MemoryStorage {
 public:
  using MemoryStorage::MemoryStorage;
  void append(const kodo_event *const *, size_t) override {
    throw std::runtime_error("simulated failure in append");
  }
  void read_events(const kodo_read_request &, kodo::sdk::EventPageBuilder &) override {
    throw std::runtime_error("simulated failure in read_events");
  }
};

}  // namespace

KODO_STORAGE_PLUGIN(ThrowingStorage, "throws_exception", "1.0",
                    "throws C++ exceptions from append and read_events",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE,
                    nullptr, 0)
