// Fuzzes the fid/username rule (kodo::sdk::name_problem, core/ids.cpp). Both become file
// paths and stream keys, so the rule is checked against an independent statement of it:
// 1..64 bytes of [A-Za-z0-9_.@-], not starting with '.'; and a refusal must be printable
// (it is quoted into HTTP error bodies and logs).
#include "core/ids.hpp"
#include "fuzz/fuzz_check.hpp"

#include <kodo/plugin.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace {

bool allowed(const std::string &name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string name(reinterpret_cast<const char *>(data), size);
  const std::string fid = kodo::fid_problem(name);
  const std::string user = kodo::username_problem(name);
  FUZZ_CHECK(fid.empty() == allowed(name));
  FUZZ_CHECK(user.empty() == allowed(name));
  for (char c : fid) FUZZ_CHECK(c >= 0x20 && c < 0x7f);
  FUZZ_CHECK(fid.size() < 400);
  bool threw = false;
  try {
    kodo::sdk::check_name("fid", name.c_str());
  } catch (const kodo::sdk::Error &) {
    threw = true;
  }
  // check_name sees the C string, which ends at the first NUL.
  FUZZ_CHECK(threw != allowed(std::string(name.c_str())));
  return 0;
}
