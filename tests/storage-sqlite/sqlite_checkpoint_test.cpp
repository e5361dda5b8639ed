// Tests of the SQLite storage's WAL checkpoints: commits do not checkpoint, a background
// thread does once a WAL passes checkpoint_pages, and a writer whose WAL reached
// checkpoint_inline_pages does it itself. Sizes are read from the -wal files; nothing is timed
// (conditions are waited for with a generous deadline).
#include "sqlite_test_support.hpp"

#include <kodo/kodo_plugin.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace sqlite_test;  // NOLINT(google-build-using-namespace)
namespace fs = std::filesystem;

// A WAL file: a 32-byte header, then frames of a 24-byte header and a page (4096 bytes here).
constexpr uintmax_t kFrame = 4096 + 24;
uintmax_t wal_frames_limit(uintmax_t frames) {
  return 32 + frames * kFrame;
}

class SqliteCheckpoint : public SqliteStorage {
 protected:
  uintmax_t wal_size(const std::string &fid) const {
    std::error_code ec;
    const uintmax_t size = fs::file_size(db_path(fid).string() + "-wal", ec);
    return ec ? 0 : size;
  }
  // A batch of `count` events of about 1 KB for each of fids, from seq `from` on.
  static std::vector<Ev> batch(const std::vector<std::string> &fids, int64_t from, int count) {
    std::vector<Ev> out;
    for (const auto &fid : fids)
      for (int64_t seq = from; seq < from + count; ++seq)
        out.push_back(ev(fid, seq, "stdout", payload(fid, seq)));
    return out;
  }
  static std::string payload(const std::string &fid, int64_t seq) {
    std::string p = fid + "#" + std::to_string(seq) + " ";
    p.resize(1000, static_cast<char>('a' + seq % 26));
    return p;
  }
  // Every event of fid was stored once, in order, with its payload.
  void expect_all(Store &store, const std::string &fid, int64_t events) {
    std::vector<Ev> got = store.read_all(fid);
    ASSERT_EQ(got.size(), static_cast<size_t>(events)) << fid;
    for (int64_t seq = 0; seq < events; ++seq) {
      ASSERT_EQ(got[static_cast<size_t>(seq)].seq, seq) << fid;
      ASSERT_EQ(got[static_cast<size_t>(seq)].payload, payload(fid, seq)) << fid << "#" << seq;
    }
  }
};

using Clock = std::chrono::steady_clock;
constexpr auto kDeadline = std::chrono::seconds(120);

TEST(SqlitePlugin, DescribesItsCheckpointOptions) {
  const kodo_plugin &p = *plugin().descriptor;
  std::map<std::string, const kodo_option_spec *> options;
  for (size_t i = 0; i < p.option_count; ++i) options[p.options[i]->name] = p.options[i];
  ASSERT_TRUE(options.count("checkpoint_pages"));
  EXPECT_EQ(options["checkpoint_pages"]->type, KODO_OPTION_INT);
  EXPECT_STREQ(options["checkpoint_pages"]->default_value, "1000");  // SQLite's own default
  ASSERT_TRUE(options.count("checkpoint_inline_pages"));
  EXPECT_EQ(options["checkpoint_inline_pages"]->type, KODO_OPTION_INT);
  EXPECT_STREQ(options["checkpoint_inline_pages"]->default_value, "0");
}

TEST_F(SqliteCheckpoint, RejectsBadPageCounts) {
  for (auto [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"checkpoint_pages", "0"},
           {"checkpoint_pages", "-5"},
           {"checkpoint_pages", "2147483648"},
           {"checkpoint_inline_pages", "-1"},
           {"checkpoint_inline_pages", "99999999999"}}) {
    try {
      Store store(dir_, {{name, value}});
      ADD_FAILURE() << name << "=" << value << " was accepted";
    } catch (const std::runtime_error &err) {
      const std::string message = err.what();
      EXPECT_NE(message.find("option " + name + " must be"), std::string::npos) << message;
      EXPECT_NE(message.find("got " + value), std::string::npos) << message;
    }
  }
}

