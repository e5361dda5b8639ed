// sqlite_test_support.hpp: the SQLite storage tests' fixture and helpers: the plugin loaded
// with dlopen as the host does, a Store calling its C table, and kodosumi's way of reading.
#pragma once
#include <kodo/kodo_plugin.h>

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <map>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace sqlite_test {

namespace fs = std::filesystem;

struct Plugin {
  const kodo_plugin *descriptor = nullptr;
  const kodo_storage_api *api = nullptr;
};

inline const Plugin &plugin() {
  static const Plugin loaded = [] {
    Plugin p;
    void *handle = dlopen(KODO_SQLITE_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      std::fprintf(stderr, "dlopen %s: %s\n", KODO_SQLITE_PLUGIN_PATH, dlerror());
      std::abort();
    }
    auto entry = reinterpret_cast<kodo_plugin_entry_fn>(dlsym(handle, KODO_ENTRY_SYMBOL));
    if (!entry) std::abort();
    uint32_t abi = 0;
    kodo_error error = KODO_ERROR_INIT;
    if (entry(KODO_ABI_VERSION, KODO_ABI_VERSION, nullptr, &p.descriptor, &abi, &error) != KODO_OK)
      std::abort();
    p.api = p.descriptor->storage;
    return p;  // the module stays loaded for the whole run
  }();
  return loaded;
}

inline const kodo_storage_api &api() {
  return *plugin().api;
}

struct Ev {
  std::string fid, username;
  int64_t seq = 0;
  double timestamp = 0;
  std::string kind, payload;
};

inline bool operator==(const Ev &a, const Ev &b) {
  return a.fid == b.fid && a.username == b.username && a.seq == b.seq &&
         a.timestamp == b.timestamp && a.kind == b.kind && a.payload == b.payload;
}

inline std::ostream &operator<<(std::ostream &os, const Ev &e) {
  return os << e.username << "/" << e.fid << "#" << e.seq << " " << e.kind << " @" << e.timestamp
            << " (" << e.payload.size() << " bytes)";
}

// An event; by default a stdout line of alice's, timestamped by its seq.
inline Ev ev(const std::string &fid, int64_t seq, const std::string &kind = "stdout",
             const std::string &payload = "", const std::string &username = "alice",
             double ts = 0) {
  Ev e;
  e.fid = fid;
  e.username = username;
  e.seq = seq;
  e.timestamp = ts != 0 ? ts : 1700000000.0 + static_cast<double>(seq);
  e.kind = kind;
  e.payload = payload.empty() ? "payload " + std::to_string(seq) : payload;
  return e;
}

// The result of a call: status, message and retryable flag of its error.
struct Outcome {
  kodo_status status = KODO_OK;
  std::string message;
  bool retryable = false;
};

inline Outcome take(kodo_status status, kodo_error &error) {
  Outcome o{status, error.message ? error.message : "", error.retryable != 0};
  kodo_error_release(&error);
  return o;
}

struct Summary {
  std::string fid, username, status;
  double started_at = 0, updated_at = 0;
  int64_t event_count = 0, last_seq = -1;
};

inline Summary summary_of(const kodo_execution_info &x) {
  return Summary{x.fid,        x.username,    x.status,  x.started_at,
                 x.updated_at, x.event_count, x.last_seq};
}

struct EventPage {
  std::vector<Ev> events;
  bool has_more = false;
};

struct ExecutionPage {
  std::vector<Summary> executions;
  bool has_more = false;
};

// One open storage handle on its own folder.
class Store {
 public:
  explicit Store(const fs::path &exec_dir, std::map<std::string, std::string> extra = {}) {
    extra["exec_dir"] = exec_dir.string();
    std::vector<kodo_option> options;
    for (auto &[name, value] : extra)
      options.push_back(kodo_option{sizeof(kodo_option), name.c_str(), value.c_str()});
    std::vector<const kodo_option *> pointers;
    for (auto &o : options) pointers.push_back(&o);
    kodo_error error = KODO_ERROR_INIT;
    Outcome o =
        take(api().open(pointers.data(), pointers.size(), nullptr, &handle_, &error), error);
    if (o.status != KODO_OK) throw std::runtime_error("open: " + o.message);
    kodo_error schema_error = KODO_ERROR_INIT;
    o = take(api().create_schema(handle_, &schema_error), schema_error);
    if (o.status != KODO_OK) throw std::runtime_error("create_schema: " + o.message);
  }
  ~Store() { api().close(handle_); }
  Store(const Store &) = delete;
  Store &operator=(const Store &) = delete;

  Outcome append(const std::vector<Ev> &events) {
    std::vector<kodo_event> views;
    for (auto &e : events)
      views.push_back(kodo_event{sizeof(kodo_event), e.fid.c_str(), e.username.c_str(), e.seq,
                                 e.timestamp, e.kind.c_str(), e.payload.c_str(), e.payload.size()});
    std::vector<const kodo_event *> pointers;
    for (auto &v : views) pointers.push_back(&v);
    return append_views(pointers.data(), pointers.size());
  }
  Outcome append_views(const kodo_event *const *events, size_t count) {
    kodo_error error = KODO_ERROR_INIT;
    return take(api().append(handle_, events, count, &error), error);
  }
  void append_ok(const std::vector<Ev> &events) {
    Outcome o = append(events);
    ASSERT_EQ(o.status, KODO_OK) << o.message;
  }

  Outcome read(const std::string &fid, const char *username, int64_t after_seq, size_t limit,
               EventPage &page, const std::vector<std::string> &kinds = {}) {
    std::vector<const char *> kind_ptrs;
    for (auto &k : kinds) kind_ptrs.push_back(k.c_str());
    kodo_read_request request{sizeof(kodo_read_request), fid.c_str(),      username, after_seq,
                              kind_ptrs.data(),          kind_ptrs.size(), limit};
    kodo_event_page out{};
    out.struct_size = sizeof(out);
    kodo_error error = KODO_ERROR_INIT;
    Outcome o = take(api().read_events(handle_, &request, &out, &error), error);
    page = EventPage{};
    if (o.status == KODO_OK) {
      for (size_t i = 0; i < out.count; ++i) {
        const kodo_event &e = *out.events[i];
        page.events.push_back(Ev{e.fid, e.username, e.seq, e.timestamp, e.kind,
                                 std::string(e.payload, e.payload_len)});
      }
      page.has_more = out.has_more != 0;
      out.release(&out);
    }
    return o;
  }
  // Every event of fid after after_seq, paging with `limit`.
  std::vector<Ev> read_all(const std::string &fid, const char *username = "alice",
                           int64_t after_seq = -1, size_t limit = 1000) {
    std::vector<Ev> all;
    for (;;) {
      EventPage page;
      Outcome o = read(fid, username, after_seq, limit, page);
      EXPECT_EQ(o.status, KODO_OK) << o.message;
      if (o.status != KODO_OK) return all;
      for (auto &e : page.events) all.push_back(e);
      if (!page.events.empty()) after_seq = page.events.back().seq;
      if (!page.has_more) return all;
    }
  }

  Outcome get(const std::string &fid, const char *username, Summary &out) {
    kodo_execution_page page{};
    page.struct_size = sizeof(page);
    kodo_error error = KODO_ERROR_INIT;
    Outcome o = take(api().get_execution(handle_, fid.c_str(), username, &page, &error), error);
    if (o.status == KODO_OK) {
      EXPECT_EQ(page.count, 1u);
      if (page.count == 1) out = summary_of(*page.executions[0]);
      page.release(&page);
    }
    return o;
  }

  Outcome list(const char *username, size_t offset, size_t limit, ExecutionPage &out) {
    kodo_list_request request{sizeof(kodo_list_request), username, offset, limit};
    kodo_execution_page page{};
    page.struct_size = sizeof(page);
    kodo_error error = KODO_ERROR_INIT;
    Outcome o = take(api().list_executions(handle_, &request, &page, &error), error);
    out = ExecutionPage{};
    if (o.status == KODO_OK) {
      for (size_t i = 0; i < page.count; ++i)
        out.executions.push_back(summary_of(*page.executions[i]));
      out.has_more = page.has_more != 0;
      page.release(&page);
    }
    return o;
  }
  std::vector<std::string> list_fids(const char *username, size_t offset, size_t limit,
                                     bool *has_more = nullptr) {
    ExecutionPage page;
    Outcome o = list(username, offset, limit, page);
    EXPECT_EQ(o.status, KODO_OK) << o.message;
    std::vector<std::string> fids;
    for (auto &x : page.executions) fids.push_back(x.fid);
    if (has_more) *has_more = page.has_more;
    return fids;
  }

  Outcome archive(const std::string &fid, const char *username) {
    kodo_error error = KODO_ERROR_INIT;
    return take(api().archive_execution(handle_, fid.c_str(), username, &error), error);
  }

  Outcome purge(double older_than, int64_t &purged) {
    kodo_error error = KODO_ERROR_INIT;
    return take(api().purge(handle_, older_than, &purged, &error), error);
  }

 private:
  kodo_storage *handle_ = nullptr;
};

// A bson-ObjectId-like fid: 8 hex digits of seconds, then 16 of a counter.
inline std::string oid(uint32_t seconds, uint64_t counter = 0) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08x%016llx", seconds, static_cast<unsigned long long>(counter));
  return buf;
}

