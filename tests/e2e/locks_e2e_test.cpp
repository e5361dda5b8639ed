// Human in the loop end to end (core/locks.hpp): a flow asks through a lock, the run reads
// `awaiting`, the answer posted to /lock/{fid}/{lid} reaches the flow and is stored as a lease;
// a lock past its expiry ends the run; a lock survives its host's death as stored events.
#include "host_process.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>

namespace kodo::e2e {
namespace {

namespace fs = std::filesystem;

// The flow: asks "approve" with some data, waits for the answer on KODO_ANSWERS_FD, and
// ends with the answer as its final payload.
const char *const kAskFlow = R"(#!/bin/sh
printf '%s\n' '{"kind":"lock","payload":{"name":"approve","data":{"question":"ship it?"},"timeout":'"$LOCK_TIMEOUT"'}}' >&"$KODO_EVENTS_FD"
IFS= read -r answer <&"$KODO_ANSWERS_FD" || exit 4
printf '{"kind":"final","payload":%s}\n' "$answer" >&"$KODO_EVENTS_FD"
)";

// The same with two locks, each announced on stdout first; its final holds both answers.
const char *const kTwiceFlow = R"(#!/bin/sh
lock() {
  echo "asking $1"
  printf '%s\n' '{"kind":"lock","payload":{"name":"'"$1"'","timeout":'"$LOCK_TIMEOUT"'}}' >&"$KODO_EVENTS_FD"
}
lock approve
IFS= read -r first <&"$KODO_ANSWERS_FD" || exit 4
lock confirm
IFS= read -r second <&"$KODO_ANSWERS_FD" || exit 4
printf '{"kind":"final","payload":{"first":%s,"second":%s}}\n' "$first" "$second" >&"$KODO_EVENTS_FD"
)";

class LocksE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kodo-locks-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    std::ofstream(dir_ + "/ask.sh") << kAskFlow;
    ASSERT_EQ(chmod((dir_ + "/ask.sh").c_str(), 0755), 0);
    std::ofstream(dir_ + "/twice.sh") << kTwiceFlow;
    ASSERT_EQ(chmod((dir_ + "/twice.sh").c_str(), 0755), 0);
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "--- kodo-host log ---\n" << host_.log();
    host_.stop();
    fs::remove_all(dir_);
  }

  void start(const std::string &lock_timeout = "600") {
    ASSERT_TRUE(host_.start(
        {"--plugin-dir", KODO_PLUGIN_DIR, "--exec-dir", dir_ + "/execution", "--flow",
         "ask=" + dir_ + "/ask.sh", "--flow-env", "ask=LOCK_TIMEOUT=" + lock_timeout, "--flow",
         "twice=" + dir_ + "/twice.sh", "--flow-env", "twice=LOCK_TIMEOUT=" + lock_timeout}))
        << host_.log();
  }

  // kill -9 of the host (its flow dies with it), then a new host on the same directory.
  void restart() {
    host_.kill_now(SIGKILL);
    start();
  }

  rapidjson::Document json(const std::string &method, const std::string &target, int expect_status,
                           const std::string &body = "") {
    auto r = host_.request(method, target, body);
    EXPECT_EQ(r.status, expect_status) << method << " " << target << ": " << r.body;
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    EXPECT_FALSE(d.HasParseError()) << r.body;
    return d;
  }

  std::string launch(const std::string &flow = "ask") {
    auto d = json("POST", "/api/v1/executions", 201,
                  R"({"flow": ")" + flow + R"(", "inputs": {"n": 1}})");
    return d.IsObject() && d.HasMember("fid") ? d["fid"].GetString() : "";
  }

  std::string status_of(const std::string &fid) {
    auto r = host_.request("GET", "/outputs/status/" + fid);
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    return r.status == 200 && d.IsObject() && d["status"].IsString() ? d["status"].GetString() : "";
  }

  // The open locks of /outputs/status.
  std::vector<std::string> open_locks(const std::string &fid) {
    auto r = host_.request("GET", "/outputs/status/" + fid);
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    std::vector<std::string> lids;
    if (r.status == 200 && d.IsObject() && d.HasMember("locks") && d["locks"].IsArray())
      for (const auto &lid : d["locks"].GetArray())
        if (lid.IsString()) lids.emplace_back(lid.GetString());
    return lids;
  }

  // Waits for the run to await one lock, other than `answered`; returns the lock's id.
  std::string awaited_lock(const std::string &fid, const std::string &answered = "") {
    std::vector<std::string> lids;
    EXPECT_TRUE(eventually(
        [&] {
          lids = open_locks(fid);
          return status_of(fid) == "awaiting" && lids.size() == 1u && lids[0] != answered;
        },
        60))
        << status_of(fid);
    return lids.size() == 1u ? lids[0] : "";
  }

  bool ends_with(const std::string &fid, const std::string &status) {
    return eventually([&] { return status_of(fid) == status; }, 60);
  }

  // (kind, message) of the run's rows in kodosumi's monitor table, by id.
  std::vector<std::pair<std::string, std::string>> rows(const std::string &fid) {
    std::vector<std::pair<std::string, std::string>> out;
    sqlite3 *db = nullptr;
    const std::string path = dir_ + "/execution/admin/" + fid + "/sqlite3.db";
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
      sqlite3_stmt *st = nullptr;
      sqlite3_prepare_v2(db, "SELECT kind, message FROM monitor ORDER BY id", -1, &st, nullptr);
      while (st && sqlite3_step(st) == SQLITE_ROW)
        out.emplace_back(reinterpret_cast<const char *>(sqlite3_column_text(st, 0)),
                         reinterpret_cast<const char *>(sqlite3_column_text(st, 1)));
      sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return out;
  }

  std::string dir_;
  HostProcess host_;
};

