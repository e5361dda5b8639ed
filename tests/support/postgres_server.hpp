// postgres_server.hpp: a real PostgreSQL for tests, made with initdb in a scratch directory and run
// in the foreground on its own loopback port (as the `postgres` user when the tests run as root).
// Password authentication over TCP, so the URL carries a real secret.
#pragma once

#include <libpq-fe.h>

#include <dirent.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "service_process.hpp"

namespace kodo::testing {

// The newest /usr/lib/postgresql/<major>/bin, or KODO_TEST_PG_BIN when set.
inline std::string postgres_bin_dir() {
  if (const char *env = std::getenv("KODO_TEST_PG_BIN")) return env;
  std::string best;
  int best_major = 0;
  if (DIR *dir = opendir("/usr/lib/postgresql")) {
    while (dirent *entry = readdir(dir)) {
      int major = std::atoi(entry->d_name);
      if (major > best_major) {
        best_major = major;
        best = std::string("/usr/lib/postgresql/") + entry->d_name + "/bin";
      }
    }
    closedir(dir);
  }
  if (best.empty())
    throw std::runtime_error("PostgreSQL server binaries not found under /usr/lib/postgresql");
  return best;
}

class PostgresServer {
 public:
  static constexpr const char *kUser = "kodo";
  static constexpr const char *kPassword = "s3cret-pw";
  static constexpr const char *kDatabase = "postgres";

  PostgresServer() : dir_("kodo-pg") {
    bin_ = postgres_bin_dir();
    run_user_ = geteuid() == 0 ? "postgres" : "";
    data_ = dir_.path() + "/data";
    log_ = dir_.path() + "/server.log";
    if (geteuid() == 0) {
      passwd *entry = getpwnam("postgres");
      if (!entry) throw std::runtime_error("running as root needs the `postgres` user");
      chown(dir_.path().c_str(), entry->pw_uid, entry->pw_gid);
    }
    std::string pwfile = dir_.path() + "/pw";
    std::ofstream(pwfile) << kPassword << "\n";
    chmod(pwfile.c_str(), 0644);
    int rc = run_as(
        {bin_ + "/initdb", "-D", data_, "-U", kUser, "--pwfile=" + pwfile, "--auth-local=trust",
         "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions"},
        run_user_, log_);
    if (rc != 0)
      throw std::runtime_error("initdb failed (" + std::to_string(rc) + "): " + slurp(log_));
    port_ = free_loopback_port();
  }

  // Starts the server (again, on the same port and data) and waits until it accepts queries.
  void start() {
    process_.start(
        {bin_ + "/postgres", "-D", data_, "-p", std::to_string(port_), "-k", dir_.path(), "-c",
         "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c",
         "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=128MB"},
        run_user_, log_);
    if (!process_.wait_until([&] { return PQping(conninfo().c_str()) == PQPING_OK; }, 60000))
      throw std::runtime_error("PostgreSQL did not come up: " + slurp(log_));
  }

  // A fast shutdown (SIGINT): sessions are cut, as in a real restart.
  void stop() { process_.stop(SIGINT); }
  void restart() {
    stop();
    start();
  }
  bool running() { return process_.running(); }

  int port() const { return port_; }
  std::string url() const {
    return std::string("postgresql://") + kUser + ":" + kPassword +
           "@127.0.0.1:" + std::to_string(port_) + "/" + kDatabase;
  }
  std::string conninfo() const { return url() + "?connect_timeout=5"; }
  std::string log() const { return slurp(log_); }

  // Runs one statement; returns the first column of each row. Throws with the server's message.
  std::vector<std::string> query(const std::string &sql) const {
    PGconn *conn = PQconnectdb(conninfo().c_str());
    if (PQstatus(conn) != CONNECTION_OK) {
      std::string message = PQerrorMessage(conn);
      PQfinish(conn);
      throw std::runtime_error("connect: " + message);
    }
    PGresult *result = PQexec(conn, sql.c_str());
    ExecStatusType status = PQresultStatus(result);
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      std::string message = PQerrorMessage(conn);
      PQclear(result);
      PQfinish(conn);
      throw std::runtime_error(sql + ": " + message);
    }
    std::vector<std::string> rows;
    for (int i = 0; i < PQntuples(result); ++i)
      rows.emplace_back(PQgetisnull(result, i, 0) ? "" : PQgetvalue(result, i, 0));
    PQclear(result);
    PQfinish(conn);
    return rows;
  }

 private:
  TempDir dir_;
  std::string bin_, run_user_, data_, log_;
  int port_ = 0;
  ServiceProcess process_;
};

// The rows of one execution in execution_events, in insertion order: (seq, kind, message).
// Throws when the database cannot be reached or queried.
inline std::vector<std::tuple<int64_t, std::string, std::string>> execution_event_rows(
    const std::string &url, const std::string &fid) {
  PGconn *conn = PQconnectdb(url.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    const std::string error = PQerrorMessage(conn);
    PQfinish(conn);
    throw std::runtime_error("cannot connect to the test database: " + error);
  }
  const char *params[] = {fid.c_str()};
  PGresult *r = PQexecParams(
      conn, "SELECT seq, kind, message FROM execution_events WHERE fid = $1 ORDER BY id", 1,
      nullptr, params, nullptr, nullptr, 0);
  std::vector<std::tuple<int64_t, std::string, std::string>> rows;
  const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
  const std::string error = ok ? "" : PQerrorMessage(conn);
  for (int i = 0; ok && i < PQntuples(r); ++i)
    rows.emplace_back(std::stoll(PQgetvalue(r, i, 0)), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
  PQclear(r);
  PQfinish(conn);
  if (!ok) throw std::runtime_error("reading execution_events of " + fid + ": " + error);
  return rows;
}

}  // namespace kodo::testing
