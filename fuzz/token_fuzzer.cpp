// Fuzzes login token parsing (core/auth_token.cpp) and the Cookie header reader
// (core/auth.cpp): whatever arrives as KODOSUMI_API_KEY or kodosumi_jwt. A token is accepted
// only when its signature checks under the key, so random input never is; the base64url
// reader accepts exactly one spelling of each byte string.
#include "core/auth.hpp"
#include "core/auth_token.hpp"
#include "fuzz/fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string input(reinterpret_cast<const char *>(data), size);
  const std::string key = "fuzz key";
  const double now = 1.7e9;

  std::string why;
  auto claims = kodo::verify_token(key, input, now, &why);
  if (claims) {
    FUZZ_CHECK(!claims->sub.empty());
    FUZZ_CHECK(claims->exp > now);
  } else {
    FUZZ_CHECK(!why.empty());
    // Reasons are fixed texts (fail() takes a const char *), so none carries the token. Tested
    // as: a byte no reason has (DEL) in the input never reaches the reason. ("the input is not
    // in the reason" failed on inputs that are pieces of a reason's own text.)
    if (input.find('\x7f') != std::string::npos) FUZZ_CHECK(why.find('\x7f') == std::string::npos);
  }
  // The input as a claims payload under a valid signature: only checks of the claims remain.
  const std::string signed_token = kodo::base64url_encode(R"({"alg":"HS256","typ":"JWT"})") + "." +
                                   kodo::base64url_encode(input);
  (void)kodo::verify_token(key, signed_token + ".x", now);

  if (auto decoded = kodo::base64url_decode(input))
    FUZZ_CHECK(kodo::base64url_encode(*decoded) == input);

  kodo::HttpRequest request;
  request.headers.emplace_back("cookie", input);
  if (auto value = kodo::cookie_value(request, "kodosumi_jwt"))
    FUZZ_CHECK(value->size() <= input.size());
  return 0;
}
