// kodosumi's roles table on PostgreSQL (KODO_ADMIN_DATABASE=postgresql+asyncpg://...), with
// the types SQLAlchemy gives the Role model there: uuid, varchar, boolean.
#include <kodo/host/error.hpp>
#include "core/accounts_store.hpp"

#include <libpq-fe.h>

#include <mutex>
#include <vector>

namespace kodo {

namespace {

struct Result {
  PGresult *res = nullptr;
  Result() = default;
  ~Result() { PQclear(res); }
  Result(const Result &) = delete;
  Result &operator=(const Result &) = delete;
  Result(Result &&) = delete;
  Result &operator=(Result &&) = delete;
};

class PostgresAccounts final : public AccountStore {
 public:
  explicit PostgresAccounts(std::string conninfo) : conninfo_(std::move(conninfo)) {
    std::lock_guard<std::mutex> lock(mu_);
    connect();
  }
  ~PostgresAccounts() override { PQfinish(conn_); }
  PostgresAccounts(const PostgresAccounts &) = delete;
  PostgresAccounts &operator=(const PostgresAccounts &) = delete;

  void create_schema() override {
    run("CREATE TABLE IF NOT EXISTS roles (id UUID NOT NULL, name VARCHAR NOT NULL, "
        "email VARCHAR NOT NULL, active BOOLEAN NOT NULL, password VARCHAR NOT NULL, "
        "operator BOOLEAN NOT NULL, PRIMARY KEY (id), UNIQUE (name), UNIQUE (email))",
        {});
  }
  std::optional<Account> by_name(const std::string &name) override {
    auto rows = select("WHERE name = $1", {name});
    if (rows.empty()) return std::nullopt;
    return rows.front();
  }
  std::optional<Account> by_id(const std::string &id) override {
    if (dashed_uuid(id).size() != 36) return std::nullopt;  // not a uuid: no such role
    auto rows = select("WHERE id = $1::uuid", {dashed_uuid(id)});
    if (rows.empty()) return std::nullopt;
    return rows.front();
  }
  std::vector<Account> list() override { return select("ORDER BY name", {}); }
  void insert(const Account &a) override {
    run("INSERT INTO roles (id, name, email, active, password, operator) "
        "VALUES ($1::uuid, $2, $3, $4::boolean, $5, $6::boolean)",
        {a.id, a.name, a.email, a.active ? "true" : "false", a.password_hash,
         a.is_operator ? "true" : "false"});
  }
  void update(const Account &a) override {
    const std::string changed =
        run("UPDATE roles SET name = $2, email = $3, active = $4::boolean, password = $5, "
            "operator = $6::boolean WHERE id = $1::uuid",
            {a.id, a.name, a.email, a.active ? "true" : "false", a.password_hash,
             a.is_operator ? "true" : "false"});
    if (changed == "0") throw Error(KODO_ERR_NOT_FOUND, "no account " + a.id);
  }

 private:
  void connect() {
    PQfinish(conn_);
    conn_ = PQconnectdb(conninfo_.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      // Freed here: thrown from the constructor, no destructor would free it (LeakSanitizer).
      const std::string message = PQerrorMessage(conn_);
      PQfinish(conn_);
      conn_ = nullptr;
      throw Error(KODO_ERR_UNAVAILABLE, "admin database (PostgreSQL): " + message);
    }
  }

  // Runs one statement, reconnecting once when the connection was lost.
  void execute(Result &r, const std::string &sql, const std::vector<std::string> &args) {
    std::vector<const char *> values;
    values.reserve(args.size());
    for (const auto &a : args) values.push_back(a.c_str());
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (PQstatus(conn_) != CONNECTION_OK) connect();
      PQclear(r.res);
      r.res = PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                           values.data(), nullptr, nullptr, 0);
      if (PQstatus(conn_) == CONNECTION_OK) break;
    }
    const ExecStatusType status = PQresultStatus(r.res);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return;
    const char *state = PQresultErrorField(r.res, PG_DIAG_SQLSTATE);
    if (state && std::string(state) == "23505")
      throw Error(KODO_ERR_INVALID_ARGUMENT, "an account with that name or email exists");
    throw Error(KODO_ERR_IO,
                std::string("admin database (PostgreSQL): ") + PQresultErrorMessage(r.res));
  }

  std::string run(const std::string &sql, const std::vector<std::string> &args) {
    std::lock_guard<std::mutex> lock(mu_);
    Result r;
    execute(r, sql, args);
    return PQcmdTuples(r.res);
  }

  std::vector<Account> select(const std::string &where, const std::vector<std::string> &args) {
    std::lock_guard<std::mutex> lock(mu_);
    Result r;
    execute(r, "SELECT id::text, name, email, active, password, operator FROM roles " + where,
            args);
    std::vector<Account> out;
    for (int row = 0; row < PQntuples(r.res); ++row) {
      Account a;
      a.id = dashed_uuid(PQgetvalue(r.res, row, 0));
      a.name = PQgetvalue(r.res, row, 1);
      a.email = PQgetvalue(r.res, row, 2);
      a.active = PQgetvalue(r.res, row, 3)[0] == 't';
      a.password_hash = PQgetvalue(r.res, row, 4);
      a.is_operator = PQgetvalue(r.res, row, 5)[0] == 't';
      out.push_back(std::move(a));
    }
    return out;
  }

  std::mutex mu_;
  std::string conninfo_;
  PGconn *conn_ = nullptr;
};

}  // namespace

std::unique_ptr<AccountStore> open_postgres_accounts(const std::string &url) {
  // SQLAlchemy names the driver after '+' (postgresql+asyncpg://); libpq takes the rest.
  const size_t plus = url.find('+');
  const size_t colon = url.find("://");
  std::string conninfo = url;
  if (plus != std::string::npos && plus < colon) conninfo = "postgresql" + url.substr(colon);
  return std::make_unique<PostgresAccounts>(conninfo);
}

}  // namespace kodo
