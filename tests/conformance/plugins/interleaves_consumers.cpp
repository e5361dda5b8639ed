// interleaves_consumers.cpp: gives later events of an execution to a second consumer while
// the first still holds unacked ones. Breaks "no other consumer is given later events of an
// execution while one consumer holds unacked deliveries of it".
#include "memory_transport.hpp"

namespace {

class InterleavingTransport : public kodo_test::MemoryTransport {
 public:
  using MemoryTransport::MemoryTransport;

 protected:
  bool may_hand_out(int, int) const override { return true; }
};

}  // namespace

KODO_TRANSPORT_PLUGIN(InterleavingTransport, "interleaves_consumers", "1.0",
                      "hands one execution to two consumers at once",
                      kodo_test::kMemoryTransportCapabilities, kodo_test::kMemoryTransportOptions,
                      2)
