// Tests of kodo-storage-sqlite.so through its C table, loaded with dlopen as the host does.
// Its files are also read back with the sqlite3 C API the way kodosumi reads them.
#include "sqlite_test_support.hpp"

#include <kodo/kodo_plugin.h>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace sqlite_test;  // NOLINT(google-build-using-namespace)
namespace fs = std::filesystem;
// ---------------------------------------------------------------------------------------------

TEST(SqlitePlugin, DescribesItself) {
  const kodo_plugin &p = *plugin().descriptor;
  EXPECT_EQ(p.kind, KODO_KIND_STORAGE);
  EXPECT_STREQ(p.name, "sqlite");
  EXPECT_EQ(p.capabilities,
            KODO_STORAGE_CAP_LIST | KODO_STORAGE_CAP_ARCHIVE | KODO_STORAGE_CAP_PURGE);
  ASSERT_NE(p.storage, nullptr);
  EXPECT_EQ(p.transport, nullptr);
  std::map<std::string, const kodo_option_spec *> options;
  for (size_t i = 0; i < p.option_count; ++i) options[p.options[i]->name] = p.options[i];
  ASSERT_TRUE(options.count("exec_dir"));
  EXPECT_EQ(options["exec_dir"]->type, KODO_OPTION_PATH);
  EXPECT_STREQ(options["exec_dir"]->default_value, "./data/execution");
  EXPECT_STREQ(options["exec_dir"]->env_name, "KODO_EXEC_DIR");
  ASSERT_TRUE(options.count("busy_timeout_ms"));
  EXPECT_STREQ(options["busy_timeout_ms"]->default_value, "5000");
  ASSERT_TRUE(options.count("max_open_databases"));
  EXPECT_EQ(options["max_open_databases"]->type, KODO_OPTION_INT);
  EXPECT_STREQ(options["max_open_databases"]->default_value, "256");
}

