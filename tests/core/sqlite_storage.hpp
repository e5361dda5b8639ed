// sqlite_storage.hpp: the built SQLite storage plugin, opened as the host opens it, on a
// folder of its own that goes with the fixture (core tests of what the host writes into runs).
#pragma once

#include <kodo/host/plugin_options.hpp>
#include "core/storage.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace kodo::test {

class SqliteStorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kodo-core-sqlite-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    auto plugin = Plugin::load(SQLITE_PLUGIN, "", KODO_KIND_STORAGE);
    PluginOptionSources sources;
    sources.command_line = {{"exec_dir", dir_ + "/exec"}};
    storage_ = std::make_unique<Storage>(plugin, resolve_plugin_options(*plugin, sources));
  }
  void TearDown() override {
    storage_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Every stored event of fid, in seq order.
  std::vector<Event> stored(const std::string &fid) {
    EventQuery query;
    query.fid = fid;
    query.limit = 100000;
    return storage_->read_events(query);
  }

  std::string dir_;
  std::unique_ptr<Storage> storage_;
};

// An event of alice's run fid: kind "agent" with a payload naming its seq, unless given.
inline Event run_event(const std::string &fid, int64_t seq, const std::string &kind = "agent",
                       const std::string &payload = "") {
  Event e;
  e.fid = fid;
  e.username = "alice";
  e.seq = seq;
  // A producer stamps an event once: a redelivery carries the same time (storage tells a
  // redelivery from another writer's row by kind and time).
  e.timestamp = 1764000000.0 + static_cast<double>(seq);
  e.kind = kind;
  e.payload = payload.empty() ? "{\"seq\":" + std::to_string(seq) + "}" : payload;
  return e;
}

}  // namespace kodo::test
