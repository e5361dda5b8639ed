// drops_on_backpressure.cpp: when full, takes the part of a batch that fits and then fails
// with KODO_ERR_TIMEOUT, so a retry of the whole batch duplicates that part. Breaks "a full
// transport takes none of the batch".
#include "memory_transport.hpp"

namespace {

class PartialTransport : public kodo_test::MemoryTransport {
 public:
  using MemoryTransport::MemoryTransport;

 protected:
  void when_full(const kodo_event *const *events, size_t count) override {
    take(events, std::min(count, room()));
    MemoryTransport::when_full(events, count);
  }
};

}  // namespace

KODO_TRANSPORT_PLUGIN(PartialTransport, "drops_on_backpressure", "1.0",
                      "takes part of a batch when full", kodo_test::kMemoryTransportCapabilities,
                      kodo_test::kMemoryTransportOptions, 2)
