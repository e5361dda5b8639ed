// sqlite_storage.cpp: kodo's embedded default storage.
//
// One SQLite database per execution, in kodosumi's layout, so that kodosumi's own reader and
// ours see the same rows:
//
//   <exec_dir>/<username>/<fid>/sqlite3.db   table monitor(id, timestamp, kind, message)
//   <exec_dir>/<username>/<fid>/in/, out/    (files of the execution)
//
// An event's row id is seq + 1, so (fid, seq) is the primary key and a redelivered event is
// ignored. A one-row table kodo_summary lets get_execution and listings answer without
// scanning `monitor`; kodosumi ignores it.
//
// Connections are cached per execution (an LRU of max_open_databases entries). Each entry has
// a writer connection behind its mutex and a few idle reader connections that reads take and
// hand back, so that under WAL reads of one execution run at once, and beside its writer.
// Archive and purge take the writer's mutex, wait for the readers in use (keeping new ones
// out), and mark the entry `gone` so that anyone still holding it looks the execution up again.
// One append commits its executions on a few threads, one transaction per execution.
// Commits do not checkpoint: a background thread folds each WAL into its database once it
// passes checkpoint_pages, and a writer whose WAL is checkpoint_inline_pages long (the
// checkpointer fell far behind) does it itself, so the WAL stays bounded.
//
// Files: execution_db.* (one execution's database: schema, summary, writer, readers),
// execution_cache.hpp (an open execution and how it is held), worker_pool.hpp (append's
// threads), checkpointer.* (the WAL checkpoints' thread), listing_index.* (the listing order),
// sqlite_common.hpp (the connection wrapper);
// this file holds the storage: options, the cache, and the ABI's calls.
#include "checkpointer.hpp"
#include "execution_cache.hpp"
#include "execution_db.hpp"
#include "listing_index.hpp"
#include "sqlite_common.hpp"
#include "worker_pool.hpp"

#include <kodo/plugin.hpp>

#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

using namespace kodo_sqlite;  // NOLINT(google-build-using-namespace): the plugin's own helpers

// ------------------------------------------------------------------------------------------
// The storage

class SqliteStorage final : public kodo::sdk::StorageBase {
 public:
  SqliteStorage(const SqliteStorage &) = delete;  // owns its connections and threads
  SqliteStorage &operator=(const SqliteStorage &) = delete;
  SqliteStorage(const kodo::sdk::Options &options, const kodo_host_api *host) : log_(host) {
    std::string dir = options.get("exec_dir", "./data/execution");
    if (dir.empty()) throw Error(KODO_ERR_INVALID_ARGUMENT, "option exec_dir is empty");
    std::error_code ec;
    settings_.exec_dir = fs::absolute(dir, ec).lexically_normal();
    if (ec)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "option exec_dir " + quote(dir) + ": " + ec.message());
    if (!settings_.exec_dir.has_filename())  // "a/b/" stays "a/b/": drop the slash
      settings_.exec_dir = settings_.exec_dir.parent_path();

