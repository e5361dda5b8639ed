#include "core/accounts.hpp"

#include <kodo/host/error.hpp>
#include "core/accounts_store.hpp"
#include "core/ids.hpp"
#include "core/locks.hpp"

#include <crypt.h>
#include <openssl/crypto.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace kodo {

namespace {

// kodosumi's bcrypt.gensalt() default cost.
constexpr int kBcryptCost = 12;

std::string scheme_of(const std::string &url) {
  const size_t colon = url.find("://");
  std::string scheme = url.substr(0, colon == std::string::npos ? 0 : colon);
  const size_t plus = scheme.find('+');
  return plus == std::string::npos ? scheme : scheme.substr(0, plus);
}

// SQLite through one connection: the accounts table is tiny and logins are rare.
class SqliteAccounts final : public AccountStore {
 public:
  explicit SqliteAccounts(const std::string &path) {
    std::error_code ec;
    const auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        nullptr) != SQLITE_OK) {
      const std::string message = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      db_ = nullptr;
      throw Error(KODO_ERR_UNAVAILABLE, "admin database " + path + ": " + message);
    }
    sqlite3_busy_timeout(db_, 5000);
  }
  ~SqliteAccounts() override { sqlite3_close(db_); }
  SqliteAccounts(const SqliteAccounts &) = delete;
  SqliteAccounts &operator=(const SqliteAccounts &) = delete;

  void create_schema() override {
    // The DDL SQLAlchemy's create_all emits for kodosumi's Role model.
    exec(
        "CREATE TABLE IF NOT EXISTS roles (id CHAR(32) NOT NULL, name VARCHAR NOT NULL, "
        "email VARCHAR NOT NULL, active BOOLEAN NOT NULL, password VARCHAR NOT NULL, "
        "operator BOOLEAN NOT NULL, PRIMARY KEY (id), UNIQUE (name), UNIQUE (email))",
        {});
  }
  std::optional<Account> by_name(const std::string &name) override {
    auto rows = select("WHERE name = ?", {name});
    if (rows.empty()) return std::nullopt;
    return rows.front();
  }
  std::optional<Account> by_id(const std::string &id) override {
    auto rows = select("WHERE id = ?", {undashed(id)});
    if (rows.empty()) return std::nullopt;
    return rows.front();
  }
  std::vector<Account> list() override { return select("ORDER BY name", {}); }
  void insert(const Account &a) override {
    exec(
        "INSERT INTO roles (id, name, email, active, password, operator) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        {undashed(a.id), a.name, a.email, a.active ? "1" : "0", a.password_hash,
         a.is_operator ? "1" : "0"});
  }
  void update(const Account &a) override {
    exec(
        "UPDATE roles SET name = ?, email = ?, active = ?, password = ?, operator = ? "
        "WHERE id = ?",
        {a.name, a.email, a.active ? "1" : "0", a.password_hash, a.is_operator ? "1" : "0",
         undashed(a.id)});
    if (sqlite3_changes(db_) == 0) throw Error(KODO_ERR_NOT_FOUND, "no account " + a.id);
  }

 private:
  struct Statement {
    sqlite3_stmt *stmt = nullptr;
    Statement() = default;
    ~Statement() { sqlite3_finalize(stmt); }
    Statement(const Statement &) = delete;
    Statement &operator=(const Statement &) = delete;
    Statement(Statement &&) = delete;
    Statement &operator=(Statement &&) = delete;
  };

  void prepare(Statement &s, const std::string &sql, const std::vector<std::string> &args) {
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s.stmt, nullptr) != SQLITE_OK)
      throw Error(KODO_ERR_IO, std::string("admin database: ") + sqlite3_errmsg(db_));
    for (size_t i = 0; i < args.size(); ++i)
      sqlite3_bind_text(s.stmt, static_cast<int>(i + 1), args[i].data(),
                        static_cast<int>(args[i].size()), SQLITE_TRANSIENT);
  }

  void exec(const std::string &sql, const std::vector<std::string> &args) {
    std::lock_guard<std::mutex> lock(mu_);
    Statement s;
    prepare(s, sql, args);
    const int rc = sqlite3_step(s.stmt);
    if (rc == SQLITE_CONSTRAINT)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "an account with that name or email exists");
    if (rc != SQLITE_DONE)
      throw Error(KODO_ERR_IO, std::string("admin database: ") + sqlite3_errmsg(db_));
  }

  std::vector<Account> select(const std::string &where, const std::vector<std::string> &args) {
    std::lock_guard<std::mutex> lock(mu_);
    Statement s;
    prepare(s, "SELECT id, name, email, active, password, operator FROM roles " + where, args);
    std::vector<Account> out;
    int rc;
    auto text = [&](int column) {
      const auto *p = sqlite3_column_text(s.stmt, column);
      return p ? std::string(reinterpret_cast<const char *>(p)) : std::string();
    };
    while ((rc = sqlite3_step(s.stmt)) == SQLITE_ROW) {
      Account a;
      a.id = dashed_uuid(text(0));
      a.name = text(1);
      a.email = text(2);
      a.active = sqlite3_column_int(s.stmt, 3) != 0;
      a.password_hash = text(4);
      a.is_operator = sqlite3_column_int(s.stmt, 5) != 0;
      out.push_back(std::move(a));
    }
    if (rc != SQLITE_DONE)
      throw Error(KODO_ERR_IO, std::string("admin database: ") + sqlite3_errmsg(db_));
    return out;
  }

  static std::string undashed(std::string id) {
    id.erase(std::remove(id.begin(), id.end(), '-'), id.end());
    return id;
  }

  std::mutex mu_;
  sqlite3 *db_ = nullptr;
};

}  // namespace