TEST(SqlitePlugin, RefusesOtherAbiVersions) {
  void *handle = dlopen(KODO_SQLITE_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(handle, nullptr);
  auto entry = reinterpret_cast<kodo_plugin_entry_fn>(dlsym(handle, KODO_ENTRY_SYMBOL));
  const kodo_plugin *descriptor = nullptr;
  uint32_t abi = 0;
  kodo_error error = KODO_ERROR_INIT;
  Outcome o = take(
      entry(KODO_ABI_VERSION + 1, KODO_ABI_VERSION + 2, nullptr, &descriptor, &abi, &error), error);
  EXPECT_EQ(o.status, KODO_ERR_ABI_MISMATCH);
  EXPECT_EQ(abi, KODO_ABI_VERSION);
  dlclose(handle);
}

TEST_F(SqliteStorage, RejectsBadOptions) {
  for (auto [name, value] :
       std::vector<std::pair<std::string, std::string>>{{"max_open_databases", "0"},
                                                        {"busy_timeout_ms", "-1"},
                                                        {"synchronous", "sometimes"},
                                                        {"append_threads", "-1"}}) {
    std::string n = name, v = value, d = dir_.string();
    kodo_option o1{sizeof(kodo_option), "exec_dir", d.c_str()};
    kodo_option o2{sizeof(kodo_option), n.c_str(), v.c_str()};
    const kodo_option *options[] = {&o1, &o2};
    kodo_storage *handle = nullptr;
    kodo_error error = KODO_ERROR_INIT;
    Outcome o = take(api().open(options, 2, nullptr, &handle, &error), error);
    EXPECT_EQ(o.status, KODO_ERR_INVALID_ARGUMENT) << name;
    EXPECT_NE(o.message.find(name), std::string::npos) << o.message;
  }
}

TEST_F(SqliteStorage, KodosumiLayoutAndTable) {
  Store store(dir_);
  const std::string fid = oid(1700000000, 1);
  store.append_ok({ev(fid, 0, "status", "starting"), ev(fid, 1, "inputs", "{\"a\": 1}"),
                   ev(fid, 2, "status", "running")});

  fs::path exec = dir_ / "alice" / fid;
  EXPECT_TRUE(fs::is_regular_file(exec / "sqlite3.db"));
  EXPECT_TRUE(fs::is_directory(exec / "in"));
  EXPECT_TRUE(fs::is_directory(exec / "out"));
  EXPECT_TRUE(fs::is_empty(exec / "in"));
  EXPECT_TRUE(fs::is_empty(exec / "out"));
  for (auto &entry : fs::directory_iterator(exec))  // no temporary file is left behind
    EXPECT_EQ(entry.path().filename().string().rfind(".sqlite3", 0), std::string::npos)
        << entry.path();

  fs::path db = exec / "sqlite3.db";
  EXPECT_EQ(query_text(db, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(query_text(db, "SELECT sql FROM sqlite_master WHERE name = 'monitor'"),
            "CREATE TABLE monitor(id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp REAL NOT "
            "NULL, kind TEXT NOT NULL, message TEXT NOT NULL)");
  // One index, ours, beside kodosumi's table (its reader does not see it).
  EXPECT_EQ(query_text(db, "SELECT group_concat(name) FROM sqlite_master WHERE type = 'index'"),
            "kodo_monitor_kind");

  std::vector<Row> rows = kodosumi_read(db);
  ASSERT_EQ(rows.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(rows[i].id, i + 1);  // id = seq + 1
    EXPECT_EQ(rows[i].timestamp, 1700000000.0 + i);
  }
  EXPECT_EQ(rows[0].kind, "status");
  EXPECT_EQ(rows[0].message, "starting");
  EXPECT_EQ(rows[1].kind, "inputs");
  EXPECT_EQ(rows[1].message, "{\"a\": 1}");

  // kodosumi's reader polls with the last id it saw.
  store.append_ok({ev(fid, 3), ev(fid, 4)});
  rows = kodosumi_read(db, 3);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].id, 4);
  EXPECT_EQ(rows[1].id, 5);
}

TEST_F(SqliteStorage, AppendIsIdempotent) {
  Store store(dir_);
  std::vector<Ev> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(ev("f1", i));
  store.append_ok(batch);
  store.append_ok(batch);  // a redelivered batch
  std::vector<Ev> overlapping;
  for (int i = 5; i < 15; ++i) overlapping.push_back(ev("f1", i));
  overlapping.push_back(ev("f1", 14));  // twice in one batch
  store.append_ok(overlapping);

  std::vector<Ev> all = store.read_all("f1");
  ASSERT_EQ(all.size(), 15u);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(all[i], ev("f1", i));
  Summary s;
  ASSERT_EQ(store.get("f1", "alice", s).status, KODO_OK);
  EXPECT_EQ(s.event_count, 15);
  EXPECT_EQ(s.last_seq, 14);
  EXPECT_EQ(kodosumi_read(db_path("f1")).size(), 15u);
}

TEST_F(SqliteStorage, ReadsAfterSeqWithKindsAndPaging) {
  Store store(dir_);
  std::vector<Ev> batch;
  const char *kinds[] = {"stdout", "stderr", "status", "debug"};
  for (int i = 0; i < 40; ++i) batch.push_back(ev("f1", i, kinds[i % 4]));
  store.append_ok(batch);

  EventPage page;
  ASSERT_EQ(store.read("f1", "alice", 9, 5, page).status, KODO_OK);
  ASSERT_EQ(page.events.size(), 5u);
  EXPECT_EQ(page.events.front().seq, 10);
  EXPECT_EQ(page.events.back().seq, 14);
  EXPECT_TRUE(page.has_more);

  ASSERT_EQ(store.read("f1", "alice", 35, 4, page).status, KODO_OK);
  ASSERT_EQ(page.events.size(), 4u);
  EXPECT_FALSE(page.has_more);  // exactly the rest

  ASSERT_EQ(store.read("f1", "alice", 39, 10, page).status, KODO_OK);
  EXPECT_TRUE(page.events.empty());
  EXPECT_FALSE(page.has_more);

  // Kinds: stderr and status only, paged by 3.
  std::vector<int64_t> seen;
  int64_t after = -1;
  int pages = 0;
  do {
    ASSERT_EQ(store.read("f1", nullptr, after, 3, page, {"stderr", "status"}).status, KODO_OK);
    for (auto &e : page.events) {
      EXPECT_TRUE(e.kind == "stderr" || e.kind == "status") << e;
      seen.push_back(e.seq);
    }
    if (!page.events.empty()) after = page.events.back().seq;
    ++pages;
  } while (page.has_more);
  ASSERT_EQ(seen.size(), 20u);
  for (size_t i = 0; i < seen.size(); ++i)
    EXPECT_EQ(seen[i], static_cast<int64_t>(i / 2 * 4 + 1 + i % 2));
  EXPECT_EQ(pages, 7);

  ASSERT_EQ(store.read("f1", "alice", -1, 100, page, {"final"}).status, KODO_OK);
  EXPECT_TRUE(page.events.empty());

  Outcome o = store.read("f1", "alice", -1, 0, page);
  EXPECT_EQ(o.status, KODO_ERR_INVALID_ARGUMENT) << o.message;
}

TEST_F(SqliteStorage, NonAsciiAndLargePayloads) {
  Store store(dir_);
  const std::string text =
      "h\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac "
      "\xf0\x9f\x9a\x80 \"quoted\" 'single' \\ \n\t";
  std::string big(1 << 20, ' ');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  big.replace(1000, text.size(), text);
  store.append_ok(
      {ev("f1", 0, "stdout", text), ev("f1", 1, "result", big), ev("f1", 2, "stdout", text)});

  std::vector<Ev> all = store.read_all("f1");
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].payload, text);
  EXPECT_EQ(all[1].payload.size(), big.size());
  EXPECT_TRUE(all[1].payload == big);
  EXPECT_EQ(all[2].payload, text);

  std::vector<Row> rows = kodosumi_read(db_path("f1"));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].message, text);
  EXPECT_TRUE(rows[1].message == big);

  // An empty payload, also given as NULL with length 0, is stored as '' (message is NOT NULL).
  Ev empty = ev("f1", 3);
  empty.payload.clear();
  store.append_ok({empty});
  kodo_event null_payload{sizeof(kodo_event), "f1", "alice", 4, 1.0, "stdout", nullptr, 0};
  const kodo_event *pointers[] = {&null_payload};
  Outcome o = store.append_views(pointers, 1);
  ASSERT_EQ(o.status, KODO_OK) << o.message;
  all = store.read_all("f1", "alice", 2);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].payload, "");
  EXPECT_EQ(all[1].payload, "");
}

