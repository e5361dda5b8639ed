// Fuzzes the HTTP/1.x request parser (core/http_parser.cpp) on its own, as the server calls
// it: on the whole buffer, with small limits so the limit paths are reached too. Properties:
// a complete request never claims bytes it was not given, parses the same from exactly the
// bytes it consumed (pipelining relies on that), and has a NUL-free decoded path.
#include "core/event_line.hpp"
#include "core/http_parser.hpp"
#include "fuzz/fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

// json_escape promises text that is always valid inside a JSON string literal: valid
// UTF-8, no raw control character, every quote and backslash escaped.
void check_json_escape(std::string_view in) {
  const std::string out = kodo::json_escape(in);
  FUZZ_CHECK(kodo::to_valid_utf8(out) == out);
  for (size_t i = 0; i < out.size(); ++i) {
    const auto c = static_cast<unsigned char>(out[i]);
    if (c == '\\') {
      FUZZ_CHECK(i + 1 < out.size());
      ++i;
      continue;
    }
    FUZZ_CHECK(c >= 0x20 && c != '"');
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the limits: the defaults, or small ones that input can exceed.
  const bool small = data[0] & 1;
  const std::string_view buffer(reinterpret_cast<const char *>(data) + 1, size - 1);
  kodo::HttpLimits limits;
  if (small) {
    limits.max_header_bytes = 256;
    limits.max_body_bytes = 64;
    limits.max_headers = 4;
  }
  kodo::HttpRequest request;
  const kodo::ParseResult result = kodo::parse_http_request(buffer, limits, request);
  switch (result.status) {
    case kodo::ParseStatus::Complete: {
      FUZZ_CHECK(result.consumed > 0 && result.consumed <= buffer.size());
      FUZZ_CHECK(request.path.find('\0') == std::string::npos);
      FUZZ_CHECK(request.body.size() <= limits.max_body_bytes);
      kodo::HttpRequest again;
      const kodo::ParseResult exact =
          kodo::parse_http_request(buffer.substr(0, result.consumed), limits, again);
      FUZZ_CHECK(exact.status == kodo::ParseStatus::Complete);
      FUZZ_CHECK(exact.consumed == result.consumed);
      FUZZ_CHECK(again.method == request.method && again.target == request.target &&
                 again.body == request.body && again.headers == request.headers);
      for (const auto &[name, value] : request.query) {
        FUZZ_CHECK(request.query_param(name).has_value());
        (void)value;
      }
      break;
    }
    case kodo::ParseStatus::Error:
      FUZZ_CHECK(result.http_status >= 400 && result.http_status <= 505);
      FUZZ_CHECK(!result.error.empty());
      break;
    case kodo::ParseStatus::Incomplete: break;
  }

  bool ok = true;
  const std::string decoded = kodo::percent_decode(buffer, true, ok);
  if (ok) FUZZ_CHECK(decoded.size() <= buffer.size());
  check_json_escape(buffer);
  return 0;
}
