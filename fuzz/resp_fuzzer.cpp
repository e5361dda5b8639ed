// Fuzzes the Redis transport's RESP reader (plugins/transport-redis/redis_connection.hpp), which
// parses whatever arrives on the socket from the Redis server. Properties: bytes are either a
// complete reply, not yet complete, or refused with an exception (nothing else escapes, no
// read outside the buffer); a scan resumed after a split finds the same end as one scan; and
// building a complete reply consumes exactly the bytes the scan measured.
#include "fuzz/fuzz_check.hpp"
#include "redis_connection.hpp"

#include <cstddef>
#include <cstdint>
#include <exception>

using kodo::redis::Frame;
using kodo::redis::Value;
namespace resp = kodo::redis::resp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  // The first byte says where the bytes arrive split in two reads.
  const size_t split = size > 1 ? data[0] % size : 0;
  const char *bytes = reinterpret_cast<const char *>(data + 1);
  const size_t n = size - 1;
  size_t once = 0;
  bool refused = false;
  try {
    once = resp::complete(bytes, n, 0);
  } catch (const std::exception &) {
    refused = true;
  }
  try {
    resp::Scan scan;
    const size_t early = resp::complete(bytes, split < n ? split : n, 0, scan);
    const size_t later = early ? early : resp::complete(bytes, n, 0, scan);
    FUZZ_CHECK(!refused && later == once);
  } catch (const std::exception &) {
    FUZZ_CHECK(refused || once == 0);  // refused only on bytes the one scan did not reach
  }
  if (refused || once == 0) return 0;
  Frame frame;
  frame.bytes.assign(bytes, bytes + n);
  frame.filled = n;
  Value v;
  size_t pos = 0;
  try {
    resp::build(frame, pos, v);
  } catch (const std::exception &) {
    return 0;  // nested too deep
  }
  FUZZ_CHECK(pos == once);
  return 0;
}