TEST_F(SqliteStorage, ExecutionSummary) {
  Store store(dir_);
  const std::string fid = oid(1700000000, 7);
  store.append_ok(
      {ev(fid, 0, "status", "starting", "alice", 100.5), ev(fid, 1, "inputs", "{}", "alice", 101),
       ev(fid, 2, "status", "running", "alice", 102), ev(fid, 3, "stdout", "x", "alice", 103)});
  // Later events arrive out of order; the newest status by seq wins.
  store.append_ok({ev(fid, 5, "status", "finished", "alice", 105)});
  store.append_ok(
      {ev(fid, 4, "final", "{}", "alice", 104), ev(fid, 2, "status", "running", "alice", 102)});

  Summary s;
  Outcome o = store.get(fid, "alice", s);
  ASSERT_EQ(o.status, KODO_OK) << o.message;
  EXPECT_EQ(s.fid, fid);
  EXPECT_EQ(s.username, "alice");
  EXPECT_EQ(s.status, "finished");
  EXPECT_EQ(s.started_at, 100.5);
  EXPECT_EQ(s.updated_at, 105);
  EXPECT_EQ(s.event_count, 6);
  EXPECT_EQ(s.last_seq, 5);

  Summary by_fid;  // no username: found by scanning the user folders
  ASSERT_EQ(store.get(fid, nullptr, by_fid).status, KODO_OK);
  EXPECT_EQ(by_fid.username, "alice");
  EXPECT_EQ(by_fid.event_count, 6);

  // A fresh handle has no cached owner and must scan.
  Store other(dir_);
  ASSERT_EQ(other.get(fid, nullptr, by_fid).status, KODO_OK);
  EXPECT_EQ(by_fid.status, "finished");

  o = store.get("nope", nullptr, s);
  EXPECT_EQ(o.status, KODO_ERR_NOT_FOUND);
  EXPECT_NE(o.message.find("nope"), std::string::npos) << o.message;
  o = store.get(fid, "bob", s);
  EXPECT_EQ(o.status, KODO_ERR_NOT_FOUND);
  EventPage page;
  o = store.read("nope", "alice", -1, 10, page);
  EXPECT_EQ(o.status, KODO_ERR_NOT_FOUND);
  EXPECT_NE(o.message.find("nope"), std::string::npos) << o.message;
  EXPECT_FALSE(fs::exists(dir_ / "alice" / "nope"));  // reading never creates
}

