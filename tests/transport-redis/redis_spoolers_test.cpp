// kodo-host with the Redis transport, end to end, against a real redis-server: spoolers in their
// own processes share the executions, one killed with SIGKILL mid-run loses nothing; a Redis
// restart mid-run loses nothing; a run whose events Redis cannot take ends in a visible error.
// Each case checks, per execution, that every seq is stored exactly once and in order. The
// seed's "PostgreSQL + Redis combined" scenario runs the spoolers into a real PostgreSQL.
#include "host_process.hpp"
#include "postgres_server.hpp"
#include "redis_server.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <sqlite3.h>

#include <filesystem>
#include <regex>

namespace kodo::e2e {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using kodo::testing::RedisServer;

constexpr int kLines = 2000;  // stdout lines per run of the `steady` flow

class RedisHostE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_THROW(redis_.start());
    exec_dir_ = dir_.path() + "/execution";
    // 2000 lines in ten bursts, about 3 s in all: long enough to kill or restart mid-run.
    const std::string flow = dir_.path() + "/steady.sh";
    std::ofstream(flow) << "#!/bin/sh\nfor j in 1 2 3 4 5 6 7 8 9 10; do\n"
                        << "  seq -f 'line %g' $(( (j - 1) * " << kLines / 10 << " + 1 )) $(( j * "
                        << kLines / 10 << " ))\n  sleep 0.3\ndone\n"
                        << "echo '{\"kind\": \"final\", \"payload\": \"ok\"}' >&$KODO_EVENTS_FD\n";
    fs::permissions(flow, fs::perms::owner_all);
    common_ = {"--plugin-dir",  KODO_PLUGIN_DIR,
               "--exec-dir",    exec_dir_,
               "--flow",        "steady=" + flow,
               "--flow",        "chatty=/usr/bin/seq -f 'line %g' 1 5000",
               "--max-running", "64"};
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "--- kodo-host serve log ---\n" << host_.log();
      for (size_t i = 0; i < spoolers_.size(); ++i)
        std::cerr << "--- spooler " << i << " log ---\n" << spoolers_[i]->log();
      std::cerr << "--- redis-server log ---\n" << redis_.log();
    }
  }

  std::vector<std::string> env(const std::vector<std::string> &more = {}) const {
    std::vector<std::string> out = {"KODO_EVENT_TRANSPORT=redis", "KODO_REDIS_URL=" + redis_.url(),
                                    "KODO_REDIS_CLAIM_IDLE_MS=2000",
                                    "KODO_REDIS_STREAM_GRACE_MS=500"};
    out.insert(out.end(), extra_env_.begin(), extra_env_.end());
    out.insert(out.end(), more.begin(), more.end());
    return out;
  }

  void start_host(const std::vector<std::string> &extra, const std::vector<std::string> &vars) {
    std::vector<std::string> args = common_;
    args.insert(args.end(), extra.begin(), extra.end());
    ASSERT_TRUE(host_.start(args, vars)) << host_.log();
  }

  void start_spoolers(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      spoolers_.push_back(std::make_unique<HostProcess>());
      ASSERT_TRUE(spoolers_.back()->start(common_, env(), "spool")) << spoolers_.back()->log();
    }
  }

  std::string launch(const std::string &flow) {
    auto r = host_.request("POST", "/api/v1/executions", "{\"flow\": \"" + flow + "\"}");
    EXPECT_EQ(r.status, 201) << r.body;
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    return d.IsObject() && d.HasMember("fid") ? d["fid"].GetString() : "";
  }

  // The sum of a metric's samples (all label sets) on a process's /metrics; -1 if absent.
  static double metric(const HostProcess &process, const std::string &name) {
    const std::string text = process.request("GET", "/metrics").body;
    std::regex line("(^|\n)" + name + "(\\{[^}]*\\})? ([0-9.e+-]+)");
    double sum = -1;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), line);
         it != std::sregex_iterator(); ++it)
      sum = (sum < 0 ? 0 : sum) + std::stod((*it)[3]);
    return sum;
  }

  std::string status(const std::string &fid) {
    auto r = host_.request("GET", "/outputs/status/" + fid);
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    return r.status == 200 && d.IsObject() && d.HasMember("status") && d["status"].IsString()
               ? d["status"].GetString()
               : "";
  }

  // Waits until every run has a final status stored (the machine is slow: a generous bound).
  void wait_for_end(const std::vector<std::string> &fids) {
    const auto deadline = Clock::now() + std::chrono::seconds(240);
    for (const auto &fid : fids) {
      std::string s;
      while ((s = status(fid)) != "finished" && s != "error" && Clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      ASSERT_TRUE(s == "finished" || s == "error") << fid << " never ended; status '" << s << "'";
    }
  }

  // Every seq of the run stored once, contiguous from 0, in seq order in kodosumi's table, and
  // the flow's `lines` stdout lines each once, in order.
  void expect_stored_once_in_order(const std::string &fid, int lines) {
    std::vector<int64_t> seqs;
    for (int64_t after = -1;;) {
      auto r = host_.request("GET", "/api/v1/executions/" + fid +
                                        "/events?limit=10000&after=" + std::to_string(after));
      ASSERT_EQ(r.status, 200) << r.body;
      rapidjson::Document d;
      d.Parse(r.body.c_str());
      ASSERT_TRUE(d.IsObject() && d.HasMember("events")) << r.body;
      for (const auto &e : d["events"].GetArray()) seqs.push_back(e["seq"].GetInt64());
      if (d["events"].Empty()) break;
      after = seqs.back();
    }
    for (size_t i = 0; i < seqs.size(); ++i)
      ASSERT_EQ(seqs[i], static_cast<int64_t>(i)) << fid << ": seqs not contiguous from 0";

    sqlite3 *db = nullptr;
    const std::string path = exec_dir_ + "/admin/" + fid + "/sqlite3.db";
    ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt *stmt = nullptr;
    ASSERT_EQ(
        sqlite3_prepare_v2(db, "SELECT kind, message FROM monitor ORDER BY id", -1, &stmt, nullptr),
        SQLITE_OK);
    size_t rows = 0;
    int next_line = 1;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      ++rows;
      const std::string kind = reinterpret_cast<const char *>(sqlite3_column_text(stmt, 0));
      const std::string message = reinterpret_cast<const char *>(sqlite3_column_text(stmt, 1));
      if (kind != "stdout") continue;
      EXPECT_EQ(message, "line " + std::to_string(next_line)) << fid << ": out of order or twice";
      if (message != "line " + std::to_string(next_line)) break;
      ++next_line;
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    EXPECT_EQ(rows, seqs.size()) << fid << ": kodosumi's table holds a row twice";
    EXPECT_EQ(next_line, lines + 1) << fid << ": stdout lines missing";
  }

  // Streams of executions still in Redis (the registry's own keys aside).
  std::string execution_streams() const {
    std::string keys = redis_.cli({"--scan", "--pattern", "kodo:events:*"});
    std::string out;
    std::istringstream in(keys);
    for (std::string key; std::getline(in, key);)
      if (key.find('#') == std::string::npos) out += key + " ";
    return out;
  }

  RedisServer redis_;
  kodo::testing::TempDir dir_{"kodo-redis-e2e"};
  std::string exec_dir_;
  std::vector<std::string> common_;
  std::vector<std::string> extra_env_;  // for every process of the case
  HostProcess host_;
  std::vector<std::unique_ptr<HostProcess>> spoolers_;
};

