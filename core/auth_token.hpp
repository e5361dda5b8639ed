// auth_token.hpp: kodosumi's login tokens. HS256 JWTs whose `sub` is the role's UUID, with
// `iat` and `exp` as (fractional) Unix seconds, so that a token kodosumi signs with the same
// key is accepted here and the reverse. A flow's token also carries `fid`: it reaches only
// that execution.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kodo {

struct TokenClaims {
  std::string sub;  // the role's UUID as kodosumi prints it (8-4-4-4-12)
  double iat = 0;
  double exp = 0;
  std::string fid;  // empty: the whole account; otherwise only this execution
};

// kodosumi's DEFAULT_TIME_DELTA: a login token lives one day.
constexpr double kTokenLifetimeS = 86400;

// A flow's token lives for the flow's time limit and a margin for its last calls; a login's
// day when the flow has no limit.
inline double flow_token_lifetime_s(double flow_timeout_s) {
  return flow_timeout_s > 0 ? flow_timeout_s + 300 : kTokenLifetimeS;
}

std::string base64url_encode(std::string_view bytes);
// nullopt unless `text` is unpadded base64url.
std::optional<std::string> base64url_decode(std::string_view text);

// Throws kodo::Error(KODO_ERR_INVALID_ARGUMENT) when the key is empty.
std::string sign_token(const std::string &key, const TokenClaims &claims);

// The claims of a token signed with `key` that has not expired at `now`; otherwise nullopt
// and, in `why`, a reason that never repeats the token (alg other than HS256, bad
// signature, expired, malformed).
std::optional<TokenClaims> verify_token(const std::string &key, std::string_view token, double now,
                                        std::string *why = nullptr);

// Seconds since the epoch, fractional (as kodosumi's helper.now()).
double unix_now();

}  // namespace kodo