inline double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Reads a database the way kodosumi's reader does.
struct Row {
  int64_t id;
  double timestamp;
  std::string kind, message;
};

inline std::vector<Row> kodosumi_read(const fs::path &db, int64_t offset = 0) {
  sqlite3 *c = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db.c_str(), &c, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK) << db;
  sqlite3_exec(c, "PRAGMA synchronous=normal; PRAGMA read_uncommitted=true;", nullptr, nullptr,
               nullptr);
  sqlite3_stmt *s = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(c,
                               "SELECT id, timestamp, kind, message FROM monitor WHERE id > ? "
                               "ORDER BY id",
                               -1, &s, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(c);
  std::vector<Row> rows;
  if (s) {
    sqlite3_bind_int64(s, 1, offset);
    while (sqlite3_step(s) == SQLITE_ROW)
      rows.push_back(Row{sqlite3_column_int64(s, 0), sqlite3_column_double(s, 1),
                         reinterpret_cast<const char *>(sqlite3_column_text(s, 2)),
                         std::string(reinterpret_cast<const char *>(sqlite3_column_text(s, 3)),
                                     static_cast<size_t>(sqlite3_column_bytes(s, 3)))});
  }
  sqlite3_finalize(s);
  sqlite3_close(c);
  return rows;
}

inline std::string query_text(const fs::path &db, const std::string &sql) {
  sqlite3 *c = nullptr;
  sqlite3_open_v2(db.c_str(), &c, SQLITE_OPEN_READWRITE, nullptr);
  sqlite3_stmt *s = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(c, sql.c_str(), -1, &s, nullptr) == SQLITE_OK &&
      sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
    out = reinterpret_cast<const char *>(sqlite3_column_text(s, 0));
  sqlite3_finalize(s);
  sqlite3_close(c);
  return out;
}

class SqliteStorage : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "kodo-sqlite-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    dir_ = root_ / "execution";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  fs::path db_path(const std::string &fid, const std::string &user = "alice") const {
    return dir_ / user / fid / "sqlite3.db";
  }

  fs::path root_, dir_;
};

}  // namespace sqlite_test
