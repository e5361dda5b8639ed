// kodo/url.hpp: parses the server URLs plugins are configured with
// (postgresql://user:pass@host:5432/db?sslmode=disable, redis://:pass@host:6379/0), header-only.
//
// Errors name the part that is wrong and never repeat the password; redacted() is the form to
// log. Userinfo, path and query values are percent-decoded; the host is not (IPv6 literals in
// brackets are kept without them).
#ifndef KODO_URL_HPP
#define KODO_URL_HPP

#include <kodo/plugin.hpp>

#include <string>
#include <utility>
#include <vector>

namespace kodo::sdk {

struct Url {
  std::string scheme;  // lower-cased: "postgresql", "postgresql+asyncpg", "redis"
  std::string user;
  std::string password;
  bool has_password = false;
  std::string host;  // empty when the URL names none
  int port = 0;      // 0 when the URL names none
  std::string path;  // decoded, without the leading '/'
  std::vector<std::pair<std::string, std::string>> query;  // decoded, in order

  // The URL with the password replaced by "***", safe for logs and error messages.
  std::string redacted() const {
    std::string out = scheme + "://";
    if (!user.empty() || has_password) {
      out += user;
      if (has_password) out += ":***";
      out += "@";
    }
    out += host.find(':') != std::string::npos ? "[" + host + "]" : host;
    if (port) out += ":" + std::to_string(port);
    if (!path.empty()) out += "/" + path;
    for (size_t i = 0; i < query.size(); ++i)
      out += (i ? "&" : "?") + query[i].first + "=" +
             (query[i].first == "password" ? "***" : query[i].second);
    return out;
  }

  // The value of query parameter `key`, or `fallback`.
  std::string param(const std::string &key, const std::string &fallback = "") const {
    for (const auto &kv : query)
      if (kv.first == key) return kv.second;
    return fallback;
  }
};

namespace detail {

inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// `what` names the part in the error; `secret` parts are not echoed.
inline std::string percent_decode(const std::string &text, const char *what, bool secret) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    const int high = i + 2 < text.size() ? hex_value(text[i + 1]) : -1;
    const int low = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
    if (high < 0 || low < 0)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  std::string("URL ") + what + " has a '%' not followed by two hex digits" +
                      (secret ? "" : " in '" + text + "'"));
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

}  // namespace detail

// Parses `text`; throws Error(KODO_ERR_INVALID_ARGUMENT) naming what is wrong. `allowed` lists
// the schemes accepted (lower case); empty accepts any.
inline Url parse_url(const std::string &text, const std::vector<std::string> &allowed = {}) {
  auto fail = [](const std::string &message) {
    throw Error(KODO_ERR_INVALID_ARGUMENT, "invalid URL: " + message);
  };
  Url url;
  const size_t colon = text.find("://");
  if (colon == std::string::npos || colon == 0) fail("expected scheme://..., got no scheme");
  for (size_t i = 0; i < colon; ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    bool ok = (c >= 'a' && c <= 'z') || (i > 0 && ((c >= '0' && c <= '9') || c == '+' ||
                                                   c == '-' || c == '.'));
    if (!ok) fail("the scheme '" + text.substr(0, colon) + "' has a character not allowed");
    url.scheme += c;
  }
  if (!allowed.empty()) {
    bool known = false;
    std::string list;
    for (const auto &s : allowed) {
      known = known || s == url.scheme;
      list += (list.empty() ? "" : ", ") + s + "://";
    }
    if (!known) fail("scheme '" + url.scheme + "://' is not one of " + list);
  }
  std::string rest = text.substr(colon + 3);
  for (char c : rest)
    if (static_cast<unsigned char>(c) < 0x21 || c == 0x7F)
      fail("it contains a space or control character (percent-encode it)");

  // Split off the query, then the path, then the userinfo: '@' may appear in neither the host
  // nor the port, so the last '@' before the path ends the userinfo.
  std::string query;
  if (size_t q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest.resize(q);
  }
  if (size_t hash = query.find('#'); hash != std::string::npos) query.resize(hash);
  std::string authority = rest;
  if (size_t slash = rest.find('/'); slash != std::string::npos) {
    authority = rest.substr(0, slash);
    url.path = detail::percent_decode(rest.substr(slash + 1), "path", false);
  }
  if (size_t at = authority.rfind('@'); at != std::string::npos) {
    std::string userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    size_t split = userinfo.find(':');
    url.user = detail::percent_decode(userinfo.substr(0, split), "user name", false);
    if (split != std::string::npos) {
      url.has_password = true;
      url.password = detail::percent_decode(userinfo.substr(split + 1), "password", true);
    }
  }
  std::string port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) fail("the IPv6 host '" + authority + "' lacks its ']'");
    url.host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') fail("unexpected '" + after + "' after the IPv6 host");
      port = after.substr(1);
    }
  } else {
    size_t split = authority.find(':');
    url.host = authority.substr(0, split);
    if (split != std::string::npos) port = authority.substr(split + 1);
  }
  const bool bracketed = !authority.empty() && authority[0] == '[';
  for (char c : url.host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || (bracketed && (c == ':' || c == '%'));
    if (!ok) fail("the host '" + url.host + "' has a character not allowed");
  }
  if (!port.empty()) {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) < 1 || std::stoi(port) > 65535)
      fail("the port '" + port + "' is not a number from 1 to 65535");
    url.port = std::stoi(port);
  }
  size_t start = 0;
  while (start < query.size()) {
    size_t end = query.find('&', start);
    if (end == std::string::npos) end = query.size();
    std::string item = query.substr(start, end - start);
    if (!item.empty()) {
      size_t eq = item.find('=');
      std::string key = detail::percent_decode(item.substr(0, eq), "query key", false);
      std::string value = eq == std::string::npos
                              ? ""
                              : detail::percent_decode(item.substr(eq + 1), "query value", false);
      if (key.empty()) fail("a query parameter has no name");
      url.query.emplace_back(std::move(key), std::move(value));
    }
    start = end + 1;
  }
  return url;
}

}  // namespace kodo::sdk

#endif  // KODO_URL_HPP