// The summary counts a tail of rows on read and folds it in now and then; gaps filled later
// make it recount. Whatever the order, it must equal what the rows say.
TEST_F(SqliteStorage, SummaryMatchesTheRowsAcrossFoldsAndGaps) {
  Store store(dir_);
  const std::string fid = "long";
  auto expected = [&] {
    std::vector<Row> rows = kodosumi_read(db_path(fid));
    Summary s;
    s.event_count = static_cast<int64_t>(rows.size());
    s.started_at = rows.front().timestamp;
    s.updated_at = rows.back().timestamp;
    s.last_seq = rows.back().id - 1;
    for (auto &r : rows)
      if (r.kind == "status") s.status = r.message;
    return s;
  };
  auto check = [&](const char *when) {
    Summary got, want = expected();
    ASSERT_EQ(store.get(fid, "alice", got).status, KODO_OK);
    EXPECT_EQ(got.event_count, want.event_count) << when;
    EXPECT_EQ(got.last_seq, want.last_seq) << when;
    EXPECT_EQ(got.status, want.status) << when;
    EXPECT_EQ(got.started_at, want.started_at) << when;
    EXPECT_EQ(got.updated_at, want.updated_at) << when;
  };
  auto event = [&](int64_t seq) {
    return seq % 700 == 3 ? ev(fid, seq, "status", "s" + std::to_string(seq)) : ev(fid, seq);
  };
  // 5000 events in batches of 100, holding back seqs 10..19 and 2000..2049.
  for (int64_t start = 0; start < 5000; start += 100) {
    std::vector<Ev> batch;
    for (int64_t seq = start; seq < start + 100; ++seq)
      if (!(seq >= 10 && seq < 20) && !(seq >= 2000 && seq < 2050)) batch.push_back(event(seq));
    store.append_ok(batch);
    if (start % 1000 == 0) check("while appending");
  }
  check("after appending");
  // The held-back events arrive late, below the folded line, one with a newer status than
  // the rows around it but older than the newest.
  std::vector<Ev> late;
  for (int64_t seq = 2000; seq < 2050; ++seq) late.push_back(event(seq));
  store.append_ok(late);
  check("after the first gap");
  store.append_ok({event(10), event(11)});
  store.append_ok({event(12), event(10)});  // partly a redelivery
  check("after part of the second gap");
  std::vector<Ev> rest;
  for (int64_t seq = 10; seq < 20; ++seq) rest.push_back(event(seq));
  store.append_ok(rest);
  check("after all gaps");
  // A status at the very end, then a redelivery of everything.
  store.append_ok({ev(fid, 5000, "status", "finished")});
  check("after the final status");
  std::vector<Ev> all;
  for (int64_t seq = 0; seq <= 5000; ++seq)
    all.push_back(seq == 5000 ? ev(fid, 5000, "status", "finished") : event(seq));
  store.append_ok(all);
  check("after a full redelivery");
  Summary s;
  ASSERT_EQ(store.get(fid, "alice", s).status, KODO_OK);
  EXPECT_EQ(s.event_count, 5001);
  EXPECT_EQ(s.status, "finished");
}