// A run the kodosumi fork's runner wrote (its producer: three fields, no announcement) is
// found by a kodo spooler and stored under the username of its meta event, in stream order;
// its stream goes once its final status is stored, as kodo's own do.
TEST_F(RedisHostE2E, ARunTheForksProducerWroteIsStoredUnderItsUser) {
  start_spoolers(1);
  const std::string fid = "65f0c0ffee0000000000abcd";
  const std::string key = "kodo:events:" + fid;
  const std::vector<std::pair<std::string, std::string>> written = {
      {"status", "starting"},
      {"inputs", R"({"dict":{"n":1}})"},
      {"meta", R"({"dict":{"fid":")" + fid + R"(","username":"carol","kodosumi":"1.1.0"}})"},
      {"status", "running"},
      {"stdout", "hello"},
      {"final", R"({"dict":{"ok":true}})"},
      {"status", "finished"}};
  double ts = 1700000000.0;
  for (const auto &[kind, payload] : written)
    redis_.cli({"XADD", key, "MAXLEN", "~", "10000", "*", "timestamp", std::to_string(ts += 0.5),
                "kind", kind, "payload", payload});
  const std::string path = exec_dir_ + "/carol/" + fid + "/sqlite3.db";
  std::vector<std::pair<std::string, std::string>> stored;
  for (int i = 0; i < 3000 && stored.size() < written.size(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stored.clear();
    sqlite3 *db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
      sqlite3_stmt *stmt = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT kind, message FROM monitor ORDER BY id", -1, &stmt,
                             nullptr) == SQLITE_OK)
        while (sqlite3_step(stmt) == SQLITE_ROW)
          stored.emplace_back(reinterpret_cast<const char *>(sqlite3_column_text(stmt, 0)),
                              reinterpret_cast<const char *>(sqlite3_column_text(stmt, 1)));
      sqlite3_finalize(stmt);
    }
    sqlite3_close(db);
  }
  EXPECT_EQ(stored, written);
  // Stored through: the stream is deleted after its grace.
  bool gone = false;
  for (int i = 0; i < 1500 && !gone; ++i) {
    gone = redis_.cli({"EXISTS", key}) == "0";
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(gone);
}

