// listing_index.cpp: see listing_index.hpp.
#include "listing_index.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <ctime>
#include <unordered_map>
#include <utility>

namespace kodo_sqlite {
namespace {

constexpr const char *kIndexName = "kodo_index.db";
constexpr const char *kDbFile = "sqlite3.db";
constexpr const char *kArchiveFile = "sqlite3.db.archive";

// Not recorded: the folder may change again within the same tick of the file system's clock.
constexpr int64_t kSettleNs = 2'000'000'000;
// A folder without a database younger than this is an execution being made, not an empty one.
constexpr int64_t kMakingNs = 60'000'000'000;
constexpr int64_t kStale = -1;    // a folder to read at the next listing
constexpr int64_t kMissing = -2;  // the mtime of a folder that does not exist

constexpr const char *kSchema =
    "CREATE TABLE IF NOT EXISTS executions(username TEXT NOT NULL, fid TEXT NOT NULL, "
    "time REAL NOT NULL, PRIMARY KEY(username, fid)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS executions_order ON executions(time DESC, fid DESC, username);"
    "CREATE INDEX IF NOT EXISTS executions_user_order ON executions(username, time DESC, "
    "fid DESC);"
    // '' is <exec_dir> itself, any other name a user folder.
    "CREATE TABLE IF NOT EXISTS folders(name TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL) "
    "WITHOUT ROWID";

std::string key_of(const std::string &username, const std::string &fid) {
  std::string key = username;
  key += '/';
  key += fid;
  return key;
}

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

int64_t mtime_ns(const fs::path &p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return kMissing;
    throw Error(KODO_ERR_IO,
                "cannot stat " + p.string() + ": " + std::system_category().message(errno));
  }
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// Runs fn in one write transaction, rolled back if it throws.
template <class Fn>
void transaction(Conn &c, Fn &&fn) {
  c.exec("BEGIN IMMEDIATE", "cannot begin a transaction on");
  try {
    fn();
    c.exec("COMMIT", "cannot commit to");
  } catch (...) {
    if (!sqlite3_get_autocommit(c.db()))
      sqlite3_exec(c.db(), "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void step_done(Conn &c, sqlite3_stmt *s, const char *what) {
  StmtUse use(s);
  c.step(s, what);
}

}  // namespace

ListingIndex::ListingIndex(fs::path exec_dir, int busy_timeout_ms)
    : exec_dir_(std::move(exec_dir)), busy_timeout_ms_(busy_timeout_ms) {}

// Opened at first use: the folder exists only after create_schema.
Conn &ListingIndex::conn() {
  if (!conn_) {
    auto c = std::make_unique<Conn>(exec_dir_ / kIndexName,
                                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, busy_timeout_ms_);
    c->exec("PRAGMA journal_mode=WAL", "cannot switch to WAL");
    // The index can always be rebuilt from the folders: a power loss may cost its last rows.
    c->exec("PRAGMA synchronous=NORMAL", "cannot set synchronous on");
    c->exec(kSchema, "cannot create the tables of");
    conn_ = std::move(c);
  }
  return *conn_;
}

bool ListingIndex::knows(const std::string &username, const std::string &fid) {
  std::lock_guard lock(known_mu_);
  return known_.count(key_of(username, fid)) != 0;
}

void ListingIndex::forget(const std::string &key) {
  std::lock_guard lock(known_mu_);
  known_.erase(key);
}

void ListingIndex::add(const std::vector<Item> &items) {
  if (items.empty()) return;
  std::lock_guard lock(mu_);
  try {
    Conn &c = conn();
    sqlite3_stmt *s = c.prepare(
        "INSERT OR IGNORE INTO executions(username, fid, time) "
        "VALUES (?, ?, ?)");
    transaction(c, [&] {
      for (const Item &x : items) {
        StmtUse use(s);
        sqlite3_bind_text(s, 1, x.username.c_str(), -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, x.fid.c_str(), -1, SQLITE_STATIC);
        sqlite3_bind_double(s, 3, x.time);
        c.step(s, "cannot add an execution to");
      }
    });
  } catch (const Error &) {
    conn_.reset();  // a fresh connection next time; the caller reports the error
    throw;
  }
  std::lock_guard known_lock(known_mu_);
  if (known_.size() >= kMaxKnown) known_.clear();  // a bound, not a loss: rows are kept
  for (const Item &x : items) known_.insert(key_of(x.username, x.fid));
}

void ListingIndex::remove(const std::string &username, const std::string &fid) {
  forget(key_of(username, fid));
  std::lock_guard lock(mu_);
  Conn &c = conn();
  sqlite3_stmt *s = c.prepare("DELETE FROM executions WHERE username = ? AND fid = ?");
  StmtUse use(s);
  sqlite3_bind_text(s, 1, username.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, fid.c_str(), -1, SQLITE_STATIC);
  c.step(s, "cannot remove an execution from");
}

int64_t ListingIndex::recorded(const std::string &folder) {
  Conn &c = conn();
  sqlite3_stmt *s = c.prepare("SELECT mtime_ns FROM folders WHERE name = ?");
  StmtUse use(s);
  sqlite3_bind_text(s, 1, folder.c_str(), -1, SQLITE_STATIC);
  return c.step(s, "cannot read the folders of") ? sqlite3_column_int64(s, 0) : kStale;
}

// Records a folder's mtime, or marks it stale when the mtime is too recent to trust.
void ListingIndex::record(const std::string &folder, int64_t mtime) {
  if (mtime != kMissing && now_ns() - mtime < kSettleNs) mtime = kStale;
  Conn &c = conn();
  sqlite3_stmt *s = c.prepare("INSERT OR REPLACE INTO folders(name, mtime_ns) VALUES (?, ?)");
  StmtUse use(s);
  sqlite3_bind_text(s, 1, folder.c_str(), -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 2, mtime);
  c.step(s, "cannot record a folder in");
}

// The sort time of an execution the index finds in a folder: read from its database when
// its fid is not an ObjectId (0 when it cannot be read yet, as for an empty one).
double ListingIndex::first_time(const std::string &username, const std::string &fid) const {
  if (auto t = objectid_time(fid)) return *t;
  try {
    Conn c(exec_dir_ / username / fid / kDbFile, SQLITE_OPEN_READWRITE, busy_timeout_ms_);
    c.exec("PRAGMA query_only=1", "cannot set up");
    sqlite3_stmt *s = c.try_prepare("SELECT timestamp FROM monitor ORDER BY id LIMIT 1");
    if (!s) return 0;
    StmtUse use(s);
    return c.step(s, "cannot read the first event of") ? sqlite3_column_double(s, 0) : 0;
  } catch (const Error &) {
    return 0;
  }
}

// Reads one user folder again: adds the executions the index lacks, drops those gone.
void ListingIndex::rescan_user(const std::string &username, int64_t mtime) {
  Conn &c = conn();
  const fs::path user_dir = exec_dir_ / username;
  std::unordered_map<std::string, bool> indexed;  // fid -> still on disk
  {
    sqlite3_stmt *s = c.prepare("SELECT fid FROM executions WHERE username = ?");
    StmtUse use(s);
    sqlite3_bind_text(s, 1, username.c_str(), -1, SQLITE_STATIC);
    while (c.step(s, "cannot read the executions of")) indexed.emplace(column_text(s, 0), false);
  }
  std::vector<Item> found;
  bool making = false;
  const int64_t now = now_ns();
  for (std::string &fid : valid_subdirs(user_dir)) {
    // Folder names alone for the indexed: a listing drops a row whose database is gone.
    auto it = indexed.find(fid);
    if (it != indexed.end()) {
      it->second = true;
      continue;
    }
    const fs::path dir = user_dir / fid;
    if (!is_file(dir / kDbFile)) {
      // No database: archived, or being made (then read this folder again next time).
      if (!is_file(dir / kArchiveFile) && now - mtime_ns(dir) < kMakingNs) making = true;
      continue;
    }
    double t = first_time(username, fid);
    found.push_back(Item{username, std::move(fid), t});
  }
  sqlite3_stmt *insert =
      c.prepare("INSERT OR IGNORE INTO executions(username, fid, time) VALUES (?, ?, ?)");
  sqlite3_stmt *erase = c.prepare("DELETE FROM executions WHERE username = ? AND fid = ?");
  transaction(c, [&] {
    for (const Item &x : found) {
      sqlite3_bind_text(insert, 1, x.username.c_str(), -1, SQLITE_STATIC);
      sqlite3_bind_text(insert, 2, x.fid.c_str(), -1, SQLITE_STATIC);
      sqlite3_bind_double(insert, 3, x.time);
      step_done(c, insert, "cannot add an execution to");
    }
    for (const auto &[fid, present] : indexed) {
      if (present) continue;
      sqlite3_bind_text(erase, 1, username.c_str(), -1, SQLITE_STATIC);
      sqlite3_bind_text(erase, 2, fid.c_str(), -1, SQLITE_STATIC);
      step_done(c, erase, "cannot remove an execution from");
    }
    record(username, making ? kStale : mtime);
  });
  for (const auto &[fid, present] : indexed)
    if (!present) forget(key_of(username, fid));
}

void ListingIndex::refresh(const char *username) {
  Conn &c = conn();
  const int64_t root = mtime_ns(exec_dir_);
  if (root != recorded("")) {
    // Users came or went: forget those gone, mark the others for a look.
    std::vector<std::string> users = valid_subdirs(exec_dir_);
    std::unordered_map<std::string, bool> known;  // user -> still on disk
    {
      sqlite3_stmt *s = c.prepare("SELECT name FROM folders WHERE name != ''");
      StmtUse use(s);
      while (c.step(s, "cannot read the folders of")) known.emplace(column_text(s, 0), false);
    }
    sqlite3_stmt *add = c.prepare("INSERT OR IGNORE INTO folders(name, mtime_ns) VALUES (?, ?)");
    sqlite3_stmt *drop_rows = c.prepare("DELETE FROM executions WHERE username = ?");
    sqlite3_stmt *drop_folder = c.prepare("DELETE FROM folders WHERE name = ?");
    transaction(c, [&] {
      for (const std::string &u : users) {
        auto it = known.find(u);
        if (it != known.end()) {
          it->second = true;
          continue;
        }
        sqlite3_bind_text(add, 1, u.c_str(), -1, SQLITE_STATIC);
        sqlite3_bind_int64(add, 2, kStale);
        step_done(c, add, "cannot record a folder in");
      }
      for (const auto &[u, present] : known) {
        if (present) continue;
        for (sqlite3_stmt *s : {drop_rows, drop_folder}) {
          sqlite3_bind_text(s, 1, u.c_str(), -1, SQLITE_STATIC);
          step_done(c, s, "cannot forget a user in");
        }
      }
      record("", root);
    });
  }
  std::vector<std::string> users;
  if (username) {
    users.emplace_back(username);
  } else {
    sqlite3_stmt *s = c.prepare("SELECT name FROM folders WHERE name != ''");
    StmtUse use(s);
    while (c.step(s, "cannot read the folders of")) users.push_back(column_text(s, 0));
  }
  for (const std::string &u : users) {
    const int64_t m = mtime_ns(exec_dir_ / u);
    if (m != recorded(u)) rescan_user(u, m);
  }
}

std::vector<ListingIndex::Key> ListingIndex::page(const char *username, size_t offset, size_t limit,
                                                  bool &more) {
  std::lock_guard lock(mu_);
  more = false;
  if (mtime_ns(exec_dir_) == kMissing) return {};  // nothing written yet: no index to make
  try {
    refresh(username);
    Conn &c = conn();
    sqlite3_stmt *s =
        c.prepare(username ? "SELECT username, fid FROM executions WHERE username = ? "
                             "ORDER BY time DESC, fid DESC LIMIT ? OFFSET ?"
                           : "SELECT username, fid FROM executions "
                             "ORDER BY time DESC, fid DESC, username LIMIT ?2 OFFSET ?3");
    StmtUse use(s);
    if (username) sqlite3_bind_text(s, 1, username, -1, SQLITE_STATIC);
    constexpr auto kMax = static_cast<size_t>(INT64_MAX - 1);
    sqlite3_bind_int64(s, 2, static_cast<int64_t>(std::min(limit, kMax - 1) + 1));
    sqlite3_bind_int64(s, 3, static_cast<int64_t>(std::min(offset, kMax)));
    std::vector<Key> keys;
    while (c.step(s, "cannot read the executions of"))
      keys.push_back(Key{column_text(s, 0), column_text(s, 1)});
    more = keys.size() > limit;
    if (more) keys.pop_back();
    return keys;
  } catch (const Error &) {
    conn_.reset();
    throw;
  }
}

}  // namespace kodo_sqlite