// A commit does not checkpoint: with both thresholds out of reach, a WAL passes SQLite's own
// automatic checkpoint (1000 pages), which would have made it start over.
TEST_F(SqliteCheckpoint, CommitsDoNotCheckpoint) {
  Store store(dir_, {{"checkpoint_pages", "1000000"}, {"checkpoint_inline_pages", "1000000"}});
  const int per_round = 20, rounds = 250;  // about 6 pages a round: 1,500 in all
  for (int r = 0; r < rounds; ++r) store.append_ok(batch({"n"}, int64_t{r} * per_round, per_round));
  EXPECT_GT(wal_size("n"), wal_frames_limit(1200));
  expect_all(store, "n", int64_t{rounds} * per_round);
}

// Appends to four executions with the writers' own checkpoint out of reach: only the
// background thread can keep the WALs short. A WAL starts over (and is cut back to twice the
// threshold) at the first commit after a checkpoint that reached its end; under back-to-back
// commits only the checkpointer's second step, holding the writer, gets there. So: many
// rounds to all four (without checkpoints each WAL would pass 30 times the threshold), then
// commits to each in turn, back to back, until its WAL is short.
TEST_F(SqliteCheckpoint, BackgroundThreadKeepsEveryWalShort) {
  const int threshold = 32;
  Store store(dir_, {{"checkpoint_pages", std::to_string(threshold)},
                     {"checkpoint_inline_pages", "1000000"}});
  const std::vector<std::string> fids{"w1", "w2", "w3", "w4"};
  const int per_round = 20, rounds = 160;  // 20 events of 1 KB: about 6 pages a round
  const uintmax_t bound = wal_frames_limit(uintmax_t{4} * threshold);
  std::map<std::string, int64_t> stored;
  for (int r = 0; r < rounds; ++r) {
    store.append_ok(batch(fids, int64_t{r} * per_round, per_round));
    for (const auto &fid : fids) stored[fid] += per_round;
  }
  const auto start = Clock::now();
  for (const auto &fid : fids) {
    while (wal_size(fid) > bound && Clock::now() - start < kDeadline) {
      store.append_ok(batch({fid}, stored[fid], per_round));
      stored[fid] += per_round;
    }
    EXPECT_LE(wal_size(fid), bound) << fid;
  }
  for (const auto &fid : fids) expect_all(store, fid, stored[fid]);
}

// The writer's own checkpoint: with the background thread never asked (its threshold out of
// reach), a writer checkpoints at checkpoint_inline_pages, after the commit that gets there.
// No other connection reads, so each checkpoint completes and the WAL starts over at the
// next commit: its file never holds much more than that many pages.
TEST_F(SqliteCheckpoint, WriterCheckpointsItselfAtTheInlineLimit) {
  const int limit = 24;
  Store store(
      dir_, {{"checkpoint_pages", "1000000"}, {"checkpoint_inline_pages", std::to_string(limit)}});
  const std::vector<std::string> fids{"i1", "i2"};
  const int per_round = 20, rounds = 100;  // about 6 pages a round, 25 times the limit
  const uintmax_t bound = wal_frames_limit(uintmax_t{2} * limit);
  for (int r = 0; r < rounds; ++r) {
    store.append_ok(batch(fids, int64_t{r} * per_round, per_round));
    for (const auto &fid : fids) ASSERT_LE(wal_size(fid), bound) << fid << " after round " << r;
  }
  for (const auto &fid : fids) expect_all(store, fid, int64_t{rounds} * per_round);
}

