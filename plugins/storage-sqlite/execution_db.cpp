// execution_db.cpp: one execution's SQLite database: kodosumi's table and kodo's summary and
// index, the empty database every new execution starts from, the summary kept current by the
// writer, and the connections that write and read it.
#include "execution_db.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <system_error>

namespace kodo_sqlite {
namespace {

// kodosumi's table, exactly: its reader and any existing database depend on this shape.
constexpr const char *kMonitorTable =
    "CREATE TABLE IF NOT EXISTS monitor(id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "timestamp REAL NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL)";

// Ours: one row (id 0) that sums up `monitor` up to a line, counted_id: `counted` rows have
// id <= counted_id, and `status` is the newest status message among them. Rows above the line
// (at most about kFoldRows, plus any kodosumi wrote) are counted when read. Folding the tail in
// only every kFoldRows rows keeps the append hot path to its rows: rewriting a summary page
// in every transaction costs about a quarter of the bytes written.
constexpr const char *kSummaryTable =
    "CREATE TABLE IF NOT EXISTS kodo_summary(id INTEGER PRIMARY KEY CHECK (id = 0), "
    "counted_id INTEGER NOT NULL, counted INTEGER NOT NULL, status TEXT NOT NULL)";
constexpr int64_t kFoldRows = 1024;

// Ours too: reads filtered by kind (a run's status, its main events) walk this index in id
// order, one kind at a time, instead of every row of the run. kodosumi ignores it.
constexpr const char *kKindIndex = "CREATE INDEX IF NOT EXISTS kodo_monitor_kind ON monitor(kind)";

// Draws the line at the newest row. Makes the summary of a new database, fills it for a
// database kodosumi wrote, and repairs it when rows land below the line (redelivered gaps).
constexpr const char *kRecount =
    "INSERT OR REPLACE INTO kodo_summary(id, counted_id, counted, status) "
    "SELECT 0, coalesce(max(id), 0), count(*), "
    "coalesce((SELECT message FROM monitor WHERE kind = 'status' ORDER BY id DESC LIMIT 1), '') "
    "FROM monitor";

// Moves the line from ?1 up to ?2 (all rows above ?1 were added above the old line).
constexpr const char *kFold =
    "UPDATE kodo_summary SET counted_id = ?2, "
    "counted = counted + (SELECT count(*) FROM monitor WHERE id > ?1 AND id <= ?2), "
    "status = coalesce((SELECT message FROM monitor WHERE id > ?1 AND id <= ?2 "
    "AND kind = 'status' ORDER BY id DESC LIMIT 1), status) WHERE id = 0";

constexpr const char *kCountedId = "SELECT counted_id FROM kodo_summary WHERE id = 0";

// The summary, completed with the rows above the line, as one statement (one snapshot).
// Returns: count, first timestamp, max id, its timestamp, status.
constexpr const char *kReadSummary =
    "SELECT s.counted + (SELECT count(*) FROM monitor WHERE id > s.counted_id), "
    "(SELECT timestamp FROM monitor ORDER BY id LIMIT 1), "
    "(SELECT id FROM monitor ORDER BY id DESC LIMIT 1), "
    "(SELECT timestamp FROM monitor ORDER BY id DESC LIMIT 1), "
    "coalesce((SELECT message FROM monitor WHERE id > s.counted_id AND kind = 'status' "
    "ORDER BY id DESC LIMIT 1), s.status) "
    "FROM kodo_summary AS s WHERE s.id = 0";

// The same from `monitor` alone, for a database without kodo_summary (kodosumi's).
constexpr const char *kComputeSummary =
    "SELECT count(*), (SELECT timestamp FROM monitor ORDER BY id LIMIT 1), max(id), "
    "(SELECT timestamp FROM monitor ORDER BY id DESC LIMIT 1), "
    "(SELECT message FROM monitor WHERE kind = 'status' ORDER BY id DESC LIMIT 1) FROM monitor";

// Rows per INSERT statement: AUTOINCREMENT reads and writes sqlite_sequence once per
// statement, so multi-row statements cost much less per event than one row each.
constexpr size_t kRowsPerInsert = 32;

std::string insert_sql(size_t rows) {
  std::string sql =
      "INSERT OR IGNORE INTO monitor(id, timestamp, kind, message) VALUES (?, ?, ?, ?)";
  for (size_t i = 1; i < rows; ++i) sql += ", (?, ?, ?, ?)";
  return sql;
}

// A WAL frame is a page and this header.
constexpr int64_t kWalFrameHeader = 24;

// The per-connection page cache; many databases are open at once, each needs little.
constexpr const char *kCacheSize = "PRAGMA cache_size=-1024";

// The writer's wal_hook: SQLite calls it after each commit with the WAL's length. Installing
// it also turns off SQLite's own automatic checkpoint, which is the same hook.
int note_wal_pages(void *writer, sqlite3 *, const char *, int pages) {
  static_cast<Writer *>(writer)->wal_pages = pages;
  return SQLITE_OK;
}

// Both summary queries give: count, first timestamp, max id, its timestamp, status.
Summary summary_from(sqlite3_stmt *s) {
  Summary out;
  if (sqlite3_column_type(s, 2) == SQLITE_NULL) return out;  // no events
  out.event_count = sqlite3_column_int64(s, 0);
  out.first_ts = sqlite3_column_double(s, 1);
  out.last_seq = sqlite3_column_int64(s, 2) - 1;
  out.last_ts = sqlite3_column_double(s, 3);
  out.status = column_text(s, 4);
  return out;
}

// The bytes of a new execution database: kodosumi's table, our summary, in WAL mode. Made
// once in memory, so that making an execution is one small file write, not a series of
// SQLite transactions on a fresh file.
const std::string &empty_database() {
  static const std::string bytes = [] {
    sqlite3 *db = nullptr;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
      throw_sqlite(db, SQLITE_CANTOPEN, "open", ":memory:");
    std::unique_ptr<sqlite3, int (*)(sqlite3 *)> closer(db, sqlite3_close);
    for (const char *sql : {kMonitorTable, kSummaryTable, kKindIndex, kRecount}) {
      int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
      if (rc != SQLITE_OK) throw_sqlite(db, rc, "cannot build", "the empty database");
    }
    sqlite3_int64 size = 0;
    unsigned char *data = sqlite3_serialize(db, "main", &size, 0);
    if (!data || size < 100)
      throw Error(KODO_ERR_INTERNAL, "sqlite: cannot serialize the empty database");
    std::string out(reinterpret_cast<const char *>(data), static_cast<size_t>(size));
    sqlite3_free(data);
    // Header bytes 18 and 19 (file format write and read versions): 2 means WAL.
    out[18] = out[19] = 2;
    return out;
  }();
  return bytes;
}

// Makes a new execution folder and its database. The database is written under a temporary
// name and linked into place complete, so no reader (kodosumi's included) ever sees a
// sqlite3.db without its table; link() also refuses to replace one made meanwhile. It is
// synced first only with synchronous=full: normal promises to survive a crash of the
// process, not of the machine, and the sync would stall every new execution's first batch.
void create_execution(const fs::path &dir, bool sync) {
  for (const char *sub : {"in", "out"}) {
    std::error_code ec;
    fs::create_directories(dir / sub, ec);
    if (ec) throw Error(KODO_ERR_IO, "cannot create " + (dir / sub).string() + ": " + ec.message());
  }
  static std::atomic<uint64_t> counter{0};
  const fs::path tmp = dir / (".sqlite3.db." + std::to_string(::getpid()) + "." +
                              std::to_string(counter.fetch_add(1)) + ".tmp");
  const fs::path db = dir / kDbName;
  const std::string &bytes = empty_database();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    throw Error(KODO_ERR_IO,
                "cannot create " + tmp.string() + ": " + std::system_category().message(errno),
                true);
  size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  bool ok = written == bytes.size() && (!sync || ::fsync(fd) == 0);
  int err = errno;
  ::close(fd);
  if (ok && ::link(tmp.c_str(), db.c_str()) != 0 && errno != EEXIST) ok = false, err = errno;
  ::unlink(tmp.c_str());
  if (!ok)
    throw Error(KODO_ERR_IO,
                "cannot create " + db.string() + ": " + std::system_category().message(err), true);
}
}  // namespace

