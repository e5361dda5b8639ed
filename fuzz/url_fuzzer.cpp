// Fuzzes the SDK's URL parser (sdk/include/kodo/url.hpp), which the PostgreSQL and Redis
// plugins use on their configured server URL. Properties: a URL parses or gets an Error
// (nothing else escapes), and neither the error nor redacted() ever repeats a password.
#include "fuzz/fuzz_check.hpp"

#include <kodo/url.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

namespace {

// The password as written in the URL's userinfo, or "" when there is none.
std::string written_password(const std::string &text) {
  const size_t start = text.find("://");
  if (start == std::string::npos) return "";
  const size_t end = text.find_first_of("/?", start + 3);
  const std::string authority =
      text.substr(start + 3, end == std::string::npos ? end : end - start - 3);
  const size_t at = authority.rfind('@');
  if (at == std::string::npos) return "";
  const size_t colon = authority.find(':');
  return colon < at ? authority.substr(colon + 1, at - colon - 1) : "";
}

// Only a password long enough to be told apart, and found nowhere else in the URL.
bool shown(const std::string &password, const std::string &text, const std::string &message) {
  if (password.size() < 8) return false;
  if (text.find(password) != text.rfind(password)) return false;
  return message.find(password) != std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string text(reinterpret_cast<const char *>(data), size);
  const std::string password = written_password(text);
  try {
    const kodo::sdk::Url url = kodo::sdk::parse_url(text);
    FUZZ_CHECK(url.port >= 0 && url.port <= 65535);
    // What redacted() shows does not depend on the password at all.
    kodo::sdk::Url other = url;
    other.password = "another password";
    FUZZ_CHECK(other.redacted() == url.redacted());
    kodo::sdk::parse_url(text, {"postgresql", "redis"});
  } catch (const kodo::sdk::Error &e) {
    FUZZ_CHECK(e.code() == KODO_ERR_INVALID_ARGUMENT);
    if (shown(password, text, e.what())) {
      // Echoed for real when the same URL with another password gets the same message with
      // that password in it (the fuzzer also makes passwords out of the messages' words).
      const std::string marker(password.size(), 'Q');
      std::string other = text;
      other.replace(other.find(password), password.size(), marker);
      std::string echoed = e.what();
      for (size_t at = echoed.find(password); at != std::string::npos;
           at = echoed.find(password, at + marker.size()))
        echoed.replace(at, password.size(), marker);
      try {
        kodo::sdk::parse_url(other);
      } catch (const kodo::sdk::Error &again) {
        FUZZ_CHECK(echoed != again.what());
      }
    }
  } catch (const std::exception &e) {
    (void)std::fprintf(stderr, "escaped: %s\n", e.what());
    FUZZ_CHECK(!"only kodo::sdk::Error may escape parse_url");
  }
  return 0;
}
