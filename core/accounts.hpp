// accounts.hpp: kodosumi's accounts ("roles") in its own admin database schema, so that an
// admin.db made by kodosumi works here as it is and the reverse. The table `roles` (id,
// name, email, active, password, operator) holds bcrypt hashes ($2b$, as Python's bcrypt
// writes them); SQLite keeps the UUID as 32 hex digits (SQLAlchemy's CHAR(32)), PostgreSQL
// as its uuid type. Ids leave this file as kodosumi prints them: 8-4-4-4-12.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kodo {

struct Account {
  std::string id;  // 8-4-4-4-12 lower-case hex
  std::string name;
  std::string email;
  bool active = true;
  bool is_operator = false;
  std::string password_hash;  // never printed, logged or answered
};

// Thread-safe: every method may run on many connection threads at once.
class AccountStore {
 public:
  // `url` as kodosumi's KODO_ADMIN_DATABASE: sqlite[+driver]:///relative/path,
  // sqlite[+driver]:////absolute/path or postgresql[+driver]://user:pw@host:port/db.
  // Throws kodo::Error naming the URL's scheme (never its password) when it is neither.
  static std::unique_ptr<AccountStore> open(const std::string &url);
  virtual ~AccountStore() = default;

  // Creates the table when missing (kodosumi's create_all does the same).
  virtual void create_schema() = 0;
  virtual std::optional<Account> by_name(const std::string &name) = 0;
  virtual std::optional<Account> by_id(const std::string &id) = 0;
  virtual std::vector<Account> list() = 0;
  // Throws KODO_ERR_INVALID_ARGUMENT when the name or email is taken.
  virtual void insert(const Account &account) = 0;
  // By id; throws KODO_ERR_NOT_FOUND when there is none.
  virtual void update(const Account &account) = 0;
};

// A new $2b$ hash (cost 12, kodosumi's bcrypt.gensalt() default) through libxcrypt.
std::string hash_password(const std::string &password);
// Constant-time comparison of crypt_r's answer with the stored hash.
bool verify_password(const std::string &password, const std::string &hash);
// A random (version 4) UUID, as uuid.uuid4() makes them.
std::string new_account_id();

}  // namespace kodo
