// pg_text.cpp: UTF-8 repair, COPY text escaping and exact doubles for the PostgreSQL storage.
#include "pg_text.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace kodo_postgres {
namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 (overlongs, surrogates, > U+10FFFF, NUL).
size_t utf8_length(const char *s, size_t n, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == 0) return 0;
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    len = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > n) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  static const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

}  // namespace

bool append_text_repaired(std::string &out, const char *s, size_t n) {
  bool repaired = false;
  for (size_t i = 0; i < n;) {
    size_t len = utf8_length(s, n, i);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      repaired = true;
      ++i;
    } else {
      out.append(s + i, len);
      i += len;
    }
  }
  return repaired;
}

void append_copy_text(std::string &out, const std::string &value) {
  for (char c : value) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default: out += c;
    }
  }
}

std::string format_double(double value) {
  char buffer[32];  // "%.17g" needs at most 24
  const int n = std::snprintf(buffer, sizeof buffer, "%.17g", value);
  return std::string(buffer, n > 0 ? std::min(static_cast<size_t>(n), sizeof buffer - 1) : 0);
}

}  // namespace kodo_postgres