TEST_F(LocksE2E, ALockAnsweredThroughTheApiResumesTheRun) {
  start();
  const std::string fid = launch();
  const std::string lid = awaited_lock(fid);
  ASSERT_EQ(lid.size(), 36u) << lid;

  auto lock = json("GET", "/lock/" + fid + "/" + lid, 200);
  EXPECT_STREQ(lock["name"].GetString(), "approve");
  EXPECT_STREQ(lock["data"]["question"].GetString(), "ship it?");
  EXPECT_STREQ(lock["state"].GetString(), "open");
  EXPECT_TRUE(lock["result"].IsNull());
  EXPECT_GT(lock["expires"].GetDouble(), 1.7e9);

  // Bad answers and unknown locks are refused, naming what was wrong; the lock stays open.
  EXPECT_NE(json("POST", "/lock/" + fid + "/" + lid, 400, "{not json")["detail"].GetString(),
            std::string());
  // A number past a double's range reads as infinite, which no JSON text holds: refused, not
  // handed to the flow half written.
  EXPECT_NE(
      std::string(
          json("POST", "/lock/" + fid + "/" + lid, 400, R"({"n": 2001e305})")["detail"].GetString())
          .find("range of a double"),
      std::string::npos);
  json("POST", "/lock/" + fid + "/00000000-0000-4000-8000-000000000000", 404, "{}");
  json("POST", "/lock/" + fid + "/not_a_lock", 400, "{}");

  auto answered = json("POST", "/lock/" + fid + "/" + lid, 200, R"({"approved": true})");
  EXPECT_STREQ(answered["state"].GetString(), "answered");
  // A second answer, right away (the lease may not be stored yet), is refused as such.
  auto twice = json("POST", "/lock/" + fid + "/" + lid, 409, R"({"approved": false})");
  EXPECT_NE(std::string(twice["detail"].GetString()).find("answered already"), std::string::npos)
      << twice["detail"].GetString();
  ASSERT_TRUE(ends_with(fid, "finished")) << status_of(fid);

  auto status = json("GET", "/outputs/status/" + fid, 200);
  EXPECT_EQ(status["locks"].Size(), 0u);
  // The flow received the answer: its final is what it read from KODO_ANSWERS_FD.
  const std::string final_text =
      R"({"name":"approve","lid":")" + lid + R"(","result":{"approved":true}})";
  const auto stored = rows(fid);
  std::vector<std::string> kinds;
  for (const auto &[kind, message] : stored) kinds.push_back(kind);
  EXPECT_EQ(kinds, (std::vector<std::string>{"status", "inputs", "meta", "status", "lock", "lease",
                                             "final", "status"}));
  ASSERT_EQ(stored.size(), 8u);
  // kodosumi's serialized forms, as its tracer stores them and its readers (data.dict.lid) read.
  rapidjson::Document stored_lock;
  stored_lock.Parse(stored[4].second.c_str());
  EXPECT_STREQ(stored_lock["dict"]["lid"].GetString(), lid.c_str());
  EXPECT_STREQ(stored_lock["dict"]["name"].GetString(), "approve");
  EXPECT_TRUE(stored_lock["dict"]["expires"].IsNumber());
  EXPECT_EQ(stored[5].second, R"({"dict":)" + final_text + "}");
  // The flow's final is the answer line it read, stored as kodosumi serializes an object.
  EXPECT_EQ(stored[6].second, R"({"dict":)" + final_text + "}");

  // Answered once only; the lock now shows its answer.
  json("POST", "/lock/" + fid + "/" + lid, 409, R"({"approved": false})");
  auto after = json("GET", "/lock/" + fid + "/" + lid, 200);
  EXPECT_STREQ(after["state"].GetString(), "answered");
  EXPECT_TRUE(after["result"]["approved"].GetBool());
}

