// ids.cpp: fids in kodosumi's ObjectId form; the naming rule itself is the SDK's
// (kodo::sdk::name_problem), so host and plugins check the same thing.
#include "core/ids.hpp"

#include <kodo/host/error.hpp>

#include <kodo/plugin.hpp>

#include <sys/random.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <ctime>
#include <random>
#include <system_error>

namespace kodo {

namespace {

// The five per-process bytes and the counter's random start make ids from two hosts (or
// two restarts within a second) differ.
struct FidState {
  std::array<uint8_t, 5> process_bytes{};
  std::atomic<uint32_t> counter{0};
  FidState() {
    std::random_device rd;
    for (auto &b : process_bytes) b = static_cast<uint8_t>(rd());
    counter.store(static_cast<uint32_t>(rd()));
  }
};

void append_hex(std::string &out, uint8_t byte) {
  static const char digits[] = "0123456789abcdef";
  out += digits[byte >> 4];
  out += digits[byte & 0xF];
}

}  // namespace

std::string new_fid() {
  static FidState state;
  const auto seconds = static_cast<uint32_t>(std::time(nullptr));
  const uint32_t count = state.counter.fetch_add(1, std::memory_order_relaxed);
  std::string fid;
  fid.reserve(24);
  for (int shift = 24; shift >= 0; shift -= 8)
    append_hex(fid, static_cast<uint8_t>(seconds >> shift));
  for (uint8_t b : state.process_bytes) append_hex(fid, b);
  for (int shift = 16; shift >= 0; shift -= 8)
    append_hex(fid, static_cast<uint8_t>(count >> shift));
  return fid;
}

std::string fid_problem(const std::string &fid) {
  return sdk::name_problem("fid", fid);
}

std::string username_problem(const std::string &username) {
  return sdk::name_problem("username", username);
}

void check_fid(const std::string &fid) {
  std::string problem = fid_problem(fid);
  if (!problem.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, problem);
}

void check_username(const std::string &username) {
  std::string problem = username_problem(username);
  if (!problem.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, problem);
}

std::string random_bytes(size_t n) {
  std::string b(n, '\0');
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::getrandom(b.data() + got, n - got, 0);
    if (r > 0)
      got += static_cast<size_t>(r);
    else if (errno != EINTR)
      throw Error(KODO_ERR_IO, "getrandom: " + std::generic_category().message(errno));
  }
  return b;
}

}  // namespace kodo