    int64_t busy = options.get_int("busy_timeout_ms", 5000);
    if (busy < 0 || busy > INT_MAX)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "option busy_timeout_ms must be 0.." +
                                                 std::to_string(INT_MAX) + ", got " +
                                                 std::to_string(busy));
    settings_.busy_timeout_ms = static_cast<int>(busy);

    int64_t max_open = options.get_int("max_open_databases", 256);
    if (max_open < 1)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "option max_open_databases must be at least 1, got " + std::to_string(max_open));
    settings_.max_open = static_cast<size_t>(max_open);

    std::string sync = options.get("synchronous", "normal");
    std::transform(sync.begin(), sync.end(), sync.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (sync == "normal")
      settings_.synchronous = "PRAGMA synchronous=NORMAL";
    else if (sync == "full")
      settings_.synchronous = "PRAGMA synchronous=FULL";
    else
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "option synchronous must be normal or full, got " + quote(sync));

    int64_t threads = options.get_int("append_threads", 0);
    if (threads < 0 || threads > 64)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "option append_threads must be 0..64, got " + std::to_string(threads));
    if (threads == 0)
      threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, kAutoThreads);
    pool_ = std::make_unique<WorkerPool>(static_cast<size_t>(threads - 1));

    settings_.checkpoint_pages = page_option(options, "checkpoint_pages", 1000, 1);
    const int64_t inline_pages = page_option(options, "checkpoint_inline_pages", 0, 0);
    settings_.checkpoint_inline_pages =
        inline_pages > 0 ? static_cast<int>(inline_pages)
                         : static_cast<int>(std::min<int64_t>(
                               int64_t{10} * settings_.checkpoint_pages, INT_MAX));
    checkpointer_ = std::make_unique<Checkpointer>(settings_, log_);
    index_ = std::make_unique<ListingIndex>(settings_.exec_dir, settings_.busy_timeout_ms);

    log_(KODO_LOG_INFO, "sqlite storage in " + settings_.exec_dir.string());
  }

  ~SqliteStorage() override {
    pool_.reset();          // no call is running (see close): its helpers are idle
    checkpointer_.reset();  // before the entries it may hold are closed
    // Close every connection (checkpointing its WAL), outside the cache mutex as always:
    // entries lock themselves when they go.
    decltype(entries_) entries;
    {
      std::lock_guard lock(cache_mu_);
      lru_.clear();
      entries.swap(entries_);
    }
  }

  void create_schema() override {
    std::error_code ec;
    fs::create_directories(settings_.exec_dir, ec);
    if (ec || !fs::is_directory(settings_.exec_dir, ec))
      throw Error(KODO_ERR_IO, "cannot create the execution folder " + settings_.exec_dir.string() +
                                   (ec ? ": " + ec.message() : ": not a directory"));
  }

  void append(const kodo_event *const *events, size_t count) override {
    if (count == 0) return;
    if (!events) throw Error(KODO_ERR_INVALID_ARGUMENT, "append: events is NULL");

    // Validate the whole batch before writing any of it, and group it by execution,
    // keeping each execution's events in batch order.
    struct Group {
      const char *username;
      const char *fid;
      std::vector<const kodo_event *> events;
    };
    std::vector<Group> groups;
    std::unordered_map<std::string_view, size_t> by_fid;
    for (size_t i = 0; i < count; ++i) {
      const kodo_event *e = events[i];
      kodo::sdk::check_event("append", e, i);
      auto [it, fresh] = by_fid.try_emplace(std::string_view(e->fid), groups.size());
      if (fresh) {
        groups.push_back(Group{e->username, e->fid, {}});
      } else if (std::strcmp(groups[it->second].username, e->username) != 0) {
        throw Error(KODO_ERR_INVALID_ARGUMENT, "append: fid " + quote(e->fid) +
                                                   " appears with users " +
                                                   quote(groups[it->second].username) + " and " +
                                                   quote(e->username) + " in one batch");
      }
      groups[it->second].events.push_back(e);
    }

    // One transaction per execution, spread over the helper threads. Keep going after a
    // failure so that the others are stored; the caller retries the batch and the stored
    // events are skipped.
    std::vector<std::optional<Error>> errors(groups.size());
    std::vector<std::optional<ListingIndex::Item>> new_items(groups.size());
    std::function<void(size_t)> store_group = [&](size_t i) {
      const Group &g = groups[i];
      try {
        with_writer(g.username, g.fid, [&](Entry &e) {
          if (!e.writer) {
            e.writer = open_writer(e.dir, settings_);
            remember_owner(e);
          }
          try {
            e.writer->write(g.events);
            checkpoint_if_due(e);
            if (!index_->knows(e.username, e.fid))
              new_items[i] = ListingIndex::Item{e.username, e.fid, sort_time(*e.writer, e.fid)};
          } catch (const Error &err) {
            // Start over with a fresh connection unless the database was merely busy.
            if (err.code() != KODO_ERR_UNAVAILABLE) e.writer.reset();
            throw;
          }
        });
      } catch (const Error &err) {
        errors[i] = err;
      } catch (const std::exception &err) {
        errors[i] = Error(KODO_ERR_INTERNAL, std::string("append: ") + err.what());
      }
    };
    pool_->run(groups.size(), store_group);

    // The executions new to the index, in one transaction. Its failure loses nothing: a new
    // execution's folder changed its user folder, so the next listing reads that folder.
    std::vector<ListingIndex::Item> items;
    for (size_t i = 0; i < groups.size(); ++i)
      if (new_items[i] && !errors[i]) items.push_back(std::move(*new_items[i]));
    try {
      index_->add(items);
    } catch (const Error &err) {
      log_(KODO_LOG_WARN, std::string("append: ") + err.what());
    }

    size_t failed = 0;
    const Error *first = nullptr;
    for (const auto &err : errors)
      if (err && failed++ == 0) first = &*err;
    if (failed == 1) throw *first;
    if (failed > 1)
      throw Error(first->code(),
                  "append: " + std::to_string(failed) + " of " + std::to_string(groups.size()) +
                      " executions failed; the first: " + first->what(),
                  first->retryable());
  }

  void read_events(const kodo_read_request &request, kodo::sdk::EventPageBuilder &out) override {
    check_name("fid", request.fid);
    if (request.username) check_name("username", request.username);
    if (request.limit == 0)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "read_events: limit must be greater than 0");
    if (request.kind_count > 0 && !request.kinds)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "read_events: kinds is NULL but kind_count is " +
                                                 std::to_string(request.kind_count));
    for (size_t i = 0; i < request.kind_count; ++i)
      if (!request.kinds[i] || !*request.kinds[i])
        throw Error(KODO_ERR_INVALID_ARGUMENT,
                    "read_events: kinds[" + std::to_string(i) + "] is empty");

    const std::string fid = request.fid;
    const std::string username = request.username ? request.username : locate(fid);
    // Row ids are seq + 1; clamp so that neither end overflows.
    int64_t after_id =
        std::max<int64_t>(std::min<int64_t>(request.after_seq, INT64_MAX - 1), -1) + 1;
    int64_t limit = static_cast<int64_t>(std::min<size_t>(request.limit, INT64_MAX - 1));

    // Filtered by kind: one index walk per kind, each in id order, merged. Its cost follows
    // the rows returned, not the rows of the run.
    std::vector<std::string> kinds(request.kinds, request.kinds + request.kind_count);
    std::sort(kinds.begin(), kinds.end());
    kinds.erase(std::unique(kinds.begin(), kinds.end()), kinds.end());
    const std::string sql = kinds.empty()
                                ? "SELECT id, timestamp, kind, message FROM monitor WHERE id > ? "
                                  "ORDER BY id LIMIT ?"
                                : "SELECT id, timestamp, kind, message FROM monitor WHERE kind = ? "
                                  "AND id > ? ORDER BY id LIMIT ?";
    struct Row {
      int64_t id;
      double timestamp;
      std::string kind, message;
    };
    std::vector<Row> rows;
    with_reader(username, fid, true, [&](Conn &c) {
      rows.clear();
      const size_t walks = std::max<size_t>(kinds.size(), 1);
      for (size_t k = 0; k < walks; ++k) {
        sqlite3_stmt *s = c.prepare(sql);
        StmtUse use(s);
        int n = 1;
        if (!kinds.empty()) sqlite3_bind_text(s, n++, kinds[k].c_str(), -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, n++, after_id);
        sqlite3_bind_int64(s, n++, limit + 1);  // one more tells whether more follow
        while (c.step(s, "cannot read events from"))
          rows.push_back(Row{sqlite3_column_int64(s, 0), sqlite3_column_double(s, 1),
                             column_text(s, 2), column_text(s, 3)});
      }
    });
    if (kinds.size() > 1)
      std::sort(rows.begin(), rows.end(), [](const Row &x, const Row &y) { return x.id < y.id; });
    const size_t take = static_cast<size_t>(std::min<int64_t>(limit, INT64_MAX - 1));
    if (rows.size() > take) out.set_has_more(true);
    for (size_t i = 0; i < rows.size() && i < take; ++i) {
      kodo::sdk::OwnedEvent &e = out.add();
      e.fid = fid;
      e.username = username;
      e.seq = rows[i].id - 1;
      e.timestamp = rows[i].timestamp;
      e.kind = std::move(rows[i].kind);
      e.payload = std::move(rows[i].message);
    }
  }

  void get_execution(const char *fid_arg, const char *username_arg,
                     kodo::sdk::ExecutionPageBuilder &out) override {
    check_name("fid", fid_arg);
    if (username_arg) check_name("username", username_arg);
    const std::string fid = fid_arg;
    const std::string username = username_arg ? username_arg : locate(fid);
    Summary s = with_reader(username, fid, true, [](Conn &c) { return read_summary(c); });
    fill(out.add(), username, fid, s);
  }

  void list_executions(const kodo_list_request &request,
                       kodo::sdk::ExecutionPageBuilder &out) override {
    if (request.username) check_name("username", request.username);
    if (request.limit == 0)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "list_executions: limit must be greater than 0");

    // The index gives the page in order; each row's summary comes from its own database.
    bool more = false;
    for (const ListingIndex::Key &k :
         index_->page(request.username, request.offset, request.limit, more)) {
      std::optional<Summary> summary = summary_or_empty(k.username, k.fid);
      if (!summary) {  // archived or purged behind the index's back
        index_->remove(k.username, k.fid);
        continue;
      }
      fill(out.add(), k.username, k.fid, *summary);
    }
    out.set_has_more(more);
  }

  void archive_execution(const char *fid_arg, const char *username_arg) override {
    check_name("fid", fid_arg);
    if (username_arg) check_name("username", username_arg);
    const std::string fid = fid_arg;
    const std::string username = username_arg ? username_arg : locate(fid);
    for (;;) {
      std::shared_ptr<Entry> e = acquire(username, fid, false);
      Exclusive hold(*e);
      if (e->gone) continue;
      fs::path db = e->dir / kDbName;
      if (!is_file(db))
        throw Error(KODO_ERR_NOT_FOUND, "archive: execution " + quote(fid) + " of user " +
                                            quote(username) + " not found: " + db.string() +
                                            " does not exist");
      e->writer.reset();
      e->idle.clear();
      // Fold the WAL into the file, so the archive is one self-contained file.
      {
        Conn c(db, SQLITE_OPEN_READWRITE, settings_.busy_timeout_ms);
        sqlite3_stmt *s = c.prepare("PRAGMA wal_checkpoint(TRUNCATE)");
        StmtUse use(s);
        if (c.step(s, "cannot checkpoint") && sqlite3_column_int(s, 0) != 0)
          throw Error(KODO_ERR_UNAVAILABLE,
                      "archive: " + db.string() +
                          " is in use by another process; its log could not be checkpointed",
                      true);
      }
      // Never overwrite an earlier archive of the same fid.
      fs::path target = e->dir / kArchiveName;
      for (int n = 1; fs::exists(fs::symlink_status(target)); ++n)
        target = e->dir / (std::string(kArchiveName) + "." + std::to_string(n));
      std::error_code ec;
      fs::rename(db, target, ec);
      if (ec)
        throw Error(KODO_ERR_IO, "archive: cannot rename " + db.string() + " to " +
                                     target.string() + ": " + ec.message());
      retire(*e);
      break;
    }
    index_->remove(username, fid);  // outside the execution's mutexes: the index's own order
  }

  int64_t purge(double older_than) override {
    if (std::isnan(older_than))
      throw Error(KODO_ERR_INVALID_ARGUMENT, "purge: older_than is not a number");
    int64_t purged = 0;
    size_t failed = 0;
    std::string first_failure;
    for (const std::string &user : valid_subdirs(settings_.exec_dir)) {
      for (const std::string &fid : valid_subdirs(settings_.exec_dir / user)) {
        try {
          if (purge_one(user, fid, older_than)) {
            ++purged;
            index_->remove(user, fid);
          }
        } catch (const Error &err) {
          if (failed++ == 0) first_failure = err.what();
        }
      }
    }
    if (failed > 0)
      throw Error(KODO_ERR_IO, "purge: removed " + std::to_string(purged) +
                                   " executions but failed on " + std::to_string(failed) +
                                   "; the first: " + first_failure);
    return purged;
  }

 private:
  static void fill(kodo::sdk::OwnedExecution &x, const std::string &username,
                   const std::string &fid, const Summary &s) {
    x.fid = fid;
    x.username = username;
    x.status = s.status;
    x.started_at = s.first_ts;
    x.updated_at = s.last_ts;
    x.event_count = s.event_count;
    x.last_seq = s.last_seq;
  }

  // A page count option: least..INT_MAX (SQLite counts pages in an int).
  static int page_option(const kodo::sdk::Options &options, const char *name, int64_t fallback,
                         int64_t least) {
    const int64_t pages = options.get_int(name, fallback);
    if (pages < least || pages > INT_MAX)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  std::string("option ") + name + " must be " + std::to_string(least) + ".." +
                      std::to_string(INT_MAX) + ", got " + std::to_string(pages));
    return static_cast<int>(pages);
  }

  // After a commit (its writer's mutex held): a WAL past the threshold goes to the
  // checkpointer; one far past it, which the checkpointer has not reached, is checkpointed
  // here. A failure of that checkpoint does not undo the commit: it is logged.
  void checkpoint_if_due(Entry &e) {
    const int pages = e.writer->wal_pages;
    if (pages >= settings_.checkpoint_inline_pages) {
      try {
        passive_checkpoint(*e.writer->conn);
      } catch (const Error &err) {
        log_(KODO_LOG_WARN, std::string("append: ") + err.what());
      }
    } else if (pages >= settings_.checkpoint_pages) {
      checkpointer_->request(e.shared_from_this());
    }
  }

  // The cache entry of an execution, made if missing. `hot` entries go to the front of the
  // LRU; maintenance (listing, archive, purge) leaves them at the back, so that walking
  // thousands of executions does not push out the ones being written.
  std::shared_ptr<Entry> acquire(const std::string &username, const std::string &fid, bool hot) {
    std::string key = username + "/" + fid;
    std::shared_ptr<Entry> e;
    std::vector<std::shared_ptr<Entry>> victims;
    {
      std::unique_lock lock(cache_mu_);
      // A connection of this database being closed could otherwise outlive a rename.
      closing_cv_.wait(lock, [&] { return closing_.count(key) == 0; });
      auto it = entries_.find(key);
      if (it != entries_.end()) {
        e = it->second;
        if (hot) lru_.splice(lru_.begin(), lru_, e->lru);
        return e;
      }
      e = std::make_shared<Entry>(username, fid, settings_.exec_dir / username / fid);
      e->lru = hot ? lru_.insert(lru_.begin(), e.get()) : lru_.insert(lru_.end(), e.get());
      entries_.emplace(key, e);
      // Evict unused entries from the back. An entry is only handed out under this mutex,
      // so one that only the map holds (use_count 1) cannot be picked up meanwhile.
      for (auto pos = lru_.end(); entries_.size() > settings_.max_open && pos != lru_.begin();) {
        --pos;
        auto found = entries_.find((*pos)->key);
        if (found->second.use_count() != 1) continue;
        closing_.insert(found->first);
        victims.push_back(std::move(found->second));
        entries_.erase(found);
        pos = lru_.erase(pos);
      }
    }
    if (!victims.empty()) {
      std::vector<std::string> keys;
      keys.reserve(victims.size());
      for (auto &v : victims) keys.push_back(v->key);
      victims.clear();  // closes their connections, outside the cache mutex
      std::lock_guard lock(cache_mu_);
      for (auto &k : keys) closing_.erase(k);
      closing_cv_.notify_all();
    }
    return e;
  }

  // Drops an archived or purged entry. The caller holds both of its mutexes.
  void retire(Entry &e) {
    e.gone = true;
    std::lock_guard lock(cache_mu_);
    auto it = entries_.find(e.key);
    if (it != entries_.end() && it->second.get() == &e) {
      lru_.erase(e.lru);
      entries_.erase(it);
    }
    auto owner = owners_.find(e.fid);
    if (owner != owners_.end() && owner->second == e.username) owners_.erase(owner);
  }

  template <class Fn>
  void with_writer(const char *username, const char *fid, Fn &&fn) {
    for (;;) {
      std::shared_ptr<Entry> e = acquire(username, fid, true);
      std::lock_guard lock(e->write_mu);
      if (e->gone) continue;  // archived or purged while we waited: look it up again
      fn(*e);
      return;
    }
  }

  // Runs fn on a reader connection of the execution: an idle one, or a new one.
  template <class Fn>
  std::invoke_result_t<Fn &, Conn &> with_reader(const std::string &username,
                                                 const std::string &fid, bool hot, Fn &&fn) {
    for (;;) {
      std::shared_ptr<Entry> e = acquire(username, fid, hot);
      std::unique_ptr<Conn> c;
      if (!take_reader(*e, true, c)) continue;  // archived or purged: look it up again
      Lease lease(*e, std::move(c));
      try {
        if (!lease.conn) {
          lease.conn = open_reader(e->dir / kDbName, settings_, e->username, e->fid);
          remember_owner(*e);
        }
        return fn(*lease.conn);
      } catch (const Error &err) {
        if (err.code() != KODO_ERR_UNAVAILABLE) lease.keep = false;
        throw;
      }
    }
  }

  // The summary, or nothing if the execution is gone; other failures are logged and give an
  // empty summary, so that one broken database does not break a whole listing.
  std::optional<Summary> summary_or_empty(const std::string &username, const std::string &fid) {
    try {
      return with_reader(username, fid, false, [](Conn &c) { return read_summary(c); });
    } catch (const Error &err) {
      if (err.code() == KODO_ERR_NOT_FOUND) return std::nullopt;
      log_(KODO_LOG_WARN, std::string("list_executions: ") + err.what());
      return Summary{};
    }
  }

  // fid -> username, so that a read without username rarely scans the user folders.
  void remember_owner(const Entry &e) {
    std::lock_guard lock(cache_mu_);
    if (owners_.size() >= kMaxOwners) owners_.clear();
    owners_[e.fid] = e.username;
  }

  std::string locate(const std::string &fid) {
    {
      std::lock_guard lock(cache_mu_);
      auto it = owners_.find(fid);
      if (it != owners_.end() && is_file(settings_.exec_dir / it->second / fid / kDbName))
        return it->second;
    }
    for (const std::string &user : valid_subdirs(settings_.exec_dir)) {
      if (is_file(settings_.exec_dir / user / fid / kDbName)) {
        std::lock_guard lock(cache_mu_);
        if (owners_.size() >= kMaxOwners) owners_.clear();
        owners_[fid] = user;
        return user;
      }
    }
    throw Error(KODO_ERR_NOT_FOUND, "execution " + quote(fid) + " not found in " +
                                        settings_.exec_dir.string() + "/*/" + fid + "/" + kDbName);
  }

  // Deletes one execution folder if every database in it (live and archived) is older than
  // older_than. Unreadable databases are kept and reported.
  bool purge_one(const std::string &username, const std::string &fid, double older_than) {
    for (;;) {
      std::shared_ptr<Entry> e = acquire(username, fid, false);
      Exclusive hold(*e);
      if (e->gone) continue;
      bool any = false;
      double newest = -std::numeric_limits<double>::infinity();
      auto consider = [&](const Summary &s) {
        any = true;
        if (s.event_count > 0) newest = std::max(newest, s.last_ts);
      };
      std::error_code ec;
      for (fs::directory_iterator it(e->dir, ec), end; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        if (name != kDbName &&
            (name.rfind(kArchiveName, 0) != 0 || name.find('-') != std::string::npos))
          continue;
        Conn c(it->path(), SQLITE_OPEN_READWRITE, settings_.busy_timeout_ms);
        consider(read_summary(c));
      }
      if (ec)
        throw Error(KODO_ERR_IO, "purge: cannot list " + e->dir.string() + ": " + ec.message());
      if (!any || newest >= older_than) return false;
      e->writer.reset();
      e->idle.clear();
      fs::remove_all(e->dir, ec);
      if (ec)
        throw Error(KODO_ERR_IO, "purge: cannot remove " + e->dir.string() + ": " + ec.message());
      retire(*e);
      return true;
    }
  }

  static constexpr size_t kMaxOwners = 100000;
  static constexpr int64_t kAutoThreads = 4;

  Settings settings_;
  kodo::sdk::HostLog log_;

  std::mutex cache_mu_;  // guards everything below; never held while waiting on an entry
  std::unordered_map<std::string, std::shared_ptr<Entry>> entries_;  // by "username/fid"
  std::list<Entry *> lru_;                                           // front: most recent
  std::unordered_set<std::string> closing_;  // keys of evicted entries still closing
  std::condition_variable closing_cv_;
  std::unordered_map<std::string, std::string> owners_;  // fid -> username

  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<ListingIndex> index_;
};