TEST_F(LocksE2E, AnExpiredLockEndsTheRunWithAnError) {
  start("0.5");
  const std::string fid = launch();
  ASSERT_TRUE(ends_with(fid, "error")) << status_of(fid);
  const auto stored = rows(fid);
  bool expired = false;
  std::string lid;
  for (const auto &[kind, message] : stored) {
    if (kind == "error") expired = expired || message.find("expired at") != std::string::npos;
    if (kind == "lock") {
      rapidjson::Document d;
      d.Parse(message.c_str());
      lid = d["dict"]["lid"].GetString();
    }
  }
  EXPECT_TRUE(expired);
  // As in kodosumi, the unreleased lock is still listed, but the run is over, not awaiting.
  auto status = json("GET", "/outputs/status/" + fid, 200);
  EXPECT_STREQ(status["status"].GetString(), "error");
  ASSERT_EQ(status["locks"].Size(), 1u);
  EXPECT_STREQ(json("GET", "/lock/" + fid + "/" + lid, 200)["state"].GetString(), "ended");
  auto refused = json("POST", "/lock/" + fid + "/" + lid, 409, "true");
  EXPECT_NE(std::string(refused["detail"].GetString()).find("ended"), std::string::npos);
}

// The host dies (kill -9, its flow with it) while the run awaits its lock; the next host on
// the same directory resumes the run (core/lock_resume.hpp): the lock is still open, POST
// answers it and the run finishes with the answer, nothing stored twice.
TEST_F(LocksE2E, ALockWhoseHostDiedIsAnsweredAfterTheRestartAndTheRunFinishes) {
  start();
  const std::string fid = launch();
  const std::string lid = awaited_lock(fid);
  restart();
  EXPECT_EQ(awaited_lock(fid), lid);
  auto lock = json("GET", "/lock/" + fid + "/" + lid, 200);
  EXPECT_STREQ(lock["name"].GetString(), "approve");
  EXPECT_STREQ(lock["data"]["question"].GetString(), "ship it?");
  EXPECT_STREQ(lock["state"].GetString(), "open");
  EXPECT_STREQ(
      json("POST", "/lock/" + fid + "/" + lid, 200, R"({"approved": true})")["state"].GetString(),
      "answered");
  ASSERT_TRUE(ends_with(fid, "finished")) << status_of(fid);

  const auto stored = rows(fid);
  std::vector<std::string> kinds;
  for (const auto &[kind, message] : stored) kinds.push_back(kind);
  // The first host's events once each, the note, the second run's status and what follows.
  EXPECT_EQ(kinds, (std::vector<std::string>{"status", "inputs", "meta", "status", "lock", "debug",
                                             "status", "lease", "final", "status"}));
  ASSERT_EQ(stored.size(), 10u);
  EXPECT_NE(stored[5].second.find("resumed after its host"), std::string::npos) << stored[5].second;
  EXPECT_EQ(stored[6].second, "running");
  const std::string answer =
      R"({"dict":{"name":"approve","lid":")" + lid + R"(","result":{"approved":true}}})";
  EXPECT_EQ(stored[7].second, answer);
  EXPECT_EQ(stored[8].second, answer);  // the resumed flow read the posted answer
  EXPECT_STREQ(json("GET", "/lock/" + fid + "/" + lid, 200)["state"].GetString(), "answered");
}

