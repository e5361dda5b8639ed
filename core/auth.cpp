#include "core/auth.hpp"

#include <kodo/host/error.hpp>
#include "core/event.hpp"
#include "core/ids.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>

namespace kodo {

namespace {

constexpr const char *kHeaderKey = "kodosumi_api_key";  // header names arrive lower-cased
constexpr const char *kCookieKey = "kodosumi_jwt";
// Checked against when the name is unknown, so that an unknown name costs what a wrong
// password costs (no account enumeration by timing). A $2b$ hash of a random password.
constexpr const char *kDummyHash = "$2b$12$oYctnscAvQe4iCYXZ/C/cOby3/a1pf5RibtQfkc5UxWioy5Wp8m8S";

std::string errno_text() {
  return std::generic_category().message(errno);
}

std::string read_key_file(const std::string &file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) throw Error(KODO_ERR_IO, "signing key file " + file + ": " + errno_text());
  struct stat st {};
  std::string key;
  if (::fstat(fd, &st) == 0 && (st.st_mode & 077) == 0) {
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(fd, buffer, sizeof buffer)) > 0) key.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  if ((st.st_mode & 077) != 0)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "signing key file " + file + " is readable by others: chmod 600 it");
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
  if (key.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, "signing key file " + file + " is empty");
  return key;
}

}  // namespace

double LoginLimiter::blocked_for(const std::string &key) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = Clock::now();
  expire(now);
  auto it = failures_.find(key);
  if (it == failures_.end() || it->second.size() < max_) return 0;
  const auto free_at = it->second.front() + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(window_s_));
  return std::max(0.001, std::chrono::duration<double>(free_at - now).count());
}

void LoginLimiter::failed(const std::string &key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto &times = failures_[key];
  times.push_back(Clock::now());
  if (times.size() > max_) times.erase(times.begin());
}

void LoginLimiter::succeeded(const std::string &key) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_.erase(key);
}

// Drops failures older than the window, so the map holds only recent clients.
void LoginLimiter::expire(Clock::time_point now) {
  const auto window =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(window_s_));
  for (auto it = failures_.begin(); it != failures_.end();) {
    auto &times = it->second;
    times.erase(std::remove_if(times.begin(), times.end(),
                               [&](Clock::time_point t) { return now - t >= window; }),
                times.end());
    it = times.empty() ? failures_.erase(it) : std::next(it);
  }
}

std::string load_or_create_signing_key(const std::string &configured, const std::string &file) {
  if (!configured.empty()) return configured;
  struct stat st {};
  if (::stat(file.c_str(), &st) == 0) return read_key_file(file);
  std::error_code ec;
  const auto parent = std::filesystem::path(file).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::string key = base64url_encode(random_bytes(32));
  // O_EXCL: two hosts starting at once do not overwrite each other's key.
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return read_key_file(file);
    throw Error(KODO_ERR_IO, "cannot create signing key file " + file + ": " + errno_text());
  }
  const std::string line = key + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!written || !synced) {
    ::unlink(file.c_str());
    throw Error(KODO_ERR_IO, "cannot write signing key file " + file);
  }
  return key;
}

std::optional<std::string> cookie_value(const HttpRequest &request, const std::string &name) {
  for (const auto &[header, value] : request.headers) {
    if (header != "cookie") continue;
    size_t at = 0;
    while (at < value.size()) {
      size_t end = value.find(';', at);
      if (end == std::string::npos) end = value.size();
      std::string_view pair(value.data() + at, end - at);
      while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
      const size_t eq = pair.find('=');
      if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
        std::string_view v = pair.substr(eq + 1);
        if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
        return std::string(v);
      }
      at = end + 1;
    }
  }
  return std::nullopt;
}

Auth::Auth(std::unique_ptr<AccountStore> accounts, std::string key, const AuthConfig &config)
    : accounts_(std::move(accounts)),
      key_(std::move(key)),
      config_(config),
      by_client_(config.login_failures, config.login_window_s),
      by_account_(config.login_failures, config.login_window_s) {}

