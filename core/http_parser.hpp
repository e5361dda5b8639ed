// http_parser.hpp: a pure HTTP/1.x request parser. It never asserts on input, never reads
// past the buffer, and allocates at most in proportion to the bytes it is given, so it can
// face arbitrary (fuzzed or hostile) bytes. It keeps no state between calls: the server
// calls it again on the whole buffer when more bytes arrive.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kodo {

struct HttpRequest {
  std::string method;     // case-sensitive token as sent: "GET", "POST", ...
  std::string target;     // the request-target exactly as sent
  std::string path;       // percent-decoded path ('+' stays '+'); never contains NUL
  std::string raw_path;   // the path as sent, undecoded (split it before decoding segments)
  std::string raw_query;  // the part after '?', undecoded, without the '?'
  std::vector<std::pair<std::string, std::string>> query;    // decoded, '+' as space, in order
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, in order
  std::string body;                                          // de-chunked when chunked
  bool keep_alive = false;  // the connection may carry another request after this one
  int http_minor = 1;       // 0 for HTTP/1.0, 1 for HTTP/1.1

  // First header of that name (case-insensitive), or nullptr.
  const std::string *header(std::string_view name) const;
  // First query parameter of that (decoded) name, or nullopt.
  std::optional<std::string> query_param(std::string_view name) const;
};

struct HttpLimits {
  size_t max_header_bytes = 16384;  // request line + headers + blank line (also bounds trailers)
  size_t max_body_bytes = 8 << 20;  // decoded body
  size_t max_headers = 100;         // header lines
};

enum class ParseStatus { Complete, Incomplete, Error };

struct ParseResult {
  ParseStatus status = ParseStatus::Incomplete;
  size_t consumed = 0;  // Complete: bytes of the buffer this request took (for pipelining)
  int http_status = 0;  // Error: 400, 413, 431, 501 or 505
  std::string error;    // Error: what was wrong, for a human
  // Incomplete only: the header section has been parsed (out.headers is filled), so the
  // server may answer "Expect: 100-continue".
  bool headers_complete = false;
  // Incomplete only: parsing cannot finish before the buffer holds this many bytes
  // (0 = unknown); lets the server skip re-parsing while a large body streams in.
  size_t need_bytes = 0;
};

// Parses one request from the start of buffer into out (which is reset first).
// Leading empty lines are skipped; bare LF line endings are accepted.
ParseResult parse_http_request(std::string_view buffer, const HttpLimits &limits, HttpRequest &out);

// Decodes %XX escapes (and '+' as space when asked). ok becomes false on a '%' not followed
// by two hex digits; the returned string is then partial and must not be used.
std::string percent_decode(std::string_view in, bool plus_as_space, bool &ok);

// ASCII case-insensitive equality (HTTP header names and tokens).
bool iequals(std::string_view a, std::string_view b);

// Escapes text for use inside a JSON string literal (no quotes added). Control characters
// become \uXXXX (or \n, \t, ...) and invalid UTF-8 becomes U+FFFD, so the result is
// always valid JSON whatever bytes came in.
std::string json_escape(std::string_view in);

}  // namespace kodo
