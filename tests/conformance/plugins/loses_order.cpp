// loses_order.cpp: returns an execution's events newest first. Breaks "read_events returns
// events in seq order".
#include "memory_storage.hpp"

namespace {

class ReversingStorage : public kodo_test::MemoryStorage {
 public:
  using MemoryStorage::MemoryStorage;
  void read_events(const kodo_read_request &request, kodo::sdk::EventPageBuilder &out) override {
    bool has_more = false;
    auto events = select(request, &has_more);
    for (auto it = events.rbegin(); it != events.rend(); ++it) out.add() = *it;
    out.set_has_more(has_more);
  }
};

}  // namespace

KODO_STORAGE_PLUGIN(ReversingStorage, "loses_order", "1.0", "reads events out of seq order",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE,
                    nullptr, 0)
