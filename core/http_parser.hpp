// http_parser.hpp: the request model the API sees, made from Boost.Beast's strict HTTP/1.1
// parser (CRLF only, no obs-fold, one Content-Length or chunked, limits on the header
// section and body). The server feeds Beast from the socket; parse_http_request does the
// same on a buffer, for tests and fuzzing.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>

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
  std::string peer;         // the client's address (login limits count per client)
  bool tls = false;         // arrived over TLS: cookies get Secure

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

using BeastRequest = boost::beast::http::request<boost::beast::http::string_body>;

enum class ParseStatus { Complete, Incomplete, Error };

struct ParseResult {
  ParseStatus status = ParseStatus::Incomplete;
  size_t consumed = 0;  // Complete: bytes of the buffer this request took (for pipelining)
  int http_status = 0;  // Error: 400, 413, 431, 501 or 505
  std::string error;    // Error: what was wrong, for a human
};

// Parses one request from the start of buffer into out (which is reset first).
ParseResult parse_http_request(std::string_view buffer, const HttpLimits &limits, HttpRequest &out);

// Turns a message Beast has parsed into out: checks the version (1.0, 1.1), the method
// (those kodo serves), the target (origin-, absolute- or asterisk-form, percent-encoding,
// no NUL), the header count and values. Moves the body out of msg.
ParseResult request_from_message(BeastRequest &&msg, const HttpLimits &limits, HttpRequest &out);

// The HTTP status for an error from Beast's parser: 431 header section too large, 413 body
// too large, else 400.
int parse_error_status(const boost::system::error_code &ec);
// What was wrong, for a human, naming the limit when one was passed.
std::string parse_error_message(const boost::system::error_code &ec, const HttpLimits &limits);
// Checks a parsed head before its body is read: no transfer coding but chunked (501), and
// chunked once; none in HTTP/1.0 (400).
ParseResult check_head(const boost::beast::http::request_header<> &head);

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