TEST_F(SqliteStorage, RejectsBadNamesBeforeTouchingPaths) {
  Store store(dir_);
  const std::string long_name(65, 'a');
  for (const std::string &bad :
       {std::string("../x"), std::string(""), std::string(".hidden"), std::string(".."),
        std::string("a/b"), std::string("a b"), std::string("caf\xc3\xa9"), long_name}) {
    Outcome o = store.append({ev("good", 0), ev(bad, 0)});
    EXPECT_EQ(o.status, KODO_ERR_INVALID_ARGUMENT) << bad;
    if (!bad.empty() && bad.find('\xc3') == std::string::npos) {
      EXPECT_NE(o.message.find("\"" + bad + "\""), std::string::npos) << o.message;
    }
    EXPECT_NE(o.message.find("fid"), std::string::npos) << o.message;

    o = store.append({ev("good", 0, "stdout", "x", bad)});
    EXPECT_EQ(o.status, KODO_ERR_INVALID_ARGUMENT) << bad;
    EXPECT_NE(o.message.find("username"), std::string::npos) << o.message;

    EventPage page;
    EXPECT_EQ(store.read(bad, nullptr, -1, 10, page).status, KODO_ERR_INVALID_ARGUMENT);
    Summary s;
    EXPECT_EQ(store.get(bad, nullptr, s).status, KODO_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(store.archive(bad, nullptr).status, KODO_ERR_INVALID_ARGUMENT);
  }
  // A 64-byte name is fine.
  store.append_ok({ev(std::string(64, 'b'), 0)});

  Outcome o = store.append({ev("good", 0), ev("good", 1, "")});
  EXPECT_EQ(o.status, KODO_ERR_INVALID_ARGUMENT);
  EXPECT_NE(o.message.find("kind"), std::string::npos) << o.message;
  o = store.append({ev("good", -1)});
  EXPECT_EQ(o.status, KODO_ERR_INVALID_ARGUMENT);

  // Nothing of a rejected batch was written, not even its valid events.
  EXPECT_FALSE(fs::exists(dir_ / "alice" / "good"));
  EXPECT_FALSE(fs::exists(root_ / "x"));
}

TEST_F(SqliteStorage, ConcurrentWritersAndReaders) {
  Store store(dir_);
  const int executions = 4, events = 3000, batch = 100;
  std::atomic<bool> writing{true};
  std::atomic<int> errors{0};

  std::thread writer([&] {
    for (int start = 0; start < events; start += batch / executions) {
      std::vector<Ev> b;
      for (int i = start; i < start + batch / executions; ++i)
        for (int x = 0; x < executions; ++x)
          b.push_back(ev("f" + std::to_string(x), i, "stdout", "p" + std::to_string(i)));
      Outcome o = store.append(b);
      if (o.status != KODO_OK) {
        ADD_FAILURE() << o.message;
        ++errors;
      }
    }
    writing = false;
  });

  auto reader = [&](int x) {
    const std::string fid = "f" + std::to_string(x);
    int64_t last = -1;
    while (last < events - 1) {
      const bool written = !writing;  // before the read: all events are in by then
      EventPage page;
      Outcome o = store.read(fid, x % 2 ? "alice" : nullptr, last, 64, page);
      if (o.status == KODO_ERR_NOT_FOUND) continue;  // not written yet
      if (o.status != KODO_OK) {
        ADD_FAILURE() << o.message;
        ++errors;
        return;
      }
      for (auto &e : page.events) {
        if (e.seq != last + 1 || e.payload != "p" + std::to_string(e.seq)) {
          ADD_FAILURE() << "out of order: " << e << " after " << last;
          ++errors;
          return;
        }
        last = e.seq;
      }
      Summary s;
      if (store.get(fid, "alice", s).status == KODO_OK && s.last_seq < last) {
        ADD_FAILURE() << "summary behind the rows";
        ++errors;
      }
      if (written && page.events.empty() && last < events - 1) {
        ADD_FAILURE() << fid << " stopped at " << last;
        ++errors;
        return;
      }
    }
  };
  std::vector<std::thread> readers;
  // Three readers per execution: more at once than it keeps idle connections for.
  for (int x = 0; x < executions; ++x)
    for (int r = 0; r < 3; ++r) readers.emplace_back(reader, x);
  std::thread lister([&] {
    while (writing) {
      ExecutionPage page;
      Outcome o = store.list(nullptr, 0, 10, page);
      if (o.status != KODO_OK) {
        ADD_FAILURE() << o.message;
        ++errors;
      }
    }
  });
  writer.join();
  for (auto &t : readers) t.join();
  lister.join();
  EXPECT_EQ(errors.load(), 0);
  for (int x = 0; x < executions; ++x) {
    Summary s;
    ASSERT_EQ(store.get("f" + std::to_string(x), "alice", s).status, KODO_OK);
    EXPECT_EQ(s.event_count, events);
  }
}

TEST_F(SqliteStorage, ManyExecutionsThroughASmallCache) {
  Store store(dir_, {{"max_open_databases", "3"}});
  const int threads = 4, per_thread = 6, rounds = 20;
  std::vector<std::thread> workers;
  std::atomic<int> errors{0};
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      for (int r = 0; r < rounds; ++r)
        for (int x = 0; x < per_thread; ++x) {
          std::string fid = "t" + std::to_string(t) + "x" + std::to_string(x);
          std::vector<Ev> b;
          for (int i = 0; i < 5; ++i) b.push_back(ev(fid, r * 5 + i));
          if (store.append(b).status != KODO_OK) ++errors;
          EventPage page;
          if (store.read(fid, "alice", r * 5 - 1, 100, page).status != KODO_OK ||
              page.events.size() != 5)
            ++errors;
        }
    });
  for (auto &w : workers) w.join();
  EXPECT_EQ(errors.load(), 0);
  for (int t = 0; t < threads; ++t)
    for (int x = 0; x < per_thread; ++x) {
      std::string fid = "t" + std::to_string(t) + "x" + std::to_string(x);
      EXPECT_EQ(store.read_all(fid).size(), static_cast<size_t>(rounds * 5)) << fid;
      EXPECT_EQ(kodosumi_read(db_path(fid)).size(), static_cast<size_t>(rounds * 5)) << fid;
    }
}

