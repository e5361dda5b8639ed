// sqlite_common.hpp: what the SQLite storage's files share: names in messages and paths,
// and a thin wrapper of a SQLite connection with its prepared statements.
#pragma once

#include <kodo/plugin.hpp>

#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kodo_sqlite {

namespace fs = std::filesystem;
using kodo::sdk::Error;

// ------------------------------------------------------------------------------------------
// Names and messages

// A value for an error message: printable ASCII kept, other bytes escaped, long values cut.
inline std::string quote(const char *value, size_t max = 80) {
  if (!value) return "(null)";
  std::string out = "'";
  size_t i = 0;
  for (; value[i] && i < max; ++i) {
    auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      static const char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (value[i]) out += "...";
  return out + "'";
}

inline std::string quote(const std::string &value) {
  return quote(value.c_str());
}

// fid and username become path components: the SDK's naming rule.
using kodo::sdk::check_name;

inline bool valid_name(const char *s) {
  return s && kodo::sdk::name_problem("name", s).empty();
}

// A kodosumi fid is a bson ObjectId: 24 hex digits, the first 8 its creation time in seconds.
inline std::optional<double> objectid_time(const std::string &fid) {
  if (fid.size() != 24) return std::nullopt;
  uint32_t seconds = 0;
  for (size_t i = 0; i < fid.size(); ++i) {
    char c = fid[i];
    int v = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                     : -1;
    if (v < 0) return std::nullopt;
    if (i < 8) seconds = seconds * 16 + static_cast<uint32_t>(v);
  }
  return static_cast<double>(seconds);
}

inline bool is_file(const fs::path &p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// Subdirectories of `dir` whose names are valid fids/usernames; empty when dir is missing.
inline std::vector<std::string> valid_subdirs(const fs::path &dir) {
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return names;
    throw Error(KODO_ERR_IO, "cannot list " + dir.string() + ": " + ec.message());
  }
  for (; it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    std::error_code dir_ec;
    if (valid_name(name.c_str()) && it->is_directory(dir_ec)) names.push_back(std::move(name));
  }
  if (ec) throw Error(KODO_ERR_IO, "cannot list " + dir.string() + ": " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

// ------------------------------------------------------------------------------------------
// SQLite wrappers

inline kodo_status status_of(int rc, bool &retryable) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_PROTOCOL: retryable = true; return KODO_ERR_UNAVAILABLE;
    case SQLITE_FULL:
    case SQLITE_IOERR: retryable = true; return KODO_ERR_IO;
    case SQLITE_CANTOPEN:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_READONLY:
    case SQLITE_PERM: retryable = false; return KODO_ERR_IO;
    case SQLITE_NOMEM: retryable = true; return KODO_ERR_INTERNAL;
    default: retryable = false; return KODO_ERR_UNKNOWN;
  }
}

[[noreturn]] inline void throw_sqlite(sqlite3 *db, int rc, const std::string &what,
                                      const std::string &path) {
  bool retryable = false;
  kodo_status code = status_of(rc, retryable);
  std::string detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  throw Error(code, "sqlite: " + what + " " + path + ": " + detail, retryable);
}

struct StmtDeleter {
  void operator()(sqlite3_stmt *s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

// Resets a statement when its use ends, also on error, so it holds no read snapshot.
class StmtUse {
 public:
  explicit StmtUse(sqlite3_stmt *s) : s_(s) {}
  ~StmtUse() { sqlite3_reset(s_); }
  StmtUse(const StmtUse &) = delete;
  StmtUse &operator=(const StmtUse &) = delete;

 private:
  sqlite3_stmt *s_;
};

// One connection with its cache of prepared statements. Not thread-safe: its owner locks.
class Conn {
 public:
  Conn(const fs::path &path, int flags, int busy_timeout_ms) : path_(path.string()) {
    int rc = sqlite3_open_v2(path_.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string detail = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close(db_);
      db_ = nullptr;
      bool retryable = false;
      kodo_status code = status_of(rc, retryable);
      throw Error(code, "sqlite: cannot open " + path_ + ": " + detail, retryable);
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, busy_timeout_ms);
  }
  ~Conn() {
    statements_.clear();  // finalize before close
    sqlite3_close(db_);
  }
  Conn(const Conn &) = delete;
  Conn &operator=(const Conn &) = delete;

  sqlite3 *db() const { return db_; }
  const std::string &path() const { return path_; }
  [[noreturn]] void fail(int rc, const std::string &what) const {
    throw_sqlite(db_, rc, what, path_);
  }

  void exec(const char *sql, const char *what) {
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) fail(rc, what);
  }

  // A cached prepared statement; nullptr (and no throw) if it does not compile, e.g. because
  // a table is missing.
  sqlite3_stmt *try_prepare(const std::string &sql) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) return it->second.get();
    sqlite3_stmt *s = nullptr;
    if (sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size() + 1),
                           SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
      sqlite3_finalize(s);
      return nullptr;
    }
    statements_.emplace(sql, StmtPtr(s));
    return s;
  }
  sqlite3_stmt *prepare(const std::string &sql) {
    sqlite3_stmt *s = try_prepare(sql);
    if (!s) fail(sqlite3_errcode(db_), "cannot prepare a statement for");
    return s;
  }

  // Steps once: true for a row, false when done; throws on error.
  bool step(sqlite3_stmt *s, const char *what) {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(rc, what);
  }

 private:
  sqlite3 *db_ = nullptr;
  std::string path_;
  std::unordered_map<std::string, StmtPtr> statements_;
};

inline std::string column_text(sqlite3_stmt *s, int i) {
  auto *p = reinterpret_cast<const char *>(sqlite3_column_text(s, i));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s, i))) : std::string();
}

}  // namespace kodo_sqlite
