// pg_connection.hpp: one libpq connection of the PostgreSQL storage, its results and errors,
// the settings it connects with (parsed from the plugin's options) and the counters the
// storage reports as metrics. The pool that holds connections is PostgresStorage's.
#pragma once

#include <kodo/plugin.hpp>

#include <libpq-fe.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kodo_postgres {

using kodo::sdk::Error;

// A failed statement, with the server's SQLSTATE ("" when the connection failed).
class SqlError : public Error {
 public:
  SqlError(kodo_status code, const std::string &message, bool retryable, std::string state)
      : Error(code, message, retryable), state_(std::move(state)) {}
  const std::string &state() const { return state_; }

 private:
  std::string state_;
};

struct Result {
  PGresult *raw = nullptr;
  explicit Result(PGresult *r) : raw(r) {}
  ~Result() { PQclear(raw); }
  Result(const Result &) = delete;
  Result &operator=(const Result &) = delete;
  int rows() const { return PQntuples(raw); }
  const char *text(int row, int column) const { return PQgetvalue(raw, row, column); }
  std::string str(int row, int column) const {
    return std::string(PQgetvalue(raw, row, column),
                       static_cast<size_t>(PQgetlength(raw, row, column)));
  }
  int64_t int64(int row, int column) const { return std::strtoll(text(row, column), nullptr, 10); }
  double number(int row, int column) const { return std::strtod(text(row, column), nullptr); }
  bool null(int row, int column) const { return PQgetisnull(raw, row, column) != 0; }
};

struct Settings {
  std::vector<std::string> keywords, values;  // libpq connection parameters
  std::string shown;                          // the URL, password redacted
  size_t pool_size = 4;
  int reconnect_max_ms = 5000;
};

struct Counters {
  std::atomic<int64_t> up{1};
  std::atomic<uint64_t> connects{0};
  std::atomic<uint64_t> connect_failures{0};
  std::atomic<uint64_t> connections_lost{0};
  std::atomic<int64_t> open_connections{0};
  std::atomic<uint64_t> rows_inserted{0};
  std::atomic<uint64_t> rows_skipped{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> repaired_values{0};
  std::atomic<uint64_t> slow_appends{0};
};

// The connection parameters and pool limits, from the plugin's options.
Settings parse_settings(const kodo::sdk::Options &options);

class Connection {
 public:
  // Connects, or throws a retryable KODO_ERR_UNAVAILABLE with the server's reason.
  Connection(const Settings &settings, Counters &counters, const kodo::sdk::HostLog &log);
  ~Connection();
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  bool broken() const { return !conn_ || PQstatus(conn_) != CONNECTION_OK; }

  // Runs SQL without parameters (several statements allowed).
  std::unique_ptr<Result> exec(const std::string &sql, const char *what = nullptr);

  // Runs one statement with text parameters (NULL entries are SQL NULL).
  std::unique_ptr<Result> query(const char *sql, const std::vector<const char *> &params,
                                const char *what);

  // COPY ... FROM STDIN with `data` in text format.
  void copy_in(const char *sql, const std::string &data, const char *what);

 private:
  std::unique_ptr<Result> check(PGresult *raw, const char *what);
  [[noreturn]] void fail(const char *what, PGresult *raw);

  PGconn *conn_ = nullptr;
  Counters &counters_;
  const kodo::sdk::HostLog &log_;
};

}  // namespace kodo_postgres
