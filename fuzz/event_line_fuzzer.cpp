// Fuzzes the line format flows write to their events descriptor (core/event_line.cpp): any
// bytes a flow prints must give an event or a clear error, and an accepted event must hold
// what readers rely on (a kind a flow may emit, a payload of valid UTF-8, kodosumi's form). A lock
// line's payload then goes through the lock request parser, whose accepted data must be valid JSON
// for the lock event made from it (core/locks.hpp).
#include "core/event.hpp"
#include "core/event_line.hpp"
#include "core/json_bounded.hpp"
#include "core/kodosumi_payload.hpp"
#include "core/locks.hpp"
#include "fuzz/fuzz_check.hpp"

#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string_view line(reinterpret_cast<const char *>(data), size);
  const kodo::ParsedEventLine parsed = kodo::parse_event_line(line);
  if (parsed.ok()) {
    FUZZ_CHECK(kodo::is_known_kind(parsed.kind));
    FUZZ_CHECK(!kodo::is_host_kind(parsed.kind));
    FUZZ_CHECK(kodo::to_valid_utf8(parsed.payload) == parsed.payload);
    FUZZ_CHECK(parsed.payload.find('\0') == std::string::npos);
    // Kinds kodosumi serializes are stored in its {"<type>": value} form: a JSON object.
    if (kodo::is_serialized_kind(parsed.kind)) {
      rapidjson::Reader reader;
      rapidjson::BaseReaderHandler<> ignore;
      rapidjson::MemoryStream stream(parsed.payload.data(), parsed.payload.size());
      FUZZ_CHECK(parsed.payload.front() == '{');
      FUZZ_CHECK(!reader.Parse<rapidjson::kParseIterativeFlag>(stream, ignore).IsError());
    }
    kodo::LockRequest request;
    if (parsed.kind == "lock" && kodo::parse_lock_request(parsed.payload, &request).empty()) {
      FUZZ_CHECK(!request.name.empty() && request.timeout_s > 0);
      rapidjson::Document made;
      FUZZ_CHECK(kodo::parse_json_bounded(
                     kodo::lock_payload(request.name, "L", request.data_json, request.timeout_s),
                     1000, made) == kodo::JsonRead::Ok);
    }
  }
  kodo::is_blank_line(line);

  const std::string text = kodo::to_valid_utf8(line);
  FUZZ_CHECK(kodo::to_valid_utf8(text) == text);

  const std::string excerpt = kodo::quote_excerpt(line, 40);
  for (char c : excerpt) FUZZ_CHECK(c >= 0x20 && c < 0x7f);
  return 0;
}