Summary read_summary(Conn &c) {
  if (sqlite3_stmt *s = c.try_prepare(kReadSummary)) {
    StmtUse use(s);
    if (c.step(s, "cannot read the summary of")) return summary_from(s);
  }
  sqlite3_stmt *s = c.prepare(kComputeSummary);  // kodosumi's database, not yet written by us
  StmtUse use(s);
  c.step(s, "cannot summarize");
  return summary_from(s);
}

sqlite3_stmt *Writer::insert(size_t rows) {
  if (!inserts[rows]) inserts[rows] = conn->prepare(insert_sql(rows));
  return inserts[rows];
}

void Writer::step_once(sqlite3_stmt *s, const char *what) {
  StmtUse use(s);
  conn->step(s, what);
}

void Writer::check_ignored(const std::vector<const kodo_event *> &events, size_t from,
                           size_t rows) {
  for (size_t i = from; i < from + rows; ++i) {
    const kodo_event *e = events[i];
    StmtUse use(row);
    sqlite3_bind_int64(row, 1, e->seq + 1);
    if (!conn->step(row, "cannot read back a row of")) continue;
    const auto *kind = reinterpret_cast<const char *>(sqlite3_column_text(row, 1));
    if (sqlite3_column_double(row, 0) == e->timestamp && kind && std::strcmp(kind, e->kind) == 0)
      continue;
    const auto *message = reinterpret_cast<const char *>(sqlite3_column_text(row, 2));
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "sqlite: row id " + std::to_string(e->seq + 1) + " of monitor in " + conn->path() +
                    " holds a row another writer appended (kind " + quote(kind) + ", message " +
                    quote(message, 60) + "), so event seq " + std::to_string(e->seq) + " (kind " +
                    quote(e->kind) + ") cannot be stored there",
                false);
  }
}

