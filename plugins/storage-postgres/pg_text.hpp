// pg_text.hpp: values as PostgreSQL takes them: text repaired to valid UTF-8 without NUL,
// escaped for COPY's text format, and doubles written exactly.
#pragma once

#include <cstddef>
#include <string>

namespace kodo_postgres {

// A PostgreSQL text value cannot hold NUL or invalid UTF-8; the host sends valid UTF-8, but a
// plugin must not stall a spooler on one bad event, so such bytes become U+FFFD.
bool append_text_repaired(std::string &out, const char *s, size_t n);

// COPY text format: backslash, tab, newline and carriage return escaped.
void append_copy_text(std::string &out, const std::string &value);

std::string format_double(double value);

}  // namespace kodo_postgres