std::string dashed_uuid(const std::string &hex) {
  std::string plain;
  for (char c : hex)
    if (c != '-') plain += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (plain.size() != 32) return hex;
  return plain.substr(0, 8) + "-" + plain.substr(8, 4) + "-" + plain.substr(12, 4) + "-" +
         plain.substr(16, 4) + "-" + plain.substr(20);
}

std::unique_ptr<AccountStore> AccountStore::open(const std::string &url) {
  const std::string scheme = scheme_of(url);
  if (scheme == "sqlite") {
    // sqlite:///relative and sqlite:////absolute, as SQLAlchemy reads them.
    const std::string path = url.substr(url.find("://") + 3);
    if (path.size() < 2 || path[0] != '/')
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "admin database URL: sqlite URLs are sqlite:///path (three slashes)");
    return std::make_unique<SqliteAccounts>(path.substr(1));
  }
  if (scheme == "postgresql" || scheme == "postgres") return open_postgres_accounts(url);
  throw Error(KODO_ERR_INVALID_ARGUMENT,
              "admin database URL: scheme '" + scheme +
                  "' is neither sqlite nor postgresql (KODO_ADMIN_DATABASE, --admin-database)");
}

std::string hash_password(const std::string &password) {
  const std::string entropy = random_bytes(16);
  std::array<char, CRYPT_GENSALT_OUTPUT_SIZE> salt{};
  if (!crypt_gensalt_rn("$2b$", kBcryptCost, entropy.data(), static_cast<int>(entropy.size()),
                        salt.data(), static_cast<int>(salt.size())))
    throw Error(KODO_ERR_INTERNAL, "libxcrypt cannot make a $2b$ salt");
  auto data = std::make_unique<crypt_data>();
  const char *hash = crypt_r(password.c_str(), salt.data(), data.get());
  if (!hash || hash[0] != '$') throw Error(KODO_ERR_INTERNAL, "libxcrypt cannot hash with $2b$");
  return hash;
}

bool verify_password(const std::string &password, const std::string &hash) {
  if (hash.rfind("$2", 0) != 0) return false;  // only bcrypt, as kodosumi's checkpw
  auto data = std::make_unique<crypt_data>();
  const char *computed = crypt_r(password.c_str(), hash.c_str(), data.get());
  if (!computed) return false;
  const size_t n = std::strlen(computed);
  return n == hash.size() && CRYPTO_memcmp(computed, hash.data(), n) == 0;
}

std::string new_account_id() {
  return new_lock_id();
}

}  // namespace kodo
