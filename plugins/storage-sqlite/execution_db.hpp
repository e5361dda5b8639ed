// execution_db.hpp: one execution's SQLite database in kodosumi's layout: where it lies, its
// summary, the writer that appends to it and the connections that read it. The schema, the
// summary's bookkeeping and the file's creation are in execution_db.cpp.
#pragma once

#include "sqlite_common.hpp"

#include <kodo/plugin.hpp>

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kodo_sqlite {

constexpr const char *kDbName = "sqlite3.db";
constexpr const char *kArchiveName = "sqlite3.db.archive";

struct Summary {
  int64_t event_count = 0;
  int64_t last_seq = -1;
  double first_ts = 0;
  double last_ts = 0;
  std::string status;
};

Summary read_summary(Conn &c);

struct Settings {
  fs::path exec_dir;
  int busy_timeout_ms = 5000;
  size_t max_open = 256;
  const char *synchronous = "PRAGMA synchronous=NORMAL";
  // WAL pages after which the checkpointer thread folds an execution's WAL into its database,
  // and after which its writer does so itself because the checkpointer fell behind.
  int checkpoint_pages = 1000;
  int checkpoint_inline_pages = 10000;
};

struct Writer {
  std::unique_ptr<Conn> conn;
  sqlite3_stmt *begin = nullptr, *commit = nullptr, *rollback = nullptr, *counted_id = nullptr,
               *fold = nullptr, *recount = nullptr, *row = nullptr;
  std::vector<sqlite3_stmt *> inserts;  // inserts[n]: a statement of n rows, prepared lazily
  int wal_pages = 0;  // the WAL's length in pages after the last commit (SQLite's wal_hook)

  sqlite3_stmt *insert(size_t rows);
  void step_once(sqlite3_stmt *s, const char *what);
  // An ignored row is a redelivered event or a collision: another writer appended a row with
  // that id (kodosumi's panel writes error rows when it thinks the runner is gone). A
  // redelivery carries the kind and timestamp its first copy was stored with (its payload may
  // differ: the first copy stays, as the contract says); another writer's row does not. A
  // collision must never pass silently: the event is refused for good, so the host records it
  // (log, kodo_events_refused_total) with what took its place.
  void check_ignored(const std::vector<const kodo_event *> &events, size_t from, size_t rows);
  // Stores one execution's events in one transaction.
  void write(const std::vector<const kodo_event *> &events);
};

// The writer's connection never checkpoints on commit: its owner reads wal_pages and asks
// the checkpointer (or, far past the threshold, calls passive_checkpoint itself).
std::unique_ptr<Writer> open_writer(const fs::path &dir, const Settings &settings);

// Copies what it can of the WAL into the database without waiting for any lock (PASSIVE);
// another checkpoint under way is not an error. Throws on I/O errors.
void passive_checkpoint(Conn &c);

// Flushes the database file to the disk: the pages a checkpoint that did not reach the end of
// the WAL copied into it (SQLite syncs them only when a checkpoint reaches the end).
void sync_database(Conn &c);

// A connection for reading an existing database; never creates one.
std::unique_ptr<Conn> open_reader(const fs::path &db, const Settings &settings,
                                  const std::string &username, const std::string &fid);

// An execution's place in listings: an ObjectId fid's creation time, else its first event's.
double sort_time(Writer &w, const std::string &fid);

}  // namespace kodo_sqlite
