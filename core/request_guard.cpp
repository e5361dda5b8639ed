// request_guard.cpp: see request_guard.hpp.
#include "core/request_guard.hpp"

#include <kodo/host/error.hpp>
#include "core/http_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>

namespace kodo {

namespace {

constexpr size_t kShownChars = 200;  // of a header value quoted in an error

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string shown(std::string_view value) {
  if (value.size() <= kShownChars) return std::string(value);
  return std::string(value.substr(0, kShownChars)) + "...";
}

bool state_changing(const std::string &method) {
  return method != "GET" && method != "HEAD" && method != "OPTIONS";
}

// "scheme://authority" and what follows (a path for a Referer, nothing for an Origin):
// the authority, or nullopt when the text is not an absolute URL of that form.
std::optional<std::string_view> url_authority(std::string_view url) {
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos || sep == 0) return std::nullopt;
  for (size_t i = 0; i < sep; ++i) {
    const char c = url[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alpha && (i == 0 || !(is_name_char(c) || c == '+'))) return std::nullopt;
  }
  std::string_view rest = url.substr(sep + 3);
  return rest.substr(0, rest.find_first_of("/?#"));
}

}  // namespace

std::optional<HostName> parse_host(std::string_view authority) {
  HostName out;
  std::string_view port;
  bool has_port = false;
  if (authority.empty()) return std::nullopt;
  if (authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string literal(authority.substr(1, close - 1));
    in6_addr address{};
    if (::inet_pton(AF_INET6, literal.c_str(), &address) != 1) return std::nullopt;
    char text[INET6_ADDRSTRLEN];
    if (::inet_ntop(AF_INET6, &address, text, sizeof text) == nullptr) return std::nullopt;
    out.name = text;
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = rest.substr(1);
      has_port = true;
    }
  } else {
    const size_t colon = authority.find(':');
    std::string_view name = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      has_port = true;
    }
    if (name.size() > 254 || !std::all_of(name.begin(), name.end(), is_name_char))
      return std::nullopt;
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);  // the root: same name
    if (name.empty()) return std::nullopt;
    out.name.reserve(name.size());
    for (char c : name) out.name.push_back(lower(c));
  }
  if (has_port && !port.empty()) {
    if (port.size() > 5) return std::nullopt;
    unsigned value = 0;
    for (char c : port) {
      if (c < '0' || c > '9') return std::nullopt;
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 65535) return std::nullopt;
    out.port = static_cast<uint16_t>(value);
  }
  return out;
}

RequestGuard::RequestGuard(const std::vector<std::string> &allowed_hosts,
                           const std::string &listen_address) {
  for (const std::string &entry : allowed_hosts) {
    if (entry == "*") {
      any_host_ = true;
      continue;
    }
    // A bare IPv6 literal is welcome here, though a Host header brackets it.
    const bool bare_ipv6 = std::count(entry.begin(), entry.end(), ':') > 1 && entry[0] != '[';
    auto host = parse_host(bare_ipv6 ? "[" + entry + "]" : entry);
    if (!host || host->port)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "--allowed-hosts: '" + entry +
                      "' is not a host name (give names or addresses without ports, or *)");
    configured_.push_back(host->name);
  }
  names_ = configured_;
  if (allowed_hosts.empty()) {
    names_ = {"localhost", "127.0.0.1", "::1"};
    const ListenAddress listen = parse_listen_address(listen_address);
    const bool bare_ipv6 = listen.host.find(':') != std::string::npos;
    auto own = parse_host(bare_ipv6 ? "[" + listen.host + "]" : listen.host);
    if (own && own->name != "0.0.0.0" && own->name != "::" && !allowed(own->name))
      names_.push_back(own->name);
  }
}

std::string RequestGuard::describe() const {
  if (any_host_) return "*";
  std::string out;
  for (const std::string &name : names_) out += (out.empty() ? "" : ", ") + name;
  return out;
}

bool RequestGuard::allowed(const std::string &name) const {
  return any_host_ || std::find(names_.begin(), names_.end(), name) != names_.end();
}

std::optional<Refusal> RequestGuard::check(const HttpRequest &request) const {
  std::string host_name;
  if (auto refusal = check_host(request, &host_name)) return refusal;
  if (!state_changing(request.method)) return std::nullopt;
  return check_origin(request, host_name);
}

std::optional<Refusal> RequestGuard::check_host(const HttpRequest &request,
                                                std::string *host_name) const {
  const std::string *host = nullptr;
  for (const auto &[name, value] : request.headers) {
    if (name != "host") continue;
    if (host != nullptr) return Refusal{400, "more than one Host header"};
    host = &value;
  }
  // Browsers always send one; a program that leaves it out names no host to rebind.
  if (host == nullptr) return std::nullopt;
  auto parsed = parse_host(*host);
  if (!parsed) return Refusal{400, "malformed Host header '" + shown(*host) + "'"};
  // An absolute-form target names the host that counts (RFC 9112, 3.2.2); check it as well.
  std::vector<std::pair<std::string, std::string>> names = {{"Host", parsed->name}};
  if (auto authority = url_authority(request.target)) {
    auto target = parse_host(*authority);
    if (!target)
      return Refusal{400, "malformed host in the request target '" + shown(request.target) + "'"};
    names.emplace_back("request target host", target->name);
  }
  for (const auto &[what, name] : names) {
    if (allowed(name)) continue;
    std::string message = what;
    message.append(" '").append(name).append("' is not a name this host answers to (it answers ");
    message.append(describe()).append("; add names with --allowed-hosts)");
    return Refusal{421, message};
  }
  *host_name = parsed->name;
  return std::nullopt;
}

std::optional<Refusal> RequestGuard::check_origin(const HttpRequest &request,
                                                  const std::string &host_name) const {
  std::string_view what = "Origin";
  const std::string *value = request.header("origin");
  if (value == nullptr || value->empty()) {
    what = "Referer";
    value = request.header("referer");
  }
  if (value == nullptr || value->empty()) return std::nullopt;  // not sent by a browser
  const std::string method = request.method;
  auto refuse = [&](const std::string &named, const std::string &why) {
    return Refusal{403, "cross-site " + method + " refused: " + std::string(what) + " '" +
                            shown(named) + "' " + why};
  };
  if (*value == "null") return refuse(*value, "is an opaque origin (a sandbox or a file)");
  auto authority = url_authority(*value);
  auto origin = authority ? parse_host(*authority) : std::nullopt;
  if (!origin) return refuse(*value, "is not a URL with a host");
  // Only the origin is shown: a Referer's path and query may hold what is nobody's business.
  const size_t origin_end =
      static_cast<size_t>(authority->data() - value->data()) + authority->size();
  const std::string named = value->substr(0, origin_end);
  const bool own = host_name.empty()
                       ? std::find(names_.begin(), names_.end(), origin->name) != names_.end()
                       : origin->name == host_name;
  if (own || std::find(configured_.begin(), configured_.end(), origin->name) != configured_.end())
    return std::nullopt;
  return refuse(named, "is not this host (" + (host_name.empty() ? describe() : host_name) + ")");
}

}  // namespace kodo
