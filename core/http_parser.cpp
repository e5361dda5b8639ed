// http_parser.cpp: see http_parser.hpp. Every index is checked against the buffer size,
// numbers are parsed with overflow checks, and no function here throws on input (only
// std::bad_alloc can escape, and allocations are bounded by the input and the limits).
#include "core/http_parser.hpp"

#include <cstdint>
#include <limits>

namespace kodo {
namespace {

constexpr size_t kMaxChunkLine = 1024;  // chunk-size line incl. extensions
constexpr size_t kQuoteMax = 48;        // how much of the input an error message echoes

bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~': return true;
    default: return false;
  }
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_tchar(static_cast<unsigned char>(c))) return false;
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
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

ParseResult incomplete(bool headers_complete = false, size_t need = 0) {
  ParseResult r;
  r.status = ParseStatus::Incomplete;
  r.headers_complete = headers_complete;
  r.need_bytes = need;
  return r;
}

// Finds the line starting at pos. On success sets line (without CR/LF) and next (the
// position after the LF). Returns false when no LF is in the buffer yet.
bool next_line(std::string_view buf, size_t pos, std::string_view &line, size_t &next) {
  size_t nl = buf.find('\n', pos);
  if (nl == std::string_view::npos) return false;
  line = buf.substr(pos, nl - pos);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  next = nl + 1;
  return true;
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

// Checks one "name: value" line; fills name/value on success, else returns the message.
bool split_field(std::string_view line, std::string_view &name, std::string_view &value,
                 std::string &why) {
  if (line.front() == ' ' || line.front() == '\t') {
    why = "obsolete header line folding is not accepted";
    return false;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    why = "malformed header line " + quote(line) + " (no ':')";
    return false;
  }
  name = line.substr(0, colon);
  if (!is_token(name)) {
    why = "invalid header name " + quote(name);
    return false;
  }
  value = trim_ows(line.substr(colon + 1));
  if (!valid_field_value(value)) {
    why = "invalid character in the value of header " + quote(name);
    return false;
  }
  return true;
}

// Visits the non-empty, trimmed elements of a comma-separated header list.
template <typename F>
void for_each_list_item(std::string_view v, F &&f) {
  while (true) {
    size_t comma = v.find(',');
    std::string_view item = trim_ows(v.substr(0, comma));
    if (!item.empty()) f(item);
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
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

// Decodes a chunked body starting at start. On Complete sets consumed (absolute).
ParseResult parse_chunked(std::string_view buf, size_t start, const HttpLimits &limits,
                          std::string &body) {
  // The encoding of a body may legitimately be larger than the body itself (chunk
  // headers, extensions), but not without bound: this caps what one request can make us
  // buffer.
  size_t raw_limit = limits.max_body_bytes;
  raw_limit = raw_limit > (std::numeric_limits<size_t>::max() - 65536) / 2
                  ? std::numeric_limits<size_t>::max()
                  : raw_limit * 2 + 65536;
  auto too_large = [&] {
    return fail(413, "chunked request body exceeds the limit of " +
                         std::to_string(limits.max_body_bytes) + " bytes");
  };
  size_t p = start;
  while (true) {
    if (p - start > raw_limit) return too_large();
    // chunk-size [ chunk-ext ] CRLF
    std::string_view line;
    size_t next = 0;
    if (!next_line(buf, p, line, next)) {
      if (buf.size() - p > kMaxChunkLine + 1) return fail(400, "chunk size line too long");
      return incomplete(true);
    }
    if (line.size() > kMaxChunkLine) return fail(400, "chunk size line too long");
    size_t i = 0;
    size_t size = 0;
    bool overflow = false;
    while (i < line.size() && hex_value(line[i]) >= 0) {
      if (size > (std::numeric_limits<size_t>::max() >> 4)) overflow = true;
      if (!overflow) size = size * 16 + static_cast<size_t>(hex_value(line[i]));
      ++i;
    }
    if (i == 0) return fail(400, "invalid chunk size line " + quote(line));
    std::string_view rest = trim_ows(line.substr(i));
    if (!rest.empty() && rest.front() != ';')
      return fail(400, "invalid chunk size line " + quote(line));
    if (!valid_field_value(rest)) return fail(400, "invalid character in chunk extension");
    if (overflow || size > limits.max_body_bytes - body.size()) return too_large();
    p = next;

    if (size == 0) {
      // Trailer section: header lines up to an empty line. They are checked but not kept:
      // nothing we serve needs them, and merging them into headers invites confusion.
      size_t trailer_start = p;
      while (true) {
        if (!next_line(buf, p, line, next)) {
          if (buf.size() - trailer_start >= limits.max_header_bytes)
            return fail(431, "request trailers exceed " + std::to_string(limits.max_header_bytes) +
                                 " bytes");
          return incomplete(true);
        }
        if (next - trailer_start > limits.max_header_bytes)
          return fail(
              431, "request trailers exceed " + std::to_string(limits.max_header_bytes) + " bytes");
        p = next;
        if (line.empty()) break;
        std::string_view name, value;
        std::string why;
        if (!split_field(line, name, value, why)) return fail(400, "in trailer: " + why);
      }
      ParseResult r;
      r.status = ParseStatus::Complete;
      r.consumed = p;
      return r;
    }

    // chunk-data CRLF
    if (buf.size() - p < size) return incomplete(true, p + size + 1);
    body.append(buf.data() + p, size);
    p += size;
    if (p >= buf.size()) return incomplete(true, p + 1);
    if (buf[p] == '\n') {
      p += 1;
    } else if (buf[p] == '\r') {
      if (p + 1 >= buf.size()) return incomplete(true, p + 2);
      if (buf[p + 1] != '\n') return fail(400, "chunk data not followed by CRLF");
      p += 2;
    } else {
      return fail(400, "chunk data not followed by CRLF");
    }
  }
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

ParseResult parse_http_request(std::string_view buf, const HttpLimits &limits, HttpRequest &out) {
  out = HttpRequest();
  const size_t max_head = limits.max_header_bytes;
  auto head_too_large = [&] {
    return fail(431, "request header section exceeds " + std::to_string(max_head) + " bytes");
  };

  // RFC 9112 2.2: ignore empty lines before the request line (some clients send a CRLF
  // after a body). They count toward the header limit, so they cannot go on forever.
  size_t pos = 0;
  while (pos < buf.size() && (buf[pos] == '\n' || buf[pos] == '\r')) {
    if (buf[pos] == '\r') {
      if (pos + 1 >= buf.size()) return incomplete();
      if (buf[pos + 1] != '\n') return fail(400, "bare CR before the request line");
      pos += 2;
    } else {
      pos += 1;
    }
    if (pos >= max_head) return head_too_large();
  }

  // Request line.
  std::string_view line;
  size_t next = 0;
  if (!next_line(buf, pos, line, next)) {
    if (buf.size() >= max_head) return head_too_large();
    return incomplete();
  }
  if (next > max_head) return head_too_large();
  pos = next;

  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return fail(400, "malformed request line " + quote(line));
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) return fail(400, "invalid method " + quote(method));
  if (target.empty()) return fail(400, "empty request target");
  for (char ch : target) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == 0x7f) return fail(400, "invalid character in request target");
  }
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[5] < '0' ||
      version[5] > '9' || version[6] != '.' || version[7] < '0' || version[7] > '9')
    return fail(400, "malformed HTTP version " + quote(version));
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1'))
    return fail(505, "HTTP version " + quote(version) + " is not supported (HTTP/1.0 and 1.1 are)");
  if (!known_method(method)) return fail(501, "method " + quote(method) + " is not implemented");
  out.http_minor = version[7] - '0';
  out.method.assign(method);
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

  // Header fields.
  while (true) {
    if (!next_line(buf, pos, line, next)) {
      if (buf.size() >= max_head) return head_too_large();
      return incomplete();
    }
    if (next > max_head) return head_too_large();
    pos = next;
    if (line.empty()) break;
    if (out.headers.size() >= limits.max_headers)
      return fail(431, "too many header fields (limit " + std::to_string(limits.max_headers) + ")");
    std::string_view name, value;
    if (!split_field(line, name, value, why)) return fail(400, why);
    std::string lname(name);
    for (char &c : lname) c = lower(c);
    out.headers.emplace_back(std::move(lname), std::string(value));
  }
  const size_t head_end = pos;

  // Connection semantics: 1.1 persists unless "close"; 1.0 only with "keep-alive".
  bool saw_close = false, saw_keep_alive = false;
  bool chunked = false, has_te = false;
  bool has_length = false;
  size_t length = 0;
  for (const auto &h : out.headers) {
    if (h.first == "connection") {
      for_each_list_item(h.second, [&](std::string_view t) {
        if (iequals(t, "close")) saw_close = true;
        if (iequals(t, "keep-alive")) saw_keep_alive = true;
      });
    } else if (h.first == "transfer-encoding") {
      has_te = true;
      std::string problem;
      int code = 0;
      for_each_list_item(h.second, [&](std::string_view t) {
        if (code != 0) return;
        if (chunked) {  // something after chunked, or chunked twice
          code = 400;
          problem = "chunked must be the last transfer coding, and appear once";
        } else if (iequals(t, "chunked")) {
          chunked = true;
        } else {
          code = 501;
          problem = "unsupported transfer coding " + quote(t);
        }
      });
      if (code != 0) return fail(code, problem);
    } else if (h.first == "content-length") {
      // A list of identical values is tolerated (RFC 9110 8.6); differing values are
      // a smuggling attempt or a broken client.
      std::string problem;
      bool any = false;
      for_each_list_item(h.second, [&](std::string_view t) {
        if (!problem.empty()) return;
        size_t v = 0;
        for (char c : t) {
          if (c < '0' || c > '9') {
            problem = "invalid Content-Length " + quote(h.second);
            return;
          }
          // Saturate instead of overflowing; anything this large is refused below.
          size_t d = static_cast<size_t>(c - '0');
          v = v > (std::numeric_limits<size_t>::max() - d) / 10 ? std::numeric_limits<size_t>::max()
                                                                : v * 10 + d;
        }
        if (has_length && v != length) {
          problem = "conflicting Content-Length values";
          return;
        }
        has_length = true;
        any = true;
        length = v;
      });
      if (!problem.empty()) return fail(400, problem);
      if (!any) return fail(400, "empty Content-Length");
    }
  }
  out.keep_alive = out.http_minor == 1 ? !saw_close : (saw_keep_alive && !saw_close);

  if (has_te) {
    if (out.http_minor == 0)
      return fail(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request");
    if (has_length) return fail(400, "both Transfer-Encoding and Content-Length are present");
    if (!chunked) return fail(400, "empty Transfer-Encoding");
    return parse_chunked(buf, head_end, limits, out.body);
  }
  if (has_length) {
    if (length > limits.max_body_bytes)
      return fail(413, "request body exceeds the limit of " +
                           std::to_string(limits.max_body_bytes) + " bytes");
    if (buf.size() - head_end < length) return incomplete(true, head_end + length);
    out.body.assign(buf.data() + head_end, length);
    ParseResult r;
    r.status = ParseStatus::Complete;
    r.consumed = head_end + length;
    return r;
  }
  ParseResult r;
  r.status = ParseStatus::Complete;
  r.consumed = head_end;
  return r;
}

}  // namespace kodo