const kodo_option_spec kExecDir = kodo::sdk::option(
    "exec_dir", KODO_OPTION_PATH, 0, "./data/execution", "KODO_EXEC_DIR",
    "folder holding <username>/<fid>/sqlite3.db per execution (kodosumi's EXEC_DIR)");
const kodo_option_spec kBusyTimeout = kodo::sdk::option(
    "busy_timeout_ms", KODO_OPTION_INT, 0, "5000", nullptr,
    "how long to wait for a database another connection has locked before failing (retryable)");
const kodo_option_spec kMaxOpen =
    kodo::sdk::option("max_open_databases", KODO_OPTION_INT, 0, "256", nullptr,
                      "execution databases kept open (least recently used are closed first)");
const kodo_option_spec kSynchronous = kodo::sdk::option(
    "synchronous", KODO_OPTION_STRING, 0, "normal", nullptr,
    "normal: commits survive a crash of the process (kodosumi's setting); full: also a power "
    "loss, at a large cost in speed");
const kodo_option_spec kAppendThreads = kodo::sdk::option(
    "append_threads", KODO_OPTION_INT, 0, "0", nullptr,
    "threads one append spreads its executions over (0: one per core, at most 4; 1: none)");
const kodo_option_spec kCheckpointPages = kodo::sdk::option(
    "checkpoint_pages", KODO_OPTION_INT, 0, "1000", nullptr,
    "WAL pages after which a background thread checkpoints an execution's database (SQLite's "
    "wal_autocheckpoint, run beside the commits instead of in one)");
const kodo_option_spec kCheckpointInlinePages = kodo::sdk::option(
    "checkpoint_inline_pages", KODO_OPTION_INT, 0, "0", nullptr,
    "WAL pages at which a commit checkpoints its database itself, the background thread having "
    "fallen behind (0: 10 x checkpoint_pages; at most checkpoint_pages: every checkpoint inline, "
    "as SQLite does by itself)");
const kodo_option_spec *const kOptions[] = {
    &kExecDir,         &kBusyTimeout,          &kMaxOpen, &kSynchronous, &kAppendThreads,
    &kCheckpointPages, &kCheckpointInlinePages};

}  // namespace

KODO_STORAGE_PLUGIN(SqliteStorage, "sqlite", "0.1.0",
                    "SQLite, one database per execution in kodosumi's layout (embedded default)",
                    KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE,
                    kOptions, sizeof(kOptions) / sizeof(kOptions[0]))
