// breaks_idempotence.cpp: stores an event again when a batch is retried, so a redelivered
// event shows up twice. Breaks "append is idempotent on (fid, seq)".
#include "memory_storage.hpp"

namespace {

class DuplicatingStorage : public kodo_test::MemoryStorage {
 public:
  using MemoryStorage::MemoryStorage;

 protected:
  void store(std::vector<kodo::sdk::OwnedEvent> &events, const kodo_event &e) override {
    auto at =
        std::upper_bound(events.begin(), events.end(), e.seq,
                         [](int64_t seq, const kodo::sdk::OwnedEvent &o) { return seq < o.seq; });
    events.insert(at, kodo::sdk::OwnedEvent::copy(e));
  }
};

}  // namespace

KODO_STORAGE_PLUGIN(DuplicatingStorage, "breaks_idempotence", "1.0", "stores retried events twice",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE,
                    nullptr, 0)
