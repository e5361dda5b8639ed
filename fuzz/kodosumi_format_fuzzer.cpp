// Fuzzes kodosumi's formatted stream form (core/kodosumi_format.cpp): any stored payload of
// any kind, whoever wrote it, gives text and no crash; ANSI to HTML escapes what it is given
// and closes every span it opens. The first byte picks the kind.
#include "core/kodosumi_format.hpp"
#include "fuzz/fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  static const char *const kinds[] = {"inputs", "stdout", "stderr", "result",
                                      "final",  "action", "status", "error"};
  const char *kind = kinds[data[0] % (sizeof kinds / sizeof kinds[0])];
  const std::string message(reinterpret_cast<const char *>(data + 1), size - 1);
  kodo::kodosumi_format(kind, message, 64);

  const std::string html = kodo::ansi_to_html(message);
  size_t opened = 0, closed = 0;
  for (size_t at = html.find("<span "); at != std::string::npos; at = html.find("<span ", at + 1))
    ++opened;
  for (size_t at = html.find("</span>"); at != std::string::npos; at = html.find("</span>", at + 1))
    ++closed;
  FUZZ_CHECK(opened == closed);
  if (message.find_first_of("<>\033") == std::string::npos)
    FUZZ_CHECK(html.find("<span") == std::string::npos);
  return 0;
}
