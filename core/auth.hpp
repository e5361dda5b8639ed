// auth.hpp: who a request acts as. kodosumi's login tokens (cookie kodosumi_jwt or header
// KODOSUMI_API_KEY) checked against the signing key, the accounts behind them, the login
// rate limit, and the signing key itself (generated into a file only its user can read
// when none is configured).
#pragma once

#include "core/accounts.hpp"
#include "core/auth_token.hpp"
#include "core/http_parser.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace kodo {

struct AuthConfig {
  // "auto": on when the admin database exists or the address is not loopback; "on"; "off"
  // (everything acts as --default-user; refused on a non-loopback address).
  std::string mode = "auto";
  std::string admin_database = "sqlite+aiosqlite:///./data/admin.db";  // kodosumi's default
  std::string secret_key;                             // KODO_SECRET_KEY, kodosumi's name
  std::string secret_key_file = "./data/secret.key";  // used when secret_key is empty
  std::string admin_email = "admin@example.com";
  std::string admin_password = "admin";
  bool admin_password_given = false;
  size_t login_failures = 5;   // failed logins per client, and per account, ...
  double login_window_s = 60;  // ... within this window; more are answered 429
};

// The caller of a request, as its token says.
struct Caller {
  std::string user;  // the role's UUID: executions are stored under it
  std::string name;
  bool is_operator = false;
  std::string fid;  // a flow's token: only this execution
};

// Failed logins counted per key in a sliding window.
class LoginLimiter {
 public:
  LoginLimiter(size_t max_failures, double window_s) : max_(max_failures), window_s_(window_s) {}
  // Seconds until `key` may try again; 0 when it may now.
  double blocked_for(const std::string &key);
  void failed(const std::string &key);
  void succeeded(const std::string &key);

 private:
  using Clock = std::chrono::steady_clock;
  void expire(Clock::time_point now);
  size_t max_;
  double window_s_;
  std::mutex mu_;
  std::map<std::string, std::vector<Clock::time_point>> failures_;
};

// The signing key: `configured` when not empty, else the file's content, else a new random key
// written to the file with mode 0600. Throws kodo::Error naming the file (never the key) when
// it cannot be read or written, or when it is readable by others.
std::string load_or_create_signing_key(const std::string &configured, const std::string &file);

enum class LoginResult { Ok, Refused, RateLimited };

class Auth {
 public:
  Auth(std::unique_ptr<AccountStore> accounts, std::string key, const AuthConfig &config);
  AccountStore &accounts() { return *accounts_; }

  // The caller named by the request's header KODOSUMI_API_KEY or cookie kodosumi_jwt (the
  // header first, as kodosumi), or nullopt when neither holds a valid token of an active account.
  std::optional<Caller> authenticate(const HttpRequest &request);
  // The same answer without the accounts database, for the I/O threads: the request's token
  // checked, and its account as authenticate() read it within the last kAccountFreshS. Null
  // whenever that cannot be told (no token, a bad one, an account not read lately or not
  // active): the request then takes the full route, which answers it.
  std::optional<Caller> cached_caller(const HttpRequest &request);
  // An account was changed here (disabled, its password or role): it is read again.
  void forget_account(const std::string &id);
  // Changes made by another process (kodo-host users ...) are seen within this.
  static constexpr double kAccountFreshS = 1.0;
  // Checks the password; limited per `client` and per account name.
  LoginResult login(const std::string &name, const std::string &password, const std::string &client,
                    Account *out, double *retry_after_s);
  std::string token_for(const Account &account) const;
  // A token for a flow run: the launching user's, reaching only `fid`, for `lifetime_s`.
  std::string flow_token(const std::string &user, const std::string &fid, double lifetime_s) const;
  // Makes the account `admin` (an operator) when it is missing, as kodosumi does on start.
  // Answers the password it was given (generated when `generate` is set), or "" when the
  // account existed.
  std::string ensure_admin(bool generate);
  // True when `admin` still has kodosumi's default password "admin".
  bool admin_has_default_password();

 private:
  std::unique_ptr<AccountStore> accounts_;
  std::string key_;
  AuthConfig config_;
  LoginLimiter by_client_;
  LoginLimiter by_account_;
  struct KnownAccount {
    Account account;
    double read_at = 0;
  };
  std::mutex known_mu_;
  std::unordered_map<std::string, KnownAccount> known_;  // by id, as authenticate() read them
  std::optional<TokenClaims> claims_of(const HttpRequest &request) const;
  void remember(const Account &account);
};

// The cookie kodosumi_jwt's value in a Cookie header, if any.
std::optional<std::string> cookie_value(const HttpRequest &request, const std::string &name);

}  // namespace kodo
