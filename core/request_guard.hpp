// request_guard.hpp: what a browser must not be able to make the host do.
//
// DNS rebinding: a page whose name an attacker points at 127.0.0.1 reaches a loopback host
// with its own name in Host. The host answers only the names it is configured for
// (--allowed-hosts; by default localhost, 127.0.0.1, ::1 and the listen address; "*" for
// any): another Host is 421, a malformed one or two of them 400. A request without Host is
// not a browser's and passes.
//
// Cross-site requests: a page elsewhere can POST to the host (a text/plain form needs no
// preflight). A state-changing request (any method but GET, HEAD, OPTIONS) that carries an
// Origin, or without one a Referer, naming another host is 403. Requests that carry neither
// (curl, kodosumi's clients, other programs) are not browsers' and pass.
#pragma once

#include "core/http_parser.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kodo {

// A Host header or URL authority, normalized: the name lower-cased, without brackets or a
// trailing dot; IPv6 literals in their canonical text form.
struct HostName {
  std::string name;
  std::optional<uint16_t> port;
};
// nullopt when it is not "name[:port]", "IPv4[:port]" or "[IPv6][:port]".
std::optional<HostName> parse_host(std::string_view authority);

struct Refusal {
  int status = 0;
  std::string message;  // for a JSON error body
};

class RequestGuard {
 public:
  // allowed_hosts: names from --allowed-hosts (no ports); empty for the defaults, which are
  // localhost, 127.0.0.1, ::1 and the host of listen_address (unless it is every interface).
  // Throws kodo::Error(KODO_ERR_INVALID_ARGUMENT) naming an entry that is not a host name.
  RequestGuard(const std::vector<std::string> &allowed_hosts, const std::string &listen_address);

  // Why the request must be refused, or nullopt when it may be served.
  std::optional<Refusal> check(const HttpRequest &request) const;

  // The names answered, for the log ("*" when any).
  std::string describe() const;

 private:
  std::optional<Refusal> check_host(const HttpRequest &request, std::string *host_name) const;
  std::optional<Refusal> check_origin(const HttpRequest &request,
                                      const std::string &host_name) const;
  bool allowed(const std::string &name) const;

  bool any_host_ = false;
  std::vector<std::string> names_;       // answered
  std::vector<std::string> configured_;  // given with --allowed-hosts: trusted as origins too
};

}  // namespace kodo