// Archive and purge take executions away while a writer, readers and a tiny cache (forcing
// evictions) work on them. Nothing may fail unexpectedly and no event may be lost: those of
// the archived execution end up in its archives or its new database.
TEST_F(SqliteStorage, ArchiveAndPurgeRaceWithWritersAndReaders) {
  Store store(dir_, {{"max_open_databases", "2"}});
  const std::vector<std::string> fids{"A", "B", "C"};
  const int rounds = 200, per_round = 5;
  std::atomic<bool> writing{true};
  std::atomic<int> errors{0}, archived{0};
  auto fail = [&](const std::string &what, const Outcome &o) {
    ADD_FAILURE() << what << ": " << o.message;
    ++errors;
  };

  std::thread writer([&] {
    for (int r = 0; r < rounds; ++r) {
      std::vector<Ev> batch;
      for (auto &fid : fids)
        for (int k = 0; k < per_round; ++k) batch.push_back(ev(fid, r * per_round + k));
      Outcome o = store.append(batch);
      if (o.status != KODO_OK) fail("append", o);
    }
    writing = false;
  });
  // Three readers: archive and purge wait for reads of one execution running at once.
  auto read_all_the_time = [&] {
    while (writing)
      for (auto &fid : fids) {
        EventPage page;
        Outcome o = store.read(fid, fid == "B" ? "alice" : nullptr, -1, 50, page);
        if (o.status != KODO_OK && o.status != KODO_ERR_NOT_FOUND) fail("read " + fid, o);
        Summary s;
        o = store.get(fid, nullptr, s);
        if (o.status != KODO_OK && o.status != KODO_ERR_NOT_FOUND) fail("get " + fid, o);
      }
  };
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) readers.emplace_back(read_all_the_time);
  std::thread archiver([&] {
    while (writing) {
      Outcome o = store.archive("A", "alice");
      if (o.status == KODO_OK)
        ++archived;
      else if (o.status != KODO_ERR_NOT_FOUND)
        fail("archive", o);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  std::thread maintainer([&] {
    while (writing) {
      int64_t purged = -1;
      Outcome o = store.purge(1.0, purged);  // older than every event: removes nothing
      if (o.status != KODO_OK || purged != 0) fail("purge", o);
      ExecutionPage page;
      o = store.list(nullptr, 0, 10, page);
      if (o.status != KODO_OK) fail("list", o);
    }
  });
  writer.join();
  for (auto &t : readers) t.join();
  archiver.join();
  maintainer.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(archived.load(), 0);

  for (const char *fid : {"B", "C"})
    EXPECT_EQ(store.read_all(fid).size(), static_cast<size_t>(rounds * per_round)) << fid;
  std::set<int64_t> ids;
  size_t rows = 0;
  for (auto &entry : fs::directory_iterator(dir_ / "alice" / "A")) {
    std::string name = entry.path().filename().string();
    if (name.rfind("sqlite3.db", 0) != 0 || name.find('-') != std::string::npos) continue;
    for (auto &row : kodosumi_read(entry.path())) {
      ids.insert(row.id);
      ++rows;
    }
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(rounds * per_round));
  EXPECT_EQ(rows, ids.size());  // and nothing twice
}

// kodosumi's panel appends rows to `monitor` itself ("actor not found", then status error)
// when it thinks a runner is gone. A later event of kodo's whose id (seq + 1) such a row took
// must not be dropped as a redelivery without a word: it is refused for good, naming both.
TEST_F(SqliteStorage, RowIdTakenByAnotherWriterIsRefusedLoudly) {
  Store store(dir_);
  store.append_ok({ev("run", 0), ev("run", 1)});
  sqlite3 *panel = nullptr;
  ASSERT_EQ(sqlite3_open(db_path("run").c_str(), &panel), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(panel,
                         "INSERT INTO monitor (timestamp, kind, message) "
                         "VALUES (1700000099.5, 'error', 'actor not found')",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(panel);

  Outcome o = store.append({ev("run", 2, "status", "finished")});
  EXPECT_EQ(o.status, KODO_ERR_INVALID_ARGUMENT) << o.message;
  EXPECT_FALSE(o.retryable);
  EXPECT_NE(o.message.find("row id 3"), std::string::npos) << o.message;
  EXPECT_NE(o.message.find("actor not found"), std::string::npos) << o.message;
  EXPECT_NE(o.message.find("seq 2"), std::string::npos) << o.message;
  // A redelivery of what kodo stored is still taken quietly.
  store.append_ok({ev("run", 0), ev("run", 1)});
  store.append_ok({ev("run", 3)});
}

TEST_F(SqliteStorage, BusyDatabaseIsRetryableAndOtherExecutionsCommit) {
  Store store(dir_, {{"busy_timeout_ms", "50"}});
  store.append_ok({ev("locked", 0), ev("free", 0)});

  sqlite3 *other = nullptr;  // another process holding the write lock
  ASSERT_EQ(sqlite3_open(db_path("locked").c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);

  std::vector<Ev> batch{ev("locked", 1), ev("free", 1), ev("locked", 2), ev("free", 2)};
  Outcome o = store.append(batch);
  EXPECT_EQ(o.status, KODO_ERR_UNAVAILABLE) << o.message;
  EXPECT_TRUE(o.retryable);
  EXPECT_NE(o.message.find(db_path("locked").string()), std::string::npos) << o.message;
  EXPECT_EQ(store.read_all("free").size(), 3u);    // the other execution committed
  EXPECT_EQ(store.read_all("locked").size(), 1u);  // all or nothing: none of these two

  sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  store.append_ok(batch);  // the caller's retry
  EXPECT_EQ(store.read_all("free").size(), 3u);
  EXPECT_EQ(store.read_all("locked").size(), 3u);
}

TEST_F(SqliteStorage, ArchiveHidesAnExecution) {
  Store store(dir_);
  const std::string keep = oid(100), gone = oid(200);
  std::vector<Ev> batch;
  for (int i = 0; i < 50; ++i) batch.push_back(ev(gone, i));
  store.append_ok(batch);
  store.append_ok({ev(keep, 0)});
  EventPage page;
  ASSERT_EQ(store.read(gone, "alice", -1, 10, page).status, KODO_OK);  // opens a reader too

  Outcome o = store.archive(gone, nullptr);
  ASSERT_EQ(o.status, KODO_OK) << o.message;
  fs::path exec = dir_ / "alice" / gone;
  EXPECT_FALSE(fs::exists(exec / "sqlite3.db"));
  EXPECT_FALSE(fs::exists(exec / "sqlite3.db-wal"));
  EXPECT_TRUE(fs::is_regular_file(exec / "sqlite3.db.archive"));
  // Everything is in the archive file itself, readable as kodosumi would.
  EXPECT_EQ(kodosumi_read(exec / "sqlite3.db.archive").size(), 50u);

  EXPECT_EQ(store.read(gone, "alice", -1, 10, page).status, KODO_ERR_NOT_FOUND);
  EXPECT_EQ(store.read(gone, nullptr, -1, 10, page).status, KODO_ERR_NOT_FOUND);
  Summary s;
  EXPECT_EQ(store.get(gone, "alice", s).status, KODO_ERR_NOT_FOUND);
  EXPECT_EQ(store.list_fids(nullptr, 0, 10), (std::vector<std::string>{keep}));
  o = store.archive(gone, "alice");
  EXPECT_EQ(o.status, KODO_ERR_NOT_FOUND);
  EXPECT_NE(o.message.find(gone), std::string::npos) << o.message;
  EXPECT_EQ(store.archive("never", nullptr).status, KODO_ERR_NOT_FOUND);

  // The same fid written again is a new execution; archiving it keeps the first archive.
  store.append_ok({ev(gone, 0)});
  ASSERT_EQ(store.archive(gone, "alice").status, KODO_OK);
  EXPECT_TRUE(fs::is_regular_file(exec / "sqlite3.db.archive.1"));
  EXPECT_EQ(kodosumi_read(exec / "sqlite3.db.archive").size(), 50u);
}

TEST_F(SqliteStorage, PurgeRemovesOldExecutions) {
  Store store(dir_);
  store.append_ok({ev("old", 0, "status", "finished", "alice", 1000)});
  store.append_ok({ev("old-archived", 0, "status", "finished", "bob", 2000)});
  store.append_ok({ev("recent", 0, "status", "running", "alice", 1000),
                   ev("recent", 1, "stdout", "x", "alice", 9000)});
  store.append_ok({ev("new-archived", 0, "status", "finished", "bob", 9000)});
  ASSERT_EQ(store.archive("old-archived", "bob").status, KODO_OK);
  ASSERT_EQ(store.archive("new-archived", "bob").status, KODO_OK);
  EventPage page;
  ASSERT_EQ(store.read("old", "alice", -1, 10, page).status, KODO_OK);  // cached connections

  int64_t purged = -1;
  Outcome o = store.purge(5000, purged);
  ASSERT_EQ(o.status, KODO_OK) << o.message;
  EXPECT_EQ(purged, 2);
  EXPECT_FALSE(fs::exists(dir_ / "alice" / "old"));
  EXPECT_FALSE(fs::exists(dir_ / "bob" / "old-archived"));
  EXPECT_TRUE(fs::exists(dir_ / "alice" / "recent" / "sqlite3.db"));
  EXPECT_TRUE(fs::exists(dir_ / "bob" / "new-archived" / "sqlite3.db.archive"));
  EXPECT_EQ(store.read("old", "alice", -1, 10, page).status, KODO_ERR_NOT_FOUND);
  EXPECT_EQ(store.list_fids(nullptr, 0, 10), (std::vector<std::string>{"recent"}));

  ASSERT_EQ(store.purge(5000, purged).status, KODO_OK);
  EXPECT_EQ(purged, 0);
  // A purged fid can be written again.
  store.append_ok({ev("old", 0)});
  EXPECT_EQ(store.read_all("old").size(), 1u);
  ASSERT_EQ(store.purge(1e12, purged).status, KODO_OK);
  EXPECT_EQ(purged, 3);
}

TEST_F(SqliteStorage, ReadsAndExtendsADatabaseKodosumiWrote) {
  fs::path exec = dir_ / "alice" / "kodosumi-made";
  fs::create_directories(exec);
  sqlite3 *c = nullptr;
  ASSERT_EQ(sqlite3_open((exec / "sqlite3.db").c_str(), &c), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(c,
                         "PRAGMA journal_mode=wal;"
                         "CREATE TABLE monitor(id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp "
                         "REAL NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);"
                         "INSERT INTO monitor(timestamp, kind, message) VALUES "
                         "(10, 'status', 'starting'), (11, 'inputs', '{}'), "
                         "(12, 'status', 'running');",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(c);

  Store store(dir_);
  Summary s;
  ASSERT_EQ(store.get("kodosumi-made", nullptr, s).status, KODO_OK);
  EXPECT_EQ(s.event_count, 3);
  EXPECT_EQ(s.last_seq, 2);
  EXPECT_EQ(s.status, "running");
  EXPECT_EQ(s.started_at, 10);
  EXPECT_EQ(s.updated_at, 12);
  std::vector<Ev> all = store.read_all("kodosumi-made");
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].seq, 0);
  EXPECT_EQ(all[2].payload, "running");

  store.append_ok({ev("kodosumi-made", 2, "status", "running", "alice", 12),
                   ev("kodosumi-made", 3, "status", "finished", "alice", 13)});
  ASSERT_EQ(store.get("kodosumi-made", "alice", s).status, KODO_OK);
  EXPECT_EQ(s.event_count, 4);
  EXPECT_EQ(s.status, "finished");
  EXPECT_EQ(s.started_at, 10);
  EXPECT_EQ(s.updated_at, 13);

  // kodosumi appends again behind our back: the summary notices it is stale.
  ASSERT_EQ(sqlite3_open((exec / "sqlite3.db").c_str(), &c), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(
                c, "INSERT INTO monitor(timestamp, kind, message) VALUES (14, 'status', 'error')",
                nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(c);
  ASSERT_EQ(store.get("kodosumi-made", "alice", s).status, KODO_OK);
  EXPECT_EQ(s.event_count, 5);
  EXPECT_EQ(s.status, "error");
  EXPECT_EQ(s.last_seq, 4);
}

// Prints the append rate for the hot path's shape: batches of 1000 events of ~100 bytes
// spread over 100 executions, 10,000 events each; once on the calling thread alone and once
// with the default helper threads. Printed, never asserted. CPU time is the process's, so
// that other load on the machine does not count.
void append_throughput(const fs::path &dir, const std::string &threads) {
  const int executions = 100, per_execution = 10000, batch_size = 1000;
  const int per_batch = batch_size / executions;
  std::map<std::string, std::string> options;
  if (!threads.empty()) options["append_threads"] = threads;
  Store store(dir, options);
  std::vector<std::string> fids;
  for (int x = 0; x < executions; ++x) fids.push_back(oid(1700000000 + x, x));
  const std::string payload =
      "{\"line\": \"" + std::string(80, 'x') + "\", \"n\": 12345}";  // ~100 bytes

  std::vector<Ev> batch(batch_size);
  std::vector<kodo_event> views(batch_size);
  std::vector<const kodo_event *> pointers(batch_size);
  std::chrono::steady_clock::duration spent{};
  double cpu_spent = 0;
  int64_t total = 0;
  for (int round = 0; round < per_execution / per_batch; ++round) {
    for (int x = 0, i = 0; x < executions; ++x)
      for (int k = 0; k < per_batch; ++k, ++i) {
        batch[i] =
            Ev{fids[x], "bench", round * per_batch + k, 1700000000.0 + round, "stdout", payload};
        const Ev &e = batch[i];
        views[i] =
            kodo_event{sizeof(kodo_event), e.fid.c_str(),  e.username.c_str(), e.seq,
                       e.timestamp,        e.kind.c_str(), e.payload.c_str(),  e.payload.size()};
        pointers[i] = &views[i];
      }
    auto start = std::chrono::steady_clock::now();  // time the appends only
    double cpu_start = process_cpu_seconds();
    Outcome o = store.append_views(pointers.data(), pointers.size());
    cpu_spent += process_cpu_seconds() - cpu_start;
    spent += std::chrono::steady_clock::now() - start;
    ASSERT_EQ(o.status, KODO_OK) << o.message;
    total += batch_size;
  }
  double seconds = std::chrono::duration<double>(spent).count();
  std::printf(
      "[ throughput ] append (append_threads=%s): %lld events (%d executions x %d, "
      "batches of %d) in %.2f s = %.0f events/s; CPU %.2f s = %.0f events per CPU-second\n",
      threads.empty() ? "default" : threads.c_str(), static_cast<long long>(total), executions,
      per_execution, batch_size, seconds, static_cast<double>(total) / seconds, cpu_spent,
      static_cast<double>(total) / cpu_spent);

  auto start = std::chrono::steady_clock::now();
  int64_t read = 0;
  for (auto &fid : fids) read += static_cast<int64_t>(store.read_all(fid, "bench").size());
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ throughput ] read_events (pages of 1000): %lld events in %.2f s = %.0f events/s\n",
              static_cast<long long>(read), seconds, static_cast<double>(read) / seconds);
  EXPECT_EQ(read, total);
}

TEST_F(SqliteStorage, AppendThroughput) {
  append_throughput(dir_ / "one-thread", "1");
  append_throughput(dir_ / "default", "");
}

}  // namespace
