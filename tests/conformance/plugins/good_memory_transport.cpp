// good_memory_transport.cpp: a correct transport claiming GROUPS, REDELIVERY and FINISH.
// The kit must pass it; if it does not, the kit is wrong.
#include "memory_transport.hpp"

KODO_TRANSPORT_PLUGIN(kodo_test::MemoryTransport, "good_memory_transport", "1.0",
                      "in-memory transport that keeps every contract",
                      kodo_test::kMemoryTransportCapabilities, kodo_test::kMemoryTransportOptions,
                      2)
