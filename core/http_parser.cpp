// http_parser.cpp: see http_parser.hpp. Framing (request line, fields, Content-Length,
// chunked coding, limits) is Boost.Beast's strict HTTP/1.1 parser; this file turns its
// message into an HttpRequest: target forms, percent-decoding, the methods kodo serves.
// Nothing here throws on input (only std::bad_alloc can escape).
#include "core/http_parser.hpp"

#include <boost/asio/buffer.hpp>

#include <cstdint>

namespace kodo {
namespace {

constexpr size_t kQuoteMax = 48;  // how much of the input an error message echoes

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Echoes a piece of the input in an error message: printable ASCII only, bounded length,
// so messages stay readable and safe to log whatever bytes were sent.
std::string quote(std::string_view s) {
  std::string q = "'";
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < s.size() && i < kQuoteMax; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      q += static_cast<char>(c);
    } else {
      q += "\\x";
      q += digits[c >> 4];
      q += digits[c & 15];
    }
  }
  if (s.size() > kQuoteMax) q += "...";
  q += '\'';
  return q;
}

ParseResult fail(int status, std::string message) {
  ParseResult r;
  r.status = ParseStatus::Error;
  r.http_status = status;
  r.error = std::move(message);
  return r;
}

// Field values: visible ASCII, space, tab and obs-text (>= 0x80). CR, LF, NUL and other
// controls are refused because they enable header injection and smuggling.
bool valid_field_value(std::string_view v) {
  for (char ch : v) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '\t') continue;
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

bool decode_query(std::string_view raw, HttpRequest &out, std::string &why) {
  while (!raw.empty()) {
    size_t amp = raw.find('&');
    std::string_view part = raw.substr(0, amp);
    raw.remove_prefix(amp == std::string_view::npos ? raw.size() : amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string_view k = part.substr(0, eq);
    std::string_view v = eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1);
    bool ok_k = true, ok_v = true;
    std::string key = percent_decode(k, true, ok_k);
    std::string val = percent_decode(v, true, ok_v);
    if (!ok_k || !ok_v) {
      why = "bad percent-encoding in query parameter " + quote(part);
      return false;
    }
    // NUL never belongs in a parameter and would truncate it in C APIs further down.
    if (key.find('\0') != std::string::npos || val.find('\0') != std::string::npos) {
      why = "NUL byte in query parameter " + quote(part);
      return false;
    }
    out.query.emplace_back(std::move(key), std::move(val));
  }
  return true;
}

