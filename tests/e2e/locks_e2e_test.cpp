// Human in the loop end to end (core/locks.hpp): a flow asks through a lock, the run reads
// `awaiting`, the answer posted to /lock/{fid}/{lid} reaches the flow and is stored as a lease;
// a lock past its expiry ends the run; a lock survives its host's death as stored events.
#include "host_process.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

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

class LocksE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kodo-locks-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    std::ofstream(dir_ + "/ask.sh") << kAskFlow;
    ASSERT_EQ(chmod((dir_ + "/ask.sh").c_str(), 0755), 0);
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "--- kodo-host log ---\n" << host_.log();
    host_.stop();
    fs::remove_all(dir_);
  }

  void start(const std::string &lock_timeout = "600") {
    ASSERT_TRUE(
        host_.start({"--plugin-dir", KODO_PLUGIN_DIR, "--exec-dir", dir_ + "/execution", "--flow",
                     "ask=" + dir_ + "/ask.sh", "--flow-env", "ask=LOCK_TIMEOUT=" + lock_timeout}))
        << host_.log();
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

  std::string launch() {
    auto d = json("POST", "/api/v1/executions", 201, R"({"flow": "ask", "inputs": {}})");
    return d.IsObject() && d.HasMember("fid") ? d["fid"].GetString() : "";
  }

  std::string status_of(const std::string &fid) {
    auto r = host_.request("GET", "/outputs/status/" + fid);
    rapidjson::Document d;
    d.Parse(r.body.c_str());
    return r.status == 200 && d.IsObject() && d["status"].IsString() ? d["status"].GetString() : "";
  }

  // Waits for the run to await its one lock; returns the lock's id.
  std::string awaited_lock(const std::string &fid) {
    EXPECT_TRUE(eventually([&] { return status_of(fid) == "awaiting"; }, 60)) << status_of(fid);
    auto status = json("GET", "/outputs/status/" + fid, 200);
    EXPECT_TRUE(status["locks"].IsArray() && status["locks"].Size() == 1u);
    return status["locks"].Size() == 1u ? status["locks"][0].GetString() : "";
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

TEST_F(LocksE2E, ALockWhoseHostDiedIsStillThereAndSaysWhyItCannotBeAnswered) {
  start();
  const std::string fid = launch();
  const std::string lid = awaited_lock(fid);
  host_.kill_now(SIGKILL);
  start();  // takes over the dead host's journal: the run ends as stopped with its host
  ASSERT_TRUE(ends_with(fid, "error")) << status_of(fid);
  auto lock = json("GET", "/lock/" + fid + "/" + lid, 200);
  EXPECT_STREQ(lock["name"].GetString(), "approve");
  EXPECT_STREQ(lock["data"]["question"].GetString(), "ship it?");
  EXPECT_STREQ(lock["state"].GetString(), "ended");
  auto refused = json("POST", "/lock/" + fid + "/" + lid, 409, R"({"approved": true})");
  EXPECT_NE(std::string(refused["detail"].GetString()).find("ended (status error)"),
            std::string::npos)
      << refused["detail"].GetString();
}

}  // namespace
}  // namespace kodo::e2e