TEST_F(RedisHostE2E, ThreeSpoolersOneKilledMidRunEveryEventStoredOnceInOrder) {
  ASSERT_NO_FATAL_FAILURE(start_host({"--no-spooler"}, env()));
  ASSERT_NO_FATAL_FAILURE(start_spoolers(3));
  std::vector<std::string> fids;
  for (int i = 0; i < 50; ++i) fids.push_back(launch("steady"));

  // Kill the first spooler once it holds executions and has stored some of their events.
  HostProcess &victim = *spoolers_[0];
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while ((metric(victim, "kodo_transport_owned_executions") <= 0 ||
          metric(victim, "kodo_events_stored_total") <= 0) &&
         Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double owned = metric(victim, "kodo_transport_owned_executions");
  ASSERT_GT(owned, 0) << "the first spooler never took an execution";
  victim.kill_now(SIGKILL);

  ASSERT_NO_FATAL_FAILURE(wait_for_end(fids));
  for (const auto &fid : fids) {
    EXPECT_EQ(status(fid), "finished") << fid;
    ASSERT_NO_FATAL_FAILURE(expect_stored_once_in_order(fid, kLines));
  }
  // The killed spooler's executions were claimed by the others, who stored for all three.
  EXPECT_GE(metric(*spoolers_[1], "kodo_transport_claims_total") +
                metric(*spoolers_[2], "kodo_transport_claims_total"),
            1)
      << "the killed spooler held " << owned << " executions, none was claimed";
  EXPECT_GT(metric(*spoolers_[1], "kodo_events_stored_total"), 0);
  EXPECT_GT(metric(*spoolers_[2], "kodo_events_stored_total"), 0);

  // Their streams go once stored and past their grace.
  const auto gone_by = Clock::now() + std::chrono::seconds(60);
  while (!execution_streams().empty() && Clock::now() < gone_by)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(execution_streams(), "");
}

TEST_F(RedisHostE2E, RedisRestartMidRunLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(start_host({}, env()));
  std::vector<std::string> fids;
  for (int i = 0; i < 10; ++i) fids.push_back(launch("steady"));
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (metric(host_, "kodo_events_stored_total") <= 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_GT(metric(host_, "kodo_events_stored_total"), 0);

  redis_.restart();  // SIGTERM: Redis writes its append-only file; then it starts from it

  ASSERT_NO_FATAL_FAILURE(wait_for_end(fids));
  for (const auto &fid : fids) {
    EXPECT_EQ(status(fid), "finished") << fid;
    ASSERT_NO_FATAL_FAILURE(expect_stored_once_in_order(fid, kLines));
  }
  EXPECT_GE(metric(host_, "kodo_transport_producer_reconnects_total"), 1);
  EXPECT_GE(metric(host_, "kodo_transport_reconnects_total"), 1);
}

TEST_F(RedisHostE2E, RedisRestartedEmptyMidRunStillEndsEveryRunAndSaysWhatWasLost) {
  // A standalone spooler, stopped for a moment, so that Redis holds events not yet stored.
  ASSERT_NO_FATAL_FAILURE(start_host({"--no-spooler"}, env()));
  ASSERT_NO_FATAL_FAILURE(start_spoolers(1));
  std::vector<std::string> fids;
  for (int i = 0; i < 10; ++i) fids.push_back(launch("steady"));
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (metric(*spoolers_[0], "kodo_events_stored_total") <= 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_GT(metric(*spoolers_[0], "kodo_events_stored_total"), 0);
  spoolers_[0]->kill_now();  // SIGKILL: what it read and did not store stays in Redis
  const double published = metric(host_, "kodo_events_in_total");
  while (metric(host_, "kodo_events_in_total") <= published && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));

  redis_.restart_empty();  // announcements, streams, groups and unstored events: all gone
  ASSERT_TRUE(spoolers_[0]->start(common_, env(), "spool")) << spoolers_[0]->log();

  // The producer notices, announces its executions again, and the spooler carries them to
  // the end; each run that lost events says which in an error event.
  ASSERT_NO_FATAL_FAILURE(wait_for_end(fids));
  // A loss is reported once its run's final status is stored (no seq of the run is free
  // before): counted just after the error event is stored.
  const auto reported_by = Clock::now() + std::chrono::seconds(30);
  while (metric(*spoolers_[0], "kodo_events_lost_total") <= 0 && Clock::now() < reported_by)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  int runs_with_losses = 0;
  for (const auto &fid : fids) {
    EXPECT_EQ(status(fid), "finished") << fid;
    auto r = host_.request("GET", "/api/v1/executions/" + fid + "/events?kinds=error&limit=100");
    if (r.body.find("were lost in the transport") != std::string::npos) ++runs_with_losses;
  }
  const double lost = metric(*spoolers_[0], "kodo_events_lost_total");
  std::cout << lost << " events lost in " << runs_with_losses << " of " << fids.size() << " runs\n";
  EXPECT_GT(lost, 0);
  EXPECT_GT(runs_with_losses, 0);
  EXPECT_NE(host_.request("GET", "/health").body.find("\"events_lost\":"), std::string::npos);
  EXPECT_EQ(metric(host_, "kodo_transport_producer_redis_data_lost_total"), 1);
  EXPECT_NE(host_.log().find("lost its data"), std::string::npos) << "the log does not say so";
}

TEST_F(RedisHostE2E, RunWhoseEventsRedisCannotTakeEndsInAVisibleError) {
  ASSERT_NO_FATAL_FAILURE(
      start_host({"--publish-timeout", "1"}, env({"KODO_REDIS_BUFFER_EVENTS=200"})));
  redis_.stop();
  const std::string fid = launch("chatty");
  // The producer's buffer fills, publish keeps timing out, the executor ends the run.
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (host_.log().find("the run is stopped") == std::string::npos && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_NE(host_.log().find("the run is stopped"), std::string::npos);
  EXPECT_GT(metric(host_, "kodo_transport_producer_refused_events_total"), 0);
  // Its error outcome waits in the producer's buffer; once Redis is back it is stored.
  redis_.start();
  ASSERT_NO_FATAL_FAILURE(wait_for_end({fid}));
  EXPECT_EQ(status(fid), "error");
  auto r = host_.request("GET", "/api/v1/executions/" + fid + "/events?kinds=error&limit=100");
  EXPECT_NE(r.body.find("transport refused"), std::string::npos) << r.body;
  EXPECT_NE(host_.log().find("unreachable"), std::string::npos)
      << "the log does not say that Redis is unreachable";
}

// The seed's combined scenario: PostgreSQL storage behind Redis transport, a serving host and
// two standalone spoolers, one killed mid-run. Checked in the database itself: per execution,
// rows in id order carry seq 0, 1, 2, ... once each, with every stdout line in order.
TEST_F(RedisHostE2E, PostgresAndRedisCombinedSpoolerKilledMidRun) {
  kodo::testing::PostgresServer postgres;
  postgres.start();
  extra_env_ = {"KODO_EXECUTION_DATABASE=" + postgres.url()};
  auto created = run_command(
      {KODO_HOST_BINARY, "--plugin-dir", KODO_PLUGIN_DIR, "db", "create-tables"}, extra_env_);
  ASSERT_EQ(created.exit_code, 0) << created.output;
  ASSERT_NO_FATAL_FAILURE(start_host({"--no-spooler"}, env()));
  ASSERT_NO_FATAL_FAILURE(start_spoolers(2));
  std::vector<std::string> fids;
  for (int i = 0; i < 20; ++i) fids.push_back(launch("steady"));
  HostProcess &victim = *spoolers_[0];
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (metric(victim, "kodo_events_stored_total") <= 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_GT(metric(victim, "kodo_events_stored_total"), 0) << "the first spooler stored nothing";
  victim.kill_now(SIGKILL);
  ASSERT_NO_FATAL_FAILURE(wait_for_end(fids));

  for (const auto &fid : fids) {
    EXPECT_EQ(status(fid), "finished") << fid;
    const auto rows = testing::execution_event_rows(postgres.url(), fid);
    int next_line = 1;
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto &[seq, kind, message] = rows[i];
      ASSERT_EQ(seq, static_cast<int64_t>(i)) << fid << ": a seq missing, twice or late";
      if (kind != "stdout") continue;
      ASSERT_EQ(message, "line " + std::to_string(next_line)) << fid;
      ++next_line;
    }
    EXPECT_EQ(next_line, kLines + 1) << fid << ": stdout lines missing";
  }
}

}  // namespace
}  // namespace kodo::e2e