bool known_method(std::string_view m) {
  static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
  for (const char *k : methods)
    if (m == k) return true;
  return false;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

const std::string *HttpRequest::header(std::string_view name) const {
  for (const auto &h : headers)
    if (iequals(h.first, name)) return &h.second;
  return nullptr;
}

std::optional<std::string> HttpRequest::query_param(std::string_view name) const {
  for (const auto &q : query)
    if (q.first == name) return q.second;
  return std::nullopt;
}

std::string percent_decode(std::string_view in, bool plus_as_space, bool &ok) {
  ok = true;
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      int hi = i + 1 < in.size() ? hex_value(in[i + 1]) : -1;
      int lo = i + 2 < in.size() ? hex_value(in[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        ok = false;
        return out;
      }
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_as_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string json_escape(std::string_view in) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(in.size() + 8);
  size_t i = 0;
  while (i < in.size()) {
    auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20) {
            out += "\\u00";
            out += digits[c >> 4];
            out += digits[c & 15];
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    // Multi-byte UTF-8: copy a well-formed sequence (no overlongs, surrogates or values
    // past U+10FFFF), else emit U+FFFD for the first byte and resync on the next.
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    }
    bool good = len != 0 && i + len <= in.size();
    for (size_t k = 1; good && k < len; ++k) {
      auto cc = static_cast<unsigned char>(in[i + k]);
      if ((cc & 0xc0) != 0x80) good = false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (good) {
      if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
          (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        good = false;
    }
    if (good) {
      out.append(in.data() + i, len);
      i += len;
    } else {
      out += "\\ufffd";
      ++i;
    }
  }
  return out;
}

int parse_error_status(const boost::system::error_code &ec) {
  namespace http = boost::beast::http;
  if (ec == http::error::header_limit) return 431;
  if (ec == http::error::body_limit) return 413;
  return 400;
}

std::string parse_error_message(const boost::system::error_code &ec, const HttpLimits &limits) {
  namespace http = boost::beast::http;
  if (ec == http::error::header_limit)
    return "request header section exceeds " + std::to_string(limits.max_header_bytes) + " bytes";
  if (ec == http::error::body_limit)
    return "request body exceeds the limit of " + std::to_string(limits.max_body_bytes) + " bytes";
  return "malformed request: " + ec.message();
}

ParseResult check_head(const boost::beast::http::request_header<> &head) {
  namespace http = boost::beast::http;
  // Beast takes the last coding to be chunked; kodo decodes no other coding, so anything
  // else is refused rather than handed on still encoded.
  bool chunked = false;
  for (auto it = head.find(http::field::transfer_encoding);
       it != head.end() && it->name() == http::field::transfer_encoding; ++it) {
    if (head.version() == 10)
      return fail(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request");
    std::string_view v(it->value().data(), it->value().size());
    while (true) {
      const size_t comma = v.find(',');
      std::string_view item = v.substr(0, comma);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
      if (!item.empty()) {
        if (!iequals(item, "chunked"))
          return fail(501, "unsupported transfer coding " + quote(item));
        if (chunked) return fail(400, "chunked must appear once, as the last transfer coding");
        chunked = true;
      }
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  ParseResult r;
  r.status = ParseStatus::Complete;
  return r;
}

ParseResult request_from_message(BeastRequest &&msg, const HttpLimits &limits, HttpRequest &out) {
  out = HttpRequest();
  const unsigned version = msg.version();
  if (version != 10 && version != 11)
    return fail(505, "HTTP version " + std::to_string(version / 10) + "." +
                         std::to_string(version % 10) + " is not supported (HTTP/1.0 and 1.1 are)");
  out.http_minor = static_cast<int>(version % 10);
  const std::string_view method(msg.method_string().data(), msg.method_string().size());
  if (!known_method(method)) return fail(501, "method " + quote(method) + " is not implemented");
  out.method.assign(method);
  const std::string_view target(msg.target().data(), msg.target().size());
  if (target.empty()) return fail(400, "empty request target");
  out.target.assign(target);

  // Request target: origin-form "/path?query", absolute-form "http://host/path?query"
  // (which proxies send), or "*" for OPTIONS. A fragment is not part of a request; drop it.
  std::string_view path_and_query = target;
  if (target.front() == '/') {
    // origin-form
  } else if (target == "*" && method == "OPTIONS") {
    path_and_query = "*";
  } else {
    size_t scheme_end = target.find("://");
    std::string_view scheme =
        scheme_end == std::string_view::npos ? std::string_view() : target.substr(0, scheme_end);
    if (!iequals(scheme, "http") && !iequals(scheme, "https"))
      return fail(400, "invalid request target " + quote(target));
    std::string_view rest = target.substr(scheme_end + 3);
    size_t auth_end = rest.find_first_of("/?#");
    if (rest.empty() || auth_end == 0)
      return fail(400, "request target " + quote(target) + " has no host");
    // What follows the authority may start with '?' or '#'; an empty path becomes "/".
    path_and_query =
        auth_end == std::string_view::npos ? std::string_view() : rest.substr(auth_end);
  }
  size_t hash = path_and_query.find('#');
  if (hash != std::string_view::npos) path_and_query = path_and_query.substr(0, hash);
  size_t qmark = path_and_query.find('?');
  std::string_view raw_path = path_and_query.substr(0, qmark);
  if (qmark != std::string_view::npos) out.raw_query.assign(path_and_query.substr(qmark + 1));
  if (raw_path.empty()) raw_path = "/";
  out.raw_path.assign(raw_path);
  bool ok = true;
  out.path = percent_decode(raw_path, false, ok);
  if (!ok) return fail(400, "bad percent-encoding in path " + quote(raw_path));
  if (out.path.find('\0') != std::string::npos) return fail(400, "NUL byte in path");
  std::string why;
  if (!decode_query(out.raw_query, out, why)) return fail(400, why);

  for (const auto &field : msg) {
    if (out.headers.size() >= limits.max_headers)
      return fail(431, "too many header fields (limit " + std::to_string(limits.max_headers) + ")");
    std::string name(field.name_string().data(), field.name_string().size());
    for (char &c : name) c = lower(c);
    std::string_view value(field.value().data(), field.value().size());
    if (!valid_field_value(value))
      return fail(400, "invalid character in the value of header " + quote(name));
    out.headers.emplace_back(std::move(name), std::string(value));
  }
  out.keep_alive = msg.keep_alive();
  out.body = std::move(msg.body());
  ParseResult r;
  r.status = ParseStatus::Complete;
  return r;
}

ParseResult parse_http_request(std::string_view buf, const HttpLimits &limits, HttpRequest &out) {
  namespace http = boost::beast::http;
  out = HttpRequest();
  http::request_parser<http::string_body> parser;
  parser.eager(true);
  parser.header_limit(
      static_cast<std::uint32_t>(std::min<size_t>(limits.max_header_bytes, UINT32_MAX)));
  parser.body_limit(limits.max_body_bytes);
  size_t used = 0;
  bool head_checked = false;
  while (!parser.is_done()) {
    boost::system::error_code ec;
    const size_t n = parser.put(boost::asio::buffer(buf.data() + used, buf.size() - used), ec);
    used += n;
    if (ec == http::error::need_more || (!ec && n == 0)) {
      if (used >= buf.size() || n == 0) return ParseResult{};  // Incomplete
      continue;
    }
    if (ec) return fail(parse_error_status(ec), parse_error_message(ec, limits));
    if (parser.is_header_done() && !head_checked) {
      head_checked = true;
      ParseResult head = check_head(parser.get().base());
      if (head.status == ParseStatus::Error) return head;
    }
  }
  ParseResult r = request_from_message(parser.release(), limits, out);
  if (r.status == ParseStatus::Complete) r.consumed = used;
  return r;
}

}  // namespace kodo