namespace {

Caller caller_of(const TokenClaims &claims, const Account &account) {
  Caller caller;
  caller.user = account.id;
  caller.name = account.name;
  // A flow's token acts as its user on its own execution only, never as an operator.
  caller.is_operator = account.is_operator && claims.fid.empty();
  caller.fid = claims.fid;
  return caller;
}

}  // namespace

std::optional<TokenClaims> Auth::claims_of(const HttpRequest &request) const {
  std::optional<std::string> token;
  if (const std::string *header = request.header(kHeaderKey)) token = *header;
  if (!token) token = cookie_value(request, kCookieKey);
  if (!token) return std::nullopt;
  return verify_token(key_, *token, unix_now());
}

std::optional<Caller> Auth::authenticate(const HttpRequest &request) {
  auto claims = claims_of(request);
  if (!claims) return std::nullopt;
  auto account = accounts_->by_id(claims->sub);
  if (!account) return std::nullopt;
  remember(*account);
  if (!account->active) return std::nullopt;
  return caller_of(*claims, *account);
}

std::optional<Caller> Auth::cached_caller(const HttpRequest &request) {
  auto claims = claims_of(request);
  if (!claims) return std::nullopt;
  std::lock_guard<std::mutex> lock(known_mu_);
  auto it = known_.find(claims->sub);
  if (it == known_.end() || now_seconds() - it->second.read_at > kAccountFreshS ||
      !it->second.account.active)
    return std::nullopt;
  return caller_of(*claims, it->second.account);
}

void Auth::remember(const Account &account) {
  constexpr size_t kMaxKnown = 4096;
  const double now = now_seconds();
  std::lock_guard<std::mutex> lock(known_mu_);
  if (known_.size() >= kMaxKnown && known_.count(account.id) == 0) known_.clear();
  KnownAccount &known = known_[account.id];
  known.account = account;
  known.account.password_hash.clear();  // not needed to tell who calls
  known.read_at = now;
}

void Auth::forget_account(const std::string &id) {
  std::lock_guard<std::mutex> lock(known_mu_);
  known_.erase(id);
}

LoginResult Auth::login(const std::string &name, const std::string &password,
                        const std::string &client, Account *out, double *retry_after_s) {
  const std::string account_key = "account:" + name;
  const double wait =
      std::max(by_client_.blocked_for(client), by_account_.blocked_for(account_key));
  if (wait > 0) {
    if (retry_after_s) *retry_after_s = wait;
    return LoginResult::RateLimited;
  }
  auto account = accounts_->by_name(name);
  const bool matches = verify_password(password, account ? account->password_hash : kDummyHash);
  if (!account || !matches || !account->active) {
    by_client_.failed(client);
    by_account_.failed(account_key);
    return LoginResult::Refused;
  }
  by_account_.succeeded(account_key);
  if (out) *out = *account;
  return LoginResult::Ok;
}

std::string Auth::token_for(const Account &account) const {
  TokenClaims claims;
  claims.sub = account.id;
  claims.iat = unix_now();
  claims.exp = claims.iat + kTokenLifetimeS;
  return sign_token(key_, claims);
}

std::string Auth::flow_token(const std::string &user, const std::string &fid,
                             double lifetime_s) const {
  TokenClaims claims;
  claims.sub = user;
  claims.fid = fid;
  claims.iat = unix_now();
  claims.exp = claims.iat + lifetime_s;
  return sign_token(key_, claims);
}

std::string Auth::ensure_admin(bool generate) {
  if (accounts_->by_name("admin")) return "";
  Account admin;
  admin.id = new_account_id();
  admin.name = "admin";
  admin.email = config_.admin_email;
  admin.is_operator = true;
  std::string password = generate ? base64url_encode(random_bytes(12)) : config_.admin_password;
  admin.password_hash = hash_password(password);
  accounts_->insert(admin);
  return password;
}

bool Auth::admin_has_default_password() {
  auto admin = accounts_->by_name("admin");
  return admin && verify_password("admin", admin->password_hash);
}

}  // namespace kodo