// Appends on several threads, reads beside them, and checkpoints after every few pages:
// every event is stored exactly once, seen so by our reads and by kodosumi's.
TEST_F(SqliteCheckpoint, AppendsDuringCheckpointsLoseNothing) {
  const int threads = 4, per_thread = 3, rounds = 60, per_round = 8;
  std::atomic<int> errors{0};
  std::atomic<bool> writing{true};
  auto fid_of = [](int t, int x) { return "c" + std::to_string(t) + "x" + std::to_string(x); };
  {
    Store store(dir_, {{"checkpoint_pages", "4"}, {"checkpoint_inline_pages", "64"}});
    std::vector<std::thread> writers;
    writers.reserve(threads);
    for (int t = 0; t < threads; ++t)
      writers.emplace_back([&, t] {
        std::vector<std::string> mine;
        mine.reserve(per_thread);
        for (int x = 0; x < per_thread; ++x) mine.push_back(fid_of(t, x));
        for (int r = 0; r < rounds; ++r) {
          Outcome o = store.append(batch(mine, int64_t{r} * per_round, per_round));
          if (o.status != KODO_OK) {
            ADD_FAILURE() << o.message;
            ++errors;
          }
        }
      });
    // Readers use the connections the checkpointer borrows.
    std::thread reader([&] {
      while (writing)
        for (int t = 0; t < threads; ++t) {
          EventPage page;
          Outcome o = store.read(fid_of(t, 0), "alice", -1, 20, page);
          if (o.status != KODO_OK && o.status != KODO_ERR_NOT_FOUND) {
            ADD_FAILURE() << o.message;
            ++errors;
          }
        }
    });
    for (auto &w : writers) w.join();
    writing = false;
    reader.join();
    EXPECT_EQ(errors.load(), 0);
    for (int t = 0; t < threads; ++t)
      for (int x = 0; x < per_thread; ++x)
        expect_all(store, fid_of(t, x), int64_t{rounds} * per_round);
  }
  for (int t = 0; t < threads; ++t)
    for (int x = 0; x < per_thread; ++x) {
      std::vector<Row> rows = kodosumi_read(db_path(fid_of(t, x)));
      ASSERT_EQ(rows.size(), static_cast<size_t>(rounds * per_round));
      for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i].id, static_cast<int64_t>(i) + 1);
    }
}

// Archive folds the WAL with a TRUNCATE checkpoint, which fails while another checkpoint of
// the database runs; the background checkpoints must wait for it, not make it fail.
TEST_F(SqliteCheckpoint, ArchiveBesideBackgroundCheckpoints) {
  Store store(dir_, {{"checkpoint_pages", "2"}});
  const std::vector<std::string> fids{"A", "B"};
  const int rounds = 150, per_round = 6;
  std::atomic<bool> writing{true};
  std::atomic<int> archived{0}, errors{0};
  std::thread writer([&] {
    for (int r = 0; r < rounds; ++r) {
      Outcome o = store.append(batch(fids, int64_t{r} * per_round, per_round));
      if (o.status != KODO_OK) {
        ADD_FAILURE() << "append: " << o.message;
        ++errors;
      }
    }
    writing = false;
  });
  std::thread archiver([&] {
    while (writing) {
      Outcome o = store.archive("A", "alice");
      if (o.status == KODO_OK) {
        ++archived;
      } else if (o.status != KODO_ERR_NOT_FOUND) {
        ADD_FAILURE() << "archive: " << o.message;
        ++errors;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  writer.join();
  archiver.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(archived.load(), 0);
  expect_all(store, "B", int64_t{rounds} * per_round);
  std::map<int64_t, int> seen;  // A's rows over its archives and its live database
  for (auto &entry : fs::directory_iterator(dir_ / "alice" / "A")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("sqlite3.db", 0) != 0 || name.find('-') != std::string::npos) continue;
    for (auto &row : kodosumi_read(entry.path())) ++seen[row.id];
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(rounds * per_round));
  for (auto &[id, times] : seen) EXPECT_EQ(times, 1) << "row " << id;
}

// Closing the storage while checkpoints are queued (every commit asks for one) and one may be
// running: the close waits for that one, drops the rest, and closing the last connection of
// each database folds and removes its WAL. Nothing is lost, and the storage opens again.
TEST_F(SqliteCheckpoint, ShutdownWithCheckpointsPending) {
  std::vector<std::string> fids;
  fids.reserve(40);
  for (int x = 0; x < 40; ++x) fids.push_back("s" + std::to_string(x));
  const int per_round = 4, opens = 5;
  for (int n = 0; n < opens; ++n) {
    Store store(dir_, {{"checkpoint_pages", "1"}});
    store.append_ok(batch(fids, int64_t{n} * per_round, per_round));
  }
  for (const auto &fid : fids) {
    EXPECT_FALSE(fs::exists(db_path(fid).string() + "-wal")) << fid;
    EXPECT_EQ(kodosumi_read(db_path(fid)).size(), static_cast<size_t>(opens * per_round)) << fid;
  }
  Store store(dir_, {{"checkpoint_pages", "1"}});
  for (const auto &fid : fids) expect_all(store, fid, int64_t{opens} * per_round);
}

}  // namespace
