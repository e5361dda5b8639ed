// http_response.hpp: the bytes of a response head (status line, Date, fields, framing),
// checked so that a handler cannot inject header lines, and a JSON error body.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kodo {

bool istarts_with(std::string_view s, std::string_view prefix);
std::string_view trim(std::string_view s);
bool valid_header_name(std::string_view s);
// No CR, LF, NUL or other controls: a handler must not be able to inject header lines.
bool valid_header_value(std::string_view s);
const char *reason_phrase(int status);
// IMF-fixdate, formatted by hand so the process locale cannot change it.
std::string http_date();
// {"error": "<message>"}, always valid JSON.
std::string json_error(std::string_view message);
// A complete response with Content-Length and "Connection: close": how the server answers
// what never reaches a handler (a malformed request, a timeout, too many connections).
std::string closing_error_response(int status, std::string_view message);

}  // namespace kodo