// Two locks and two host deaths: at the first lock, then (its answer posted to the second
// host) at the second. The third host answers the first lock from its stored lease at once;
// the second, open, is answered by POST; each lock, lease and stdout line is stored once.
TEST_F(LocksE2E, ASecondLockAfterTheFirstSurvivesTwoRestarts) {
  start();
  const std::string fid = launch("twice");
  const std::string first = awaited_lock(fid);
  restart();
  EXPECT_EQ(awaited_lock(fid), first);
  json("POST", "/lock/" + fid + "/" + first, 200, R"("yes")");
  const std::string second = awaited_lock(fid, first);
  ASSERT_FALSE(second.empty());
  restart();
  EXPECT_EQ(awaited_lock(fid), second);
  auto refused = json("POST", "/lock/" + fid + "/" + first, 409, R"("again")");
  EXPECT_NE(std::string(refused["detail"].GetString()).find("answered already"), std::string::npos)
      << refused["detail"].GetString();
  json("POST", "/lock/" + fid + "/" + second, 200, R"("sure")");
  ASSERT_TRUE(ends_with(fid, "finished")) << status_of(fid);

  std::map<std::string, int> count;
  std::string final_text;
  for (const auto &[kind, message] : rows(fid)) {
    ++count[kind == "stdout" ? "stdout " + message : kind];
    if (kind == "final") final_text = message;
  }
  EXPECT_EQ(count["lock"], 2);
  EXPECT_EQ(count["lease"], 2);
  EXPECT_EQ(count["debug"], 2);  // one note per resumption
  EXPECT_EQ(count["stdout asking approve"], 1);
  EXPECT_EQ(count["stdout asking confirm"], 1);
  EXPECT_EQ(count["final"], 1);
  EXPECT_EQ(count["inputs"], 1);
  EXPECT_EQ(count["meta"], 1);
  rapidjson::Document final_doc;
  final_doc.Parse(final_text.c_str());
  ASSERT_TRUE(final_doc.IsObject()) << final_text;
  EXPECT_STREQ(final_doc["dict"]["first"]["result"].GetString(), "yes");
  EXPECT_STREQ(final_doc["dict"]["second"]["result"].GetString(), "sure");
  EXPECT_STREQ(final_doc["dict"]["second"]["lid"].GetString(), second.c_str());
}

// A lock that expired while no host ran its flow ends the run, after the restart, as
// kodosumi's TimeoutError does; the run is not resumed.
TEST_F(LocksE2E, ALockThatExpiredWhileItsHostWasDownEndsTheRun) {
  start("4");
  const std::string fid = launch();
  const std::string lid = awaited_lock(fid);
  host_.kill_now(SIGKILL);
  double expires = 0;
  for (const auto &[kind, message] : rows(fid))
    if (kind == "lock") {
      rapidjson::Document d;
      d.Parse(message.c_str());
      expires = d["dict"]["expires"].GetDouble();
    }
  ASSERT_GT(expires, 0);
  // Waits out the expiry with no host running (wall clock, as the stored expiry).
  const auto wall = [] {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  while (wall() <= expires + 0.1) usleep(100 * 1000);
  start("4");
  ASSERT_TRUE(ends_with(fid, "error")) << status_of(fid);
  bool expired = false, resumed = false;
  for (const auto &[kind, message] : rows(fid)) {
    if (kind == "error")
      expired = expired || message.find("lock " + lid + " (\"approve\") expired at") == 0;
    resumed = resumed || kind == "debug";
  }
  EXPECT_TRUE(expired);
  EXPECT_FALSE(resumed);
  EXPECT_STREQ(json("GET", "/lock/" + fid + "/" + lid, 200)["state"].GetString(), "ended");
  auto refused = json("POST", "/lock/" + fid + "/" + lid, 409, "true");
  EXPECT_NE(std::string(refused["detail"].GetString()).find("ended (status error)"),
            std::string::npos)
      << refused["detail"].GetString();
}

}  // namespace
}  // namespace kodo::e2e
