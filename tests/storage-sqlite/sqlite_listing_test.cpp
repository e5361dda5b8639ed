// Tests of the SQLite storage's listings: order, paging and users, the index of executions
// (kodo_index.db) kept by appends, archive and purge, and executions kodosumi wrote, which
// the index learns from their folders.
#include "sqlite_test_support.hpp"

#include <kodo/kodo_plugin.h>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace {

using namespace sqlite_test;  // NOLINT(google-build-using-namespace)
namespace fs = std::filesystem;

// An execution made as kodosumi makes one: its table and rows, none of kodo's tables, and no
// row in kodo's index.
void kodosumi_execution(const fs::path &dir, const std::string &user, const std::string &fid,
                        double t, const std::string &status) {
  fs::path exec = dir / user / fid;
  fs::create_directories(exec);
  sqlite3 *c = nullptr;
  ASSERT_EQ(sqlite3_open((exec / "sqlite3.db").c_str(), &c), SQLITE_OK);
  const std::string sql =
      "PRAGMA journal_mode=wal;"
      "CREATE TABLE monitor(id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp REAL NOT NULL, "
      "kind TEXT NOT NULL, message TEXT NOT NULL);"
      "INSERT INTO monitor(timestamp, kind, message) VALUES (" +
      std::to_string(t) + ", 'status', '" + status + "')";
  EXPECT_EQ(sqlite3_exec(c, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(c);
}

// The index's rows of one fid, as text ("0" or "1").
std::string index_rows(const fs::path &dir, const std::string &fid) {
  return query_text(dir / "kodo_index.db",
                    "SELECT count(*) FROM executions WHERE fid = '" + fid + "'");
}

TEST_F(SqliteStorage, ListsNewestFirstAcrossUsers) {
  Store store(dir_);
  // ObjectIds whose time prefixes interleave the two users.
  const std::vector<std::pair<std::string, uint32_t>> made{
      {"alice", 100}, {"bob", 200}, {"alice", 300}, {"bob", 400}, {"alice", 500}};
  for (auto &[user, t] : made)
    store.append_ok(
        {ev(oid(t), 0, "status", "running", user, t), ev(oid(t), 1, "stdout", "x", user, t + 1)});
  store.append_ok({ev(oid(500), 2, "status", "finished", "alice", 502)});

  bool more = false;
  EXPECT_EQ(store.list_fids(nullptr, 0, 100, &more),
            (std::vector<std::string>{oid(500), oid(400), oid(300), oid(200), oid(100)}));
  EXPECT_FALSE(more);
  EXPECT_EQ(store.list_fids(nullptr, 0, 2, &more), (std::vector<std::string>{oid(500), oid(400)}));
  EXPECT_TRUE(more);
  EXPECT_EQ(store.list_fids(nullptr, 2, 2, &more), (std::vector<std::string>{oid(300), oid(200)}));
  EXPECT_TRUE(more);
  EXPECT_EQ(store.list_fids(nullptr, 4, 2, &more), (std::vector<std::string>{oid(100)}));
  EXPECT_FALSE(more);
  EXPECT_TRUE(store.list_fids(nullptr, 10, 2, &more).empty());
  EXPECT_FALSE(more);
  EXPECT_EQ(store.list_fids("alice", 0, 10, &more),
            (std::vector<std::string>{oid(500), oid(300), oid(100)}));
  EXPECT_EQ(store.list_fids("bob", 1, 10, &more), (std::vector<std::string>{oid(200)}));
  EXPECT_TRUE(store.list_fids("nobody", 0, 10, &more).empty());

  ExecutionPage page;
  ASSERT_EQ(store.list(nullptr, 0, 1, page).status, KODO_OK);
  ASSERT_EQ(page.executions.size(), 1u);
  EXPECT_EQ(page.executions[0].username, "alice");
  EXPECT_EQ(page.executions[0].status, "finished");
  EXPECT_EQ(page.executions[0].event_count, 3);
  EXPECT_EQ(page.executions[0].started_at, 500);
  EXPECT_EQ(page.executions[0].updated_at, 502);

  Outcome o = store.list("../etc", 0, 10, page);
  EXPECT_EQ(o.status, KODO_ERR_INVALID_ARGUMENT);
  EXPECT_NE(o.message.find("../etc"), std::string::npos);
}

TEST_F(SqliteStorage, ListsOtherFidsByStartTime) {
  Store store(dir_);
  store.append_ok({ev("run-b", 0, "status", "running", "carol", 250)});
  store.append_ok({ev("run-a", 0, "status", "running", "carol", 450)});
  store.append_ok({ev(oid(300), 0, "status", "running", "alice", 300)});
  store.append_ok({ev(oid(500), 0, "status", "running", "bob", 500)});
  EXPECT_EQ(store.list_fids(nullptr, 0, 10),
            (std::vector<std::string>{oid(500), "run-a", oid(300), "run-b"}));
  EXPECT_EQ(store.list_fids(nullptr, 1, 2), (std::vector<std::string>{"run-a", oid(300)}));
}

// Prints what making executions and listing a page out of thousands cost. A listing reads
// one page of the index, and opens only the databases of that page.
TEST_F(SqliteStorage, ListingThousandsOfExecutions) {
  const int executions = getenv("KODO_LIST_N") ? atoi(getenv("KODO_LIST_N")) : 1000;
  Store store(dir_);
  std::vector<Ev> batch;
  for (int x = 0; x < executions; ++x)
    batch.push_back(ev(oid(1700000000 + x, x), 0, "status", "running", x % 2 ? "alice" : "bob"));
  auto start = std::chrono::steady_clock::now();
  store.append_ok(batch);
  double made = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  start = std::chrono::steady_clock::now();
  bool more = false;
  std::vector<std::string> first = store.list_fids(nullptr, 0, 20, &more);
  const int offset = executions * 3 / 4;
  std::vector<std::string> deep = store.list_fids(nullptr, offset, 20, &more);
  double listed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(first.size(), 20u);
  EXPECT_EQ(first[0], oid(1700000000 + executions - 1, executions - 1));
  ASSERT_FALSE(deep.empty());
  EXPECT_EQ(deep[0], oid(1700000000 + executions - 1 - offset, executions - 1 - offset));
  std::printf(
      "[ throughput ] %d new executions in one append: %.2f s (%.2f ms each); "
      "two listings of 20 out of %d: %.1f ms each\n",
      executions, made, made * 1000 / executions, executions, listed * 1000 / 2);
}

TEST_F(SqliteStorage, ListsExecutionsKodosumiWroteWithoutTheIndex) {
  kodosumi_execution(dir_, "alice", oid(100), 100, "finished");
  {
    Store store(dir_);
    // No index yet: the first listing builds it from the folders.
    EXPECT_EQ(store.list_fids(nullptr, 0, 10), (std::vector<std::string>{oid(100)}));
    EXPECT_EQ(index_rows(dir_, oid(100)), "1");

    // Made after the index: by kodo, by kodosumi beside it, by kodosumi for a new user.
    store.append_ok({ev(oid(300), 0, "status", "running", "alice", 300)});
    kodosumi_execution(dir_, "alice", oid(200), 200, "running");
    kodosumi_execution(dir_, "dave", "run-x", 250, "running");
    bool more = false;
    EXPECT_EQ(store.list_fids(nullptr, 0, 10, &more),
              (std::vector<std::string>{oid(300), "run-x", oid(200), oid(100)}));
    EXPECT_FALSE(more);
    EXPECT_EQ(store.list_fids(nullptr, 1, 2, &more), (std::vector<std::string>{"run-x", oid(200)}));
    EXPECT_TRUE(more);
    EXPECT_EQ(store.list_fids("dave", 0, 10), (std::vector<std::string>{"run-x"}));

    // Summaries come from the databases: kodosumi's later rows show without the index.
    sqlite3 *c = nullptr;
    ASSERT_EQ(sqlite3_open(db_path(oid(200)).c_str(), &c), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(c,
                           "INSERT INTO monitor(timestamp, kind, message) "
                           "VALUES (210, 'status', 'error')",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(c);
    ExecutionPage page;
    ASSERT_EQ(store.list("alice", 1, 1, page).status, KODO_OK);
    ASSERT_EQ(page.executions.size(), 1u);
    EXPECT_EQ(page.executions[0].fid, oid(200));
    EXPECT_EQ(page.executions[0].status, "error");
    EXPECT_EQ(page.executions[0].event_count, 2);

    // A folder kodosumi removes leaves the listing.
    fs::remove_all(dir_ / "alice" / oid(200));
    EXPECT_EQ(store.list_fids("alice", 0, 10), (std::vector<std::string>{oid(300), oid(100)}));
  }
  // A lost index is built again from the folders.
  for (const char *name : {"kodo_index.db", "kodo_index.db-wal", "kodo_index.db-shm"})
    fs::remove(dir_ / name);
  Store store(dir_);
  EXPECT_EQ(store.list_fids(nullptr, 0, 10),
            (std::vector<std::string>{oid(300), "run-x", oid(100)}));
}

// An exec folder not there (yet) lists nothing, as before the index, and makes no index.
TEST_F(SqliteStorage, ListsNothingWithoutTheExecFolder) {
  Store store(dir_);
  fs::remove_all(dir_);
  bool more = true;
  EXPECT_TRUE(store.list_fids(nullptr, 0, 10, &more).empty());
  EXPECT_FALSE(more);
  EXPECT_FALSE(fs::exists(dir_));
}

TEST_F(SqliteStorage, ArchiveAndPurgeRemoveTheirIndexRows) {
  Store store(dir_);
  store.append_ok({ev(oid(100), 0, "status", "finished", "alice", 100)});
  store.append_ok({ev(oid(200), 0, "status", "finished", "bob", 9000)});
  store.append_ok({ev("old", 0, "status", "finished", "bob", 1000)});
  EXPECT_EQ(store.list_fids(nullptr, 0, 10), (std::vector<std::string>{"old", oid(200), oid(100)}));
  for (const std::string &fid : {oid(100), oid(200), std::string("old")})
    EXPECT_EQ(index_rows(dir_, fid), "1") << fid;

  ASSERT_EQ(store.archive(oid(100), nullptr).status, KODO_OK);
  EXPECT_EQ(index_rows(dir_, oid(100)), "0");
  int64_t purged = -1;
  ASSERT_EQ(store.purge(5000, purged).status, KODO_OK);
  EXPECT_EQ(purged, 2);  // "old", and the archive of oid(100)
  EXPECT_EQ(index_rows(dir_, "old"), "0");
  EXPECT_EQ(index_rows(dir_, oid(200)), "1");
  EXPECT_EQ(store.list_fids(nullptr, 0, 10), (std::vector<std::string>{oid(200)}));

  // The purged fid written again is listed again.
  store.append_ok({ev(oid(100), 0, "status", "running", "alice", 100)});
  EXPECT_EQ(index_rows(dir_, oid(100)), "1");
  EXPECT_EQ(store.list_fids(nullptr, 0, 10), (std::vector<std::string>{oid(200), oid(100)}));
}

}  // namespace
