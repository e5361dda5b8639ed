// pg_connection.cpp: the PostgreSQL storage's connection: connecting (with the settings parsed
// from the plugin's options), running statements and COPY, and turning failures into errors
// that say whether the same call may succeed later.
#include "pg_connection.hpp"

#include "pg_schema.hpp"

#include <kodo/url.hpp>

#include <algorithm>
#include <cstring>

namespace kodo_postgres {
namespace {

// SQLSTATE classes after which the same call may succeed: connection trouble, serialization
// failure or deadlock, insufficient resources, operator intervention (shutdown, cancel).
bool retryable_sqlstate(const char *state) {
  if (!state || std::strlen(state) != 5) return true;  // no state: the connection failed
  const std::string s(state);
  return s.compare(0, 2, "08") == 0 || s == "40001" || s == "40P01" || s.compare(0, 2, "53") == 0 ||
         s.compare(0, 2, "57") == 0;
}

// libpq messages end with a newline and may span lines; one line reads better in logs.
std::string one_line(const char *message) {
  std::string s = message ? message : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

int64_t int_option(const kodo::sdk::Options &options, const char *name, int64_t min, int64_t max) {
  const std::string text = options.get(name, "");
  char *end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end || value < min || value > max)
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                std::string("option ") + name + " must be an integer from " + std::to_string(min) +
                    " to " + std::to_string(max) + ", got '" + text + "'");
  return value;
}
}  // namespace

Settings parse_settings(const kodo::sdk::Options &options) {
  Settings s;
  const std::string text = options.get("url", "");
  kodo::sdk::Url url;
  try {
    url = kodo::sdk::parse_url(text, {"postgresql", "postgres", "postgresql+asyncpg",
                                      "postgresql+psycopg", "postgresql+psycopg2"});
  } catch (const Error &e) {
    throw Error(KODO_ERR_INVALID_ARGUMENT, std::string("option url: ") + e.what());
  }
  s.shown = url.redacted();
  auto add = [&](const std::string &key, const std::string &value) {
    s.keywords.push_back(key);
    s.values.push_back(value);
  };
  if (!url.host.empty()) add("host", url.host);
  if (url.port) add("port", std::to_string(url.port));
  if (!url.user.empty()) add("user", url.user);
  if (url.has_password) add("password", url.password);
  if (!url.path.empty()) add("dbname", url.path);
  add("connect_timeout", std::to_string(int_option(options, "connect_timeout_s", 1, 3600)));
  add("application_name", "kodo");
  // A server that vanishes without closing the socket is noticed within about 20 s.
  add("keepalives", "1");
  add("keepalives_idle", "10");
  add("keepalives_interval", "5");
  add("keepalives_count", "2");
  const int64_t statement_ms = int_option(options, "statement_timeout_ms", 0, 86400000);
  add("options", "-c statement_timeout=" + std::to_string(statement_ms));
  for (const auto &[key, value] : url.query) {
    // asyncpg's spelling of libpq's sslmode; other parameters go to libpq as they are.
    if (key == "ssl")
      add("sslmode", value);
    else
      add(key, value);
  }
  // Refuse an unknown URL parameter here, as a configuration error, not a connection failure.
  for (const std::string &key : s.keywords) {
    char *problem = nullptr;
    PQconninfoOption *parsed = PQconninfoParse((key + "=''").c_str(), &problem);
    if (!parsed) {
      std::string message = problem ? one_line(problem) : "not a libpq parameter";
      PQfreemem(problem);
      throw Error(KODO_ERR_INVALID_ARGUMENT, std::string("option url ")
                                                 .append(s.shown)
                                                 .append(": parameter '")
                                                 .append(key)
                                                 .append("': ")
                                                 .append(message));
    }
    PQconninfoFree(parsed);
  }
  s.pool_size = static_cast<size_t>(int_option(options, "pool_size", 1, 256));
  s.reconnect_max_ms = static_cast<int>(int_option(options, "reconnect_max_ms", 10, 600000));
  return s;
}

Connection::Connection(const Settings &settings, Counters &counters, const kodo::sdk::HostLog &log)
    : counters_(counters), log_(log) {
  std::vector<const char *> keys, values;
  for (size_t i = 0; i < settings.keywords.size(); ++i) {
    keys.push_back(settings.keywords[i].c_str());
    values.push_back(settings.values[i].c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectdbParams(keys.data(), values.data(), 0);
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
    std::string message = conn_ ? one_line(PQerrorMessage(conn_)) : "out of memory";
    PQfinish(conn_);
    conn_ = nullptr;
    throw Error(KODO_ERR_UNAVAILABLE,
                "cannot connect to PostgreSQL at " + settings.shown + ": " + message, true);
  }
  counters_.open_connections.fetch_add(1);
  // Server notices ("already exists, skipping") go to the host's log, not to stderr.
  PQsetNoticeProcessor(
      conn_,
      [](void *self, const char *message) {
        static_cast<Connection *>(self)->log_(KODO_LOG_DEBUG, "server: " + one_line(message));
      },
      this);
  exec("SET client_encoding = 'UTF8'");
  exec(kIncomingTable);
}

Connection::~Connection() {
  if (conn_) {
    PQfinish(conn_);
    counters_.open_connections.fetch_sub(1);
  }
}

std::unique_ptr<Result> Connection::exec(const std::string &sql, const char *what) {
  return check(PQexec(conn_, sql.c_str()), what ? what : sql.c_str());
}

std::unique_ptr<Result> Connection::query(const char *sql, const std::vector<const char *> &params,
                                          const char *what) {
  return check(PQexecParams(conn_, sql, static_cast<int>(params.size()), nullptr, params.data(),
                            nullptr, nullptr, 0),
               what);
}

void Connection::copy_in(const char *sql, const std::string &data, const char *what) {
  PGresult *r = PQexec(conn_, sql);
  if (PQresultStatus(r) != PGRES_COPY_IN) {
    check(r, what);
    throw Error(KODO_ERR_INTERNAL, std::string(what) + ": the server did not start COPY");
  }
  PQclear(r);
  constexpr size_t kChunk = 1 << 20;
  for (size_t at = 0; at < data.size(); at += kChunk) {
    const size_t n = std::min(kChunk, data.size() - at);
    if (PQputCopyData(conn_, data.data() + at, static_cast<int>(n)) != 1) fail(what, nullptr);
  }
  if (PQputCopyEnd(conn_, nullptr) != 1) fail(what, nullptr);
  check(PQgetResult(conn_), what);
  while (PGresult *rest = PQgetResult(conn_)) PQclear(rest);
}

std::unique_ptr<Result> Connection::check(PGresult *raw, const char *what) {
  auto result = std::make_unique<Result>(raw);
  ExecStatusType status = PQresultStatus(raw);
  if (raw && (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)) return result;
  fail(what, raw);
}

void Connection::fail(const char *what, PGresult *raw) {
  const char *state = raw ? PQresultErrorField(raw, PG_DIAG_SQLSTATE) : nullptr;
  std::string message = raw ? one_line(PQresultErrorMessage(raw)) : "";
  if (message.empty()) message = one_line(PQerrorMessage(conn_));
  const bool lost = broken();
  const bool retryable = lost || retryable_sqlstate(state);
  std::string text = std::string(what) + ": " + message;
  if (state) text += " (SQLSTATE " + std::string(state) + ")";
  if (lost) text += "; the connection is lost";
  throw SqlError(retryable ? KODO_ERR_UNAVAILABLE : KODO_ERR_IO, text, retryable,
                 state ? state : "");
}

}  // namespace kodo_postgres