void Writer::write(const std::vector<const kodo_event *> &events) {
  Conn &c = *conn;
  step_once(begin, "cannot begin a transaction on");
  try {
    int64_t line = -1;  // the summary's counted_id; -1 if it has none
    {
      StmtUse use(counted_id);
      if (c.step(counted_id, "cannot read the summary of"))
        line = sqlite3_column_int64(counted_id, 0);
    }
    int64_t inserted = 0, min_id = INT64_MAX, max_id = 0;
    for (size_t done = 0; done < events.size();) {
      size_t rows = std::min(kRowsPerInsert, events.size() - done);
      sqlite3_stmt *s = insert(rows);
      StmtUse use(s);
      int p = 1;
      for (size_t i = done; i < done + rows; ++i) {
        const kodo_event *e = events[i];
        min_id = std::min(min_id, e->seq + 1);
        max_id = std::max(max_id, e->seq + 1);
        sqlite3_bind_int64(s, p++, e->seq + 1);
        sqlite3_bind_double(s, p++, e->timestamp);
        sqlite3_bind_text(s, p++, e->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text64(s, p++, e->payload ? e->payload : "", e->payload_len, SQLITE_STATIC,
                            SQLITE_UTF8);
      }
      c.step(s, "cannot insert into");
      const int changed = sqlite3_changes(c.db());
      if (static_cast<size_t>(changed) < rows) check_ignored(events, done, rows);
      inserted += changed;
      done += rows;
    }
    if (inserted > 0 && (line < 0 || min_id <= line)) {
      // Rows landed below the line (or there is no summary): count again. Rare.
      step_once(recount, "cannot recount the summary of");
    } else if (inserted > 0 && max_id - line >= kFoldRows) {
      StmtUse use(fold);
      sqlite3_bind_int64(fold, 1, line);
      sqlite3_bind_int64(fold, 2, max_id);
      c.step(fold, "cannot update the summary of");
    }
    step_once(commit, "cannot commit to");
  } catch (...) {
    if (!sqlite3_get_autocommit(c.db())) {
      StmtUse use(rollback);
      sqlite3_step(rollback);
    }
    throw;
  }
}

std::unique_ptr<Writer> open_writer(const fs::path &dir, const Settings &settings) {
  fs::path db = dir / kDbName;
  if (!is_file(db))
    create_execution(dir, std::strcmp(settings.synchronous, "PRAGMA synchronous=FULL") == 0);
  auto w = std::make_unique<Writer>();
  w->conn = std::make_unique<Conn>(db, SQLITE_OPEN_READWRITE, settings.busy_timeout_ms);
  Conn &c = *w->conn;
  c.exec("PRAGMA journal_mode=WAL", "cannot switch to WAL");
  c.exec(settings.synchronous, "cannot set synchronous on");
  c.exec(kCacheSize, "cannot set cache_size on");
  sqlite3_wal_hook(c.db(), note_wal_pages, w.get());
  // A WAL that a late checkpoint let grow past twice the threshold is cut back to that when it
  // next starts over, so that one slow spell does not keep its disk space.
  {
    sqlite3_stmt *s = c.prepare("PRAGMA page_size");
    StmtUse use(s);
    const int64_t page = c.step(s, "cannot read the page size of") ? sqlite3_column_int64(s, 0) : 0;
    const int64_t pages = std::min(settings.checkpoint_pages, settings.checkpoint_inline_pages);
    c.exec(("PRAGMA journal_size_limit=" + std::to_string(2 * pages * (page + kWalFrameHeader)))
               .c_str(),
           "cannot set journal_size_limit on");
  }
  // A database kodosumi made has no kodo_summary yet: add it, counted from its rows.
  if (!c.try_prepare(kCountedId)) {
    c.exec("BEGIN IMMEDIATE", "cannot begin a transaction on");
    try {
      c.exec(kMonitorTable, "cannot create table monitor in");
      c.exec(kSummaryTable, "cannot create table kodo_summary in");
      c.exec(kRecount, "cannot fill kodo_summary in");
      c.exec("COMMIT", "cannot commit to");
    } catch (...) {
      sqlite3_exec(c.db(), "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }
  // Databases made before the index (or by kodosumi) get it once, at their first write.
  c.exec(kKindIndex, "cannot index the kinds of monitor in");
  w->begin = c.prepare("BEGIN IMMEDIATE");  // take the write lock up front: no upgrade deadlock
  w->commit = c.prepare("COMMIT");
  w->rollback = c.prepare("ROLLBACK");
  w->counted_id = c.prepare(kCountedId);
  w->fold = c.prepare(kFold);
  w->recount = c.prepare(kRecount);
  w->row = c.prepare("SELECT timestamp, kind, message FROM monitor WHERE id = ?");
  w->inserts.assign(kRowsPerInsert + 1, nullptr);
  return w;
}

void passive_checkpoint(Conn &c) {
  sqlite3_stmt *s = c.prepare("PRAGMA wal_checkpoint(PASSIVE)");
  StmtUse use(s);
  c.step(s, "cannot checkpoint");  // its row says "busy" when another checkpoint is under way
}

void sync_database(Conn &c) {
  sqlite3_file *file = nullptr;
  int rc = sqlite3_file_control(c.db(), "main", SQLITE_FCNTL_FILE_POINTER, &file);
  if (rc == SQLITE_OK && file && file->pMethods)
    rc = file->pMethods->xSync(file, SQLITE_SYNC_NORMAL);
  if (rc != SQLITE_OK) c.fail(rc, "cannot sync");
}

// A connection for reading an existing database; never creates one.
std::unique_ptr<Conn> open_reader(const fs::path &db, const Settings &settings,
                                  const std::string &username, const std::string &fid) {
  auto not_found = [&] {
    return Error(KODO_ERR_NOT_FOUND, "execution " + quote(fid) + " of user " + quote(username) +
                                         " not found: " + db.string() + " does not exist");
  };
  if (!is_file(db)) throw not_found();
  std::unique_ptr<Conn> c;
  try {
    // Read-write without create, so it can recover a WAL; query_only keeps it a reader.
    c = std::make_unique<Conn>(db, SQLITE_OPEN_READWRITE, settings.busy_timeout_ms);
  } catch (const Error &) {
    if (!is_file(db)) throw not_found();  // archived or purged meanwhile
    throw;
  }
  c->exec("PRAGMA query_only=1", "cannot set up");
  c->exec(kCacheSize, "cannot set cache_size on");
  return c;
}

// An execution's place in listings: an ObjectId fid's creation time, else its first event's.
double sort_time(Writer &w, const std::string &fid) {
  if (auto t = objectid_time(fid)) return *t;
  sqlite3_stmt *s = w.conn->prepare("SELECT timestamp FROM monitor ORDER BY id LIMIT 1");
  StmtUse use(s);
  return w.conn->step(s, "cannot read the first event of") ? sqlite3_column_double(s, 0) : 0;
}

}  // namespace kodo_sqlite
