// ids.cpp: fids in kodosumi's ObjectId form, and the one character rule that lets fids and
// user names be used as path components and stream keys.
#include "core/ids.hpp"

#include "core/error.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <ctime>
#include <random>

namespace kodo {

namespace {

constexpr size_t kMaxIdBytes = 64;

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

// The value as it can safely appear in a message: printable ASCII kept, anything else as
// \xNN, long values cut short.
std::string shown(const std::string &value) {
  std::string out = "\"";
  size_t n = 0;
  for (unsigned char c : value) {
    if (++n > kMaxIdBytes + 16) {
      out += "...";
      break;
    }
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      append_hex(out, c);
    }
  }
  return out + "\"";
}

bool allowed_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '@' || c == '-';
}

std::string id_problem(const char *what, const std::string &value) {
  if (value.empty()) return std::string("invalid ") + what + ": empty";
  if (value.size() > kMaxIdBytes)
    return std::string("invalid ") + what + " " + shown(value) + ": " +
           std::to_string(value.size()) + " bytes, at most " + std::to_string(kMaxIdBytes);
  if (value[0] == '.')
    return std::string("invalid ") + what + " " + shown(value) + ": starts with '.'";
  for (size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (!allowed_char(c)) {
      std::string byte;
      append_hex(byte, c);
      return std::string("invalid ") + what + " " + shown(value) + ": byte 0x" + byte +
             " at offset " + std::to_string(i) + " (allowed: A-Z a-z 0-9 _ . @ -)";
    }
  }
  return {};
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
  return id_problem("fid", fid);
}

std::string username_problem(const std::string &username) {
  return id_problem("username", username);
}

void check_fid(const std::string &fid) {
  std::string problem = fid_problem(fid);
  if (!problem.empty()) throw Error(problem, KODO_ERR_INVALID_ARGUMENT);
}

void check_username(const std::string &username) {
  std::string problem = username_problem(username);
  if (!problem.empty()) throw Error(problem, KODO_ERR_INVALID_ARGUMENT);
}

}  // namespace kodo
