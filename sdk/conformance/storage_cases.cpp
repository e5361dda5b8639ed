// storage_cases.cpp: the storage contract (kodo_storage_api in kodo_plugin.h, where every
// rule checked here is written). Each case opens a fresh handle with its own scratch directories
// and its own user name, so cases never see each other's executions. Cases for a capability run
// when the plugin claims it; StorageCapabilities checks that unclaimed ones are refused.
#include "conformance.hpp"

#include <algorithm>
#include <atomic>
#include <thread>

namespace kodo::conformance {
namespace {

// The same out-of-order arrangement on every run, so a failure reproduces: odd positions
// from the back, then even ones from the front (for 0..7: 7 5 3 1 0 2 4 6).
template <typename T>
std::vector<T> scrambled(const std::vector<T> &in) {
  std::vector<T> out;
  out.reserve(in.size());
  for (size_t i = in.size(); i-- > 0;)
    if (i % 2 == 1) out.push_back(in[i]);
  for (size_t i = 0; i < in.size(); i += 2) out.push_back(in[i]);
  return out;
}

// Timestamps far in the past, for executions purge must remove (1970-01-01).
constexpr double kAncient = 1000.0;
constexpr double kPurgeCutoff = 100000.0;
constexpr size_t kReadAll = 100000;

class StorageCase : public ::testing::Test {
 protected:
  void SetUp() override {
    if (target().kind() != KODO_KIND_STORAGE) GTEST_SKIP() << "not a storage plugin";
    ASSERT_NO_FATAL_FAILURE(open_storage(&store_));
    user_ = fresh_name("user");
  }

  static void open_storage(std::unique_ptr<CheckedStorage> *out) {
    const OptionList options = options_for_new_handle();
    auto storage = std::make_unique<CheckedStorage>(options);
    if (!storage->open_outcome().ok())
      GTEST_FAIL() << "storage contract: open succeeds with valid options ("
                   << format_options(target(), options) << "): got " << storage->open_outcome();
    KODO_ASSERT_OK(storage->create_schema(), "storage contract: create_schema makes the schema");
    *out = std::move(storage);
  }

  CheckedStorage &store() { return *store_; }

  // Every event of `fid`; a failed read is a failure naming `contract`.
  std::vector<Event> read_all(const std::string &fid, const std::string &contract) {
    std::vector<Event> events;
    EventQuery query;
    query.fid = fid;
    query.limit = kReadAll;
    KODO_EXPECT_OK(store().read_events(query, &events), contract + ": read_events of fid " + fid);
    return events;
  }

  // The one summary get_execution returns, or nullopt after reporting why not.
  std::optional<ExecutionInfo> summary(const std::string &fid, const std::string &contract) {
    std::vector<ExecutionInfo> page;
    const Outcome outcome = store().get_execution(fid, "", &page);
    if (!outcome.ok()) {
      ADD_FAILURE() << contract << ": get_execution of fid " << fid << ": got " << outcome;
      return std::nullopt;
    }
    if (page.size() != 1) {
      ADD_FAILURE() << "storage contract: get_execution returns a page of one: got " << page.size()
                    << " for fid " << fid;
      return std::nullopt;
    }
    return page.front();
  }

  std::unique_ptr<CheckedStorage> store_;
  std::string user_;
};

class StorageSchema : public StorageCase {};
class StorageAppend : public StorageCase {};
class StorageRead : public StorageCase {};
class StorageExecutions : public StorageCase {};
class StorageConcurrency : public StorageCase {};
class StorageAbi : public StorageCase {};
class StorageCapabilities : public StorageCase {};

// Capability cases: skipped, with the reason, when the plugin does not claim them.
class StorageList : public StorageCase {
 protected:
  void SetUp() override {
    if (target().kind() == KODO_KIND_STORAGE && !claims(KODO_STORAGE_CAP_LIST))
      GTEST_SKIP() << "LIST not claimed (StorageCapabilities checks it is refused)";
    StorageCase::SetUp();
  }
};
class StorageArchive : public StorageCase {
 protected:
  void SetUp() override {
    if (target().kind() == KODO_KIND_STORAGE && !claims(KODO_STORAGE_CAP_ARCHIVE))
      GTEST_SKIP() << "ARCHIVE not claimed (StorageCapabilities checks it is refused)";
    StorageCase::SetUp();
  }
};
class StoragePurge : public StorageCase {
 protected:
  void SetUp() override {
    if (target().kind() == KODO_KIND_STORAGE && !claims(KODO_STORAGE_CAP_PURGE))
      GTEST_SKIP() << "PURGE not claimed (StorageCapabilities checks it is refused)";
    StorageCase::SetUp();
  }
};

Event status_event(const std::string &fid, const std::string &user, int64_t seq,
                   const std::string &status, double timestamp) {
  Event e = make_events(fid, user, seq, 1, "status").front();
  e.payload = status;
  e.timestamp = timestamp;
  return e;
}

std::vector<Event> concat(std::vector<Event> a, const std::vector<Event> &b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---- Schema and append ---------------------------------------------------------------------

TEST_F(StorageSchema, CreateSchemaIsIdempotent) {
  const char *contract = "storage contract: create_schema is idempotent";
  KODO_ASSERT_OK(store().create_schema(), std::string(contract) + ": a second call");
  const std::string fid = fresh_fid();
  const auto events = make_events(fid, user_, 0, 3);
  KODO_ASSERT_OK(store().append(events), "storage contract: append stores a batch");
  KODO_ASSERT_OK(store().create_schema(),
                 std::string(contract) + ": a call on a store that holds events");
  expect_same_events(std::string(contract) + " and keeps what is stored", "stored",
                     read_all(fid, contract), events);
}

TEST_F(StorageAppend, ReadReturnsEventsInSeqOrder) {
  const char *contract = "storage contract: read_events returns an execution's events in seq order";
  const std::string fid = fresh_fid();
  const auto first = make_events(fid, user_, 0, 5);
  const auto second = make_events(fid, user_, 5, 5);
  KODO_ASSERT_OK(store().append(first), "storage contract: append stores a batch");
  KODO_ASSERT_OK(store().append(second), "storage contract: append stores a batch");
  expect_same_events(contract, "stored", read_all(fid, contract), concat(first, second));
}

TEST_F(StorageAppend, ReadOrdersBySeqWhenABatchIsShuffled) {
  const char *contract =
      "storage contract: read_events returns events in seq order, whatever order they came in";
  const std::string fid = fresh_fid();
  const auto events = make_events(fid, user_, 0, 8);
  KODO_ASSERT_OK(store().append(scrambled(events)), "storage contract: append stores a batch");
  expect_same_events(contract, "stored", read_all(fid, contract), events);
}

TEST_F(StorageAppend, SameBatchTwiceIsStoredOnce) {
  const char *contract = "storage contract: append is idempotent on (fid, seq)";
  const std::string fid = fresh_fid();
  const auto events = make_events(fid, user_, 0, 6);
  KODO_ASSERT_OK(store().append(events), "storage contract: append stores a batch");
  KODO_ASSERT_OK(store().append(events),
                 std::string(contract) + ": appending the same batch again succeeds");
  expect_same_events(contract, "stored", read_all(fid, contract), events);
  if (auto info = summary(fid, contract)) {
    EXPECT_EQ(info->event_count, 6)
        << contract << ": event_count of fid " << fid << " after appending the same 6 events twice";
  }
}

TEST_F(StorageAppend, OverlappingBatchesAreStoredOnce) {
  const char *contract =
      "storage contract: append is idempotent on (fid, seq): an event already stored is skipped";
  const std::string fid = fresh_fid();
  const auto first = make_events(fid, user_, 0, 6);
  auto retry = make_events(fid, user_, 3, 7);  // seqs 3..9; 3..5 are already stored
  for (auto &e : retry)
    if (e.seq <= 5) e.payload = "a later copy of seq " + std::to_string(e.seq);
  KODO_ASSERT_OK(store().append(first), "storage contract: append stores a batch");
  KODO_ASSERT_OK(store().append(retry),
                 std::string(contract) + ": a batch overlapping stored events succeeds");
  std::vector<Event> want = first;
  for (const auto &e : retry)
    if (e.seq > 5) want.push_back(e);
  expect_same_events(contract, "stored", read_all(fid, contract), want);
}

TEST_F(StorageAppend, BatchMayMixExecutions) {
  const char *contract = "storage contract: a batch may mix executions";
  const std::string other_user = fresh_name("user");
  const std::vector<std::pair<std::string, std::string>> executions = {
      {fresh_fid(), user_}, {fresh_fid(), other_user}, {fresh_fid(), user_}};
  std::vector<std::vector<Event>> per_execution;
  per_execution.reserve(executions.size());
  for (const auto &[fid, user] : executions) per_execution.push_back(make_events(fid, user, 0, 4));
  std::vector<Event> interleaved;
  for (size_t seq = 0; seq < 4; ++seq)
    for (const auto &events : per_execution) interleaved.push_back(events[seq]);
  KODO_ASSERT_OK(store().append(interleaved), std::string(contract) + ": append");
  for (size_t i = 0; i < executions.size(); ++i) {
    expect_same_events(contract, "stored", read_all(executions[i].first, contract),
                       per_execution[i]);
    if (auto info = summary(executions[i].first, contract)) {
      EXPECT_EQ(info->username, executions[i].second)
          << contract << ": get_execution names the user of fid " << executions[i].first;
    }
  }
}

TEST_F(StorageAppend, InvalidIdsAreRejected) {
  const std::string contract =
      "storage contract: an id that could escape a path is rejected with "
      "KODO_ERR_INVALID_ARGUMENT";
  for (const std::string bad : {"../etc", "a/b", ".."}) {
    auto events = make_events(fresh_fid(), user_, 0, 1);
    events[0].fid = bad;
    KODO_EXPECT_STATUS(store().append(events), KODO_ERR_INVALID_ARGUMENT,
                       std::string(contract).append(": append of fid '").append(bad) + "'");
  }
  EventQuery query;
  query.fid = "../etc";
  KODO_EXPECT_STATUS(store().read_events(query, nullptr), KODO_ERR_INVALID_ARGUMENT,
                     contract + ": read_events of fid '../etc'");
  KODO_EXPECT_STATUS(store().get_execution("../etc", "", nullptr), KODO_ERR_INVALID_ARGUMENT,
                     contract + ": get_execution of fid '../etc'");

  const std::string fid = fresh_fid();
  auto events = make_events(fid, "../etc", 0, 1);
  KODO_EXPECT_STATUS(store().append(events), KODO_ERR_INVALID_ARGUMENT,
                     contract + ": append by username '../etc'");
  KODO_EXPECT_STATUS(store().get_execution(fid, "", nullptr), KODO_ERR_NOT_FOUND,
                     "storage contract: a rejected append stores nothing: get_execution of "
                     "fid " +
                         fid);
}

// ---- Reading -------------------------------------------------------------------------------

TEST_F(StorageRead, AfterSeqPagesWithHasMore) {
  const char *contract = "storage contract: read_events pages by after_seq and limit";
  const std::string fid = fresh_fid();
  const auto events = make_events(fid, user_, 0, 25);
  KODO_ASSERT_OK(store().append(events), "storage contract: append stores a batch");

  struct Page {
    int64_t after_seq;
    size_t limit;
    int64_t first, count;
    bool has_more;
  };
  // The last two check the edges: exactly `limit` left means has_more is 0, and reading
  // past the end is an empty page, not an error.
  const Page pages[] = {{-1, 10, 0, 10, true},   {9, 10, 10, 10, true}, {19, 10, 20, 5, false},
                        {14, 10, 15, 10, false}, {24, 10, 0, 0, false}, {-1, 1, 0, 1, true}};
  for (const Page &p : pages) {
    const std::string what = std::string(contract) + " (after_seq " + std::to_string(p.after_seq) +
                             ", limit " + std::to_string(p.limit) + ")";
    EventQuery query;
    query.fid = fid;
    query.after_seq = p.after_seq;
    query.limit = p.limit;
    std::vector<Event> got;
    bool has_more = !p.has_more;
    KODO_EXPECT_OK(store().read_events(query, &got, &has_more), what);
    expect_same_events(
        what, "returned", got,
        std::vector<Event>(events.begin() + p.first, events.begin() + p.first + p.count));
    EXPECT_EQ(has_more, p.has_more)
        << what << ": has_more is non-zero exactly when more matching events follow";
  }
}

TEST_F(StorageRead, KindsFilterKeepsOnlyThoseKinds) {
  const char *contract = "storage contract: read_events keeps only the kinds asked for";
  const std::string fid = fresh_fid();
  const char *kinds[] = {"status", "stdout", "stderr", "meta"};
  std::vector<Event> events = make_events(fid, user_, 0, 12);
  std::vector<Event> stdio;
  for (auto &e : events) {
    e.kind = kinds[e.seq % 4];
    if (e.kind == "stdout" || e.kind == "stderr") stdio.push_back(e);
  }
  KODO_ASSERT_OK(store().append(events), "storage contract: append stores a batch");

  EventQuery query;
  query.fid = fid;
  query.kinds = {"stdout", "stderr"};
  query.limit = kReadAll;
  std::vector<Event> got;
  KODO_EXPECT_OK(store().read_events(query, &got), contract);
  expect_same_events(contract, "returned", got, stdio);

  // Paging through a filter: has_more speaks of matching events only.
  std::vector<Event> paged;
  query.limit = 2;
  for (int round = 0; round < 10; ++round) {
    std::vector<Event> page;
    bool has_more = false;
    KODO_EXPECT_OK(store().read_events(query, &page, &has_more), contract);
    paged.insert(paged.end(), page.begin(), page.end());
    if (!has_more || page.empty()) break;
    query.after_seq = page.back().seq;
  }
  expect_same_events(std::string(contract) + ", page by page with limit 2", "returned", paged,
                     stdio);

  query.kinds = {"final"};
  query.after_seq = -1;
  query.limit = kReadAll;
  got.clear();
  bool has_more = true;
  KODO_EXPECT_OK(store().read_events(query, &got, &has_more),
                 std::string(contract) + ": a kind with no events");
  EXPECT_TRUE(got.empty() && !has_more)
      << contract << ": a kind with no events gives an empty page, got " << got.size() << " events";
}

TEST_F(StorageRead, LargePayloadRoundTripsByteExact) {
  const char *contract = "storage contract: a 1 MiB payload round-trips byte-exact";
  const std::string fid = fresh_fid();
  auto events = make_events(fid, user_, 0, 3);
  events[1].payload = large_payload(1 << 20);
  KODO_ASSERT_OK(store().append(events), std::string(contract) + ": append");
  expect_same_events(contract, "stored", read_all(fid, contract), events);
}

TEST_F(StorageRead, Utf8PayloadRoundTripsByteExact) {
  const char *contract = "storage contract: a UTF-8 payload round-trips byte-exact";
  const std::string fid = fresh_fid();
  auto events = make_events(fid, user_, 0, 3);
  events[0].payload = utf8_sample();
  events[1].payload = "";
  events[2].payload = utf8_sample() + utf8_sample();
  KODO_ASSERT_OK(store().append(events), std::string(contract) + ": append");
  expect_same_events(contract, "stored", read_all(fid, contract), events);
}

TEST_F(StorageRead, UnknownFidIsNotFound) {
  KODO_ASSERT_OK(store().append(make_events(fresh_fid(), user_, 0, 2)),
                 "storage contract: append stores a batch");
  const std::string unknown = fresh_fid();
  EventQuery query;
  query.fid = unknown;
  KODO_EXPECT_STATUS(store().read_events(query, nullptr), KODO_ERR_NOT_FOUND,
                     "storage contract: read_events of an unknown fid is KODO_ERR_NOT_FOUND");
  KODO_EXPECT_STATUS(store().get_execution(unknown, "", nullptr), KODO_ERR_NOT_FOUND,
                     "storage contract: get_execution of an unknown fid is KODO_ERR_NOT_FOUND");
}

// ---- Summaries -----------------------------------------------------------------------------

TEST_F(StorageExecutions, GetExecutionSummarizes) {
  const char *contract =
      "storage contract: get_execution summarizes (status = payload of the last status event)";
  const std::string fid = fresh_fid();
  const double t0 = 1700000100.5;
  std::vector<Event> events = {status_event(fid, user_, 0, "starting", t0)};
  const char *middle_kinds[] = {"inputs", "meta", "status", "stdout", "status", "debug"};
  for (int64_t seq = 1; seq <= 6; ++seq) {
    Event e = make_events(fid, user_, seq, 1, middle_kinds[seq - 1], t0).front();
    if (seq == 3) e.payload = "running";
    if (seq == 5) e.payload = "finished";
    events.push_back(e);
  }
  // Two batches: the summary covers everything stored, not the last append.
  KODO_ASSERT_OK(store().append(std::vector<Event>(events.begin(), events.begin() + 4)),
                 "storage contract: append stores a batch");
  KODO_ASSERT_OK(store().append(std::vector<Event>(events.begin() + 4, events.end())),
                 "storage contract: append stores a batch");

  auto info = summary(fid, contract);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->fid, fid) << contract << ": fid";
  EXPECT_EQ(info->username, user_) << contract << ": username";
  EXPECT_EQ(info->status, "finished")
      << contract
      << ": status is the payload of the last status event (seq 5), even though "
         "a debug event follows it";
  EXPECT_EQ(info->event_count, 7) << contract << ": event_count";
  EXPECT_EQ(info->last_seq, 6) << contract << ": last_seq";
  EXPECT_NEAR(info->started_at, events.front().timestamp, 1e-5)
      << contract << ": started_at is the timestamp of the first event";
  EXPECT_NEAR(info->updated_at, events.back().timestamp, 1e-5)
      << contract << ": updated_at is the timestamp of the last event";

  std::vector<ExecutionInfo> page;
  KODO_EXPECT_OK(store().get_execution(fid, user_, &page),
                 std::string(contract) + ": get_execution naming the owner");
  EXPECT_EQ(page.size(), 1u) << "storage contract: get_execution returns a page of one";

  const std::string quiet = fresh_fid();
  KODO_ASSERT_OK(store().append(make_events(quiet, user_, 0, 2)),
                 "storage contract: append stores a batch");
  if (auto quiet_info = summary(quiet, contract)) {
    EXPECT_EQ(quiet_info->status, "")
        << contract << ": status is \"\" for an execution without status events";
  }
}

TEST_F(StorageExecutions, OtherUsersExecutionIsNotFound) {
  const std::string fid = fresh_fid();
  KODO_ASSERT_OK(store().append(make_events(fid, user_, 0, 2)),
                 "storage contract: append stores a batch");
  const std::string stranger = fresh_name("user");
  KODO_EXPECT_STATUS(store().get_execution(fid, stranger, nullptr), KODO_ERR_NOT_FOUND,
                     "storage contract: an execution is found only under the user who owns it: "
                     "get_execution of fid " +
                         fid + " as another user");
  EventQuery query;
  query.fid = fid;
  query.username = stranger;
  KODO_EXPECT_STATUS(store().read_events(query, nullptr), KODO_ERR_NOT_FOUND,
                     "storage contract: an execution is found only under the user who owns it: "
                     "read_events of fid " +
                         fid + " as another user");
}

// ---- Concurrency ---------------------------------------------------------------------------

TEST_F(StorageConcurrency, WritersAndReadersShareOneHandle) {
  const char *contract =
      "storage contract: readers run while writers write on one handle; every event is stored "
      "once";
  constexpr int kWriters = 4, kBatches = 25, kBatchSize = 8;
  std::vector<std::string> fids;
  fids.reserve(kWriters);
  for (int i = 0; i < kWriters; ++i) fids.push_back(fresh_fid());
  std::atomic<bool> writing{true};
  std::atomic<int> reads{0};

  std::vector<std::thread> writers, readers;
  for (int w = 0; w < kWriters; ++w)
    writers.emplace_back([&, w] {
      for (int b = 0; b < kBatches; ++b)
        KODO_EXPECT_OK(
            store().append(make_events(fids[w], user_, int64_t{b} * kBatchSize, kBatchSize)),
            std::string(contract) + ": append from writer " + std::to_string(w));
    });
  for (int r = 0; r < 2; ++r)
    readers.emplace_back([&, r] {
      for (size_t i = r; writing.load(); ++i) {
        const std::string &fid = fids[i % fids.size()];
        EventQuery query;
        query.fid = fid;
        query.limit = kReadAll;
        std::vector<Event> got;
        const Outcome outcome = store().read_events(query, &got);
        ++reads;
        if (outcome.status == KODO_ERR_NOT_FOUND) continue;  // nothing committed yet
        if (!outcome.ok()) {
          ADD_FAILURE() << contract << ": read_events while writing: got " << outcome;
          return;
        }
        // Batches commit whole and in order, so a reader sees a prefix 0..n-1.
        for (size_t k = 0; k < got.size(); ++k)
          if (got[k].seq != static_cast<int64_t>(k)) {
            ADD_FAILURE() << contract << ": a read during writes of fid " << fid
                          << " is not the committed prefix: " << describe_seqs(got);
            return;
          }
        std::vector<ExecutionInfo> page;
        const Outcome info = store().get_execution(fid, "", &page);
        if (!info.ok() && info.status != KODO_ERR_NOT_FOUND)
          ADD_FAILURE() << contract << ": get_execution while writing: got " << info;
      }
    });
  for (auto &t : writers) t.join();
  writing = false;
  for (auto &t : readers) t.join();

  for (int w = 0; w < kWriters; ++w)
    expect_same_events(contract, "stored", read_all(fids[w], contract),
                       make_events(fids[w], user_, 0, int64_t{kBatches} * kBatchSize));
}

// ---- ABI obligations -----------------------------------------------------------------------

// Every call below goes through CheckedStorage, which fails the case when a page or an
// error comes back without its release, or an error without message or matching code.
// This case makes sure each function's success and failure paths are walked at least once.
TEST_F(StorageAbi, EveryPageAndErrorCarriesARelease) {
  const std::string fid = fresh_fid();
  KODO_ASSERT_OK(store().append(make_events(fid, user_, 0, 3)),
                 "storage contract: append stores a batch");
  EventQuery query;
  query.fid = fid;
  std::vector<Event> events;
  KODO_EXPECT_OK(store().read_events(query, &events), "storage contract: read_events");
  query.fid = fresh_fid();
  KODO_EXPECT_STATUS(store().read_events(query, nullptr), KODO_ERR_NOT_FOUND,
                     "storage contract: read_events of an unknown fid is KODO_ERR_NOT_FOUND");
  std::vector<ExecutionInfo> page;
  KODO_EXPECT_OK(store().get_execution(fid, "", &page), "storage contract: get_execution");
  KODO_EXPECT_STATUS(store().get_execution(fresh_fid(), "", nullptr), KODO_ERR_NOT_FOUND,
                     "storage contract: get_execution of an unknown fid is KODO_ERR_NOT_FOUND");
  if (claims(KODO_STORAGE_CAP_LIST))
    KODO_EXPECT_OK(store().list_executions(user_, 0, 10, &page),
                   "storage contract: LIST is claimed, so list_executions works");
  if (claims(KODO_STORAGE_CAP_ARCHIVE))
    KODO_EXPECT_STATUS(store().archive_execution(fresh_fid()), KODO_ERR_NOT_FOUND,
                       "storage contract: archive_execution of an unknown fid is "
                       "KODO_ERR_NOT_FOUND");
}

// ---- Capabilities: exactly what is claimed --------------------------------------------------

struct StorageCapability {
  uint64_t bit;
  const char *function;
  bool present(const kodo_storage_api &api) const {
    if (bit == KODO_STORAGE_CAP_LIST) return api.list_executions != nullptr;
    if (bit == KODO_STORAGE_CAP_ARCHIVE) return api.archive_execution != nullptr;
    return api.purge != nullptr;
  }
};
const StorageCapability kStorageCapabilities[] = {{KODO_STORAGE_CAP_LIST, "list_executions"},
                                                  {KODO_STORAGE_CAP_ARCHIVE, "archive_execution"},
                                                  {KODO_STORAGE_CAP_PURGE, "purge"}};

TEST_F(StorageCapabilities, ClaimedCapabilitiesHaveTheirFunction) {
  for (const auto &cap : kStorageCapabilities)
    if (claims(cap.bit) && !cap.present(store().api()))
      ADD_FAILURE() << "storage contract: a claimed capability has its function: "
                    << capability_name(KODO_KIND_STORAGE, cap.bit) << " is claimed but "
                    << cap.function << " is NULL";
}

// The host's kodo::Storage refuses unclaimed calls itself, so these go to the raw table.
TEST_F(StorageCapabilities, UnclaimedCapabilitiesAreReportedNotSupported) {
  const std::string fid = fresh_fid();
  KODO_ASSERT_OK(store().append(make_events(fid, user_, 0, 2, "status", kAncient)),
                 "storage contract: append stores a batch");
  for (const auto &cap : kStorageCapabilities) {
    if (claims(cap.bit) || !cap.present(store().api())) continue;
    Outcome outcome;
    int64_t purged = 0;
    if (cap.bit == KODO_STORAGE_CAP_LIST) outcome = store().list_executions("", 0, 10, nullptr);
    if (cap.bit == KODO_STORAGE_CAP_ARCHIVE) outcome = store().archive_execution(fid);
    if (cap.bit == KODO_STORAGE_CAP_PURGE) outcome = store().purge(kPurgeCutoff, &purged);
    if (outcome.status != KODO_ERR_NOT_SUPPORTED)
      ADD_FAILURE() << "storage contract: an unclaimed capability is NULL or returns "
                       "KODO_ERR_NOT_SUPPORTED: "
                    << capability_name(KODO_KIND_STORAGE, cap.bit) << " is not claimed, but "
                    << cap.function << " returned " << outcome;
  }
}

// ---- LIST ----------------------------------------------------------------------------------

// Makes `count` executions of `user`, each newer than the one before (fid time prefix and
// timestamps), appended in a shuffled order so insertion order is not the answer.
std::vector<std::string> make_listed_executions(CheckedStorage &store, const std::string &user,
                                                int count, uint32_t base_seconds) {
  std::vector<std::string> fids;
  std::vector<Event> batch;
  for (int i = 0; i < count; ++i) {
    const uint32_t seconds = base_seconds + static_cast<uint32_t>(i) * 60;
    fids.push_back(object_id(seconds));
    auto events = make_events(fids.back(), user, 0, 2, "stdout", seconds);
    events[1].kind = "status";
    events[1].payload = i % 2 ? "finished" : "running";
    batch.insert(batch.end(), events.begin(), events.end());
  }
  KODO_EXPECT_OK(store.append(scrambled(batch)), "storage contract: append stores a batch");
  return fids;
}

TEST_F(StorageList, NewestFirstWithOffsetAndHasMore) {
  const char *contract = "storage contract: list_executions lists newest first, paged";
  const uint32_t base = static_cast<uint32_t>(now_seconds()) - 3600;
  const auto fids = make_listed_executions(store(), user_, 5, base);
  const std::vector<std::string> newest_first(fids.rbegin(), fids.rend());

  struct Page {
    size_t offset, limit;
    bool has_more;
  };
  const Page pages[] = {{0, 10, false}, {0, 2, true}, {2, 2, true}, {4, 2, false}, {5, 2, false}};
  for (const Page &p : pages) {
    const std::string what = std::string(contract) + " (offset " + std::to_string(p.offset) +
                             ", limit " + std::to_string(p.limit) + ")";
    std::vector<ExecutionInfo> page;
    bool has_more = !p.has_more;
    KODO_EXPECT_OK(store().list_executions(user_, p.offset, p.limit, &page, &has_more), what);
    std::vector<std::string> got, want;
    for (const auto &x : page) got.push_back(x.fid);
    for (size_t i = p.offset; i < std::min(newest_first.size(), p.offset + p.limit); ++i)
      want.push_back(newest_first[i]);
    EXPECT_EQ(got, want) << what;
    EXPECT_EQ(has_more, p.has_more)
        << what << ": has_more is non-zero exactly when more executions follow";
  }

  std::vector<ExecutionInfo> all;
  KODO_EXPECT_OK(store().list_executions(user_, 0, 10, &all), contract);
  for (const auto &x : all) {
    const size_t i = static_cast<size_t>(std::find(fids.begin(), fids.end(), x.fid) - fids.begin());
    if (i == fids.size()) continue;
    EXPECT_EQ(x.status, i % 2 ? "finished" : "running")
        << "storage contract: list_executions shows each execution's status: fid " << x.fid;
    EXPECT_EQ(x.username, user_) << contract << ": username of fid " << x.fid;
    EXPECT_EQ(x.event_count, 2) << contract << ": event_count of fid " << x.fid;
  }
}

TEST_F(StorageList, FiltersByUser) {
  const char *contract = "storage contract: list_executions filters by user";
  const uint32_t base = static_cast<uint32_t>(now_seconds()) - 7200;
  const std::string other = fresh_name("user");
  const auto mine = make_listed_executions(store(), user_, 3, base);
  const auto theirs = make_listed_executions(store(), other, 2, base + 30);

  std::vector<ExecutionInfo> page;
  KODO_EXPECT_OK(store().list_executions(other, 0, 10, &page), contract);
  std::vector<std::string> got;
  got.reserve(page.size());
  for (const auto &x : page) got.push_back(x.fid);
  EXPECT_EQ(got, std::vector<std::string>(theirs.rbegin(), theirs.rend()))
      << contract << ": only user " << other << "'s executions, newest first";

  // Every user: ours appear among the others, still newest first.
  std::vector<ExecutionInfo> everyone;
  KODO_EXPECT_OK(store().list_executions("", 0, 10000, &everyone),
                 std::string(contract) + " (no user: every user)");
  std::vector<std::string> ours_in_order;
  for (const auto &x : everyone)
    if (std::count(mine.begin(), mine.end(), x.fid) ||
        std::count(theirs.begin(), theirs.end(), x.fid))
      ours_in_order.push_back(x.fid);
  const std::vector<std::string> want = {mine[2], theirs[1], mine[1], theirs[0], mine[0]};
  EXPECT_EQ(ours_in_order, want) << contract
                                 << ": with no user, every user's executions, "
                                    "newest first";
}

// ---- ARCHIVE -------------------------------------------------------------------------------

TEST_F(StorageArchive, ArchivedExecutionVanishes) {
  const char *contract = "storage contract: an archived execution vanishes from get, read and list";
  const std::string archived = fresh_fid(), kept = fresh_fid();
  KODO_ASSERT_OK(
      store().append(concat(make_events(archived, user_, 0, 3), make_events(kept, user_, 0, 3))),
      "storage contract: append stores a batch");
  KODO_ASSERT_OK(store().archive_execution(archived),
                 "storage contract: ARCHIVE is claimed, so archive_execution works");
  KODO_EXPECT_STATUS(store().get_execution(archived, "", nullptr), KODO_ERR_NOT_FOUND,
                     std::string(contract) + ": get_execution");
  EventQuery query;
  query.fid = archived;
  KODO_EXPECT_STATUS(store().read_events(query, nullptr), KODO_ERR_NOT_FOUND,
                     std::string(contract) + ": read_events");
  if (claims(KODO_STORAGE_CAP_LIST)) {
    std::vector<ExecutionInfo> page;
    KODO_EXPECT_OK(store().list_executions(user_, 0, 10, &page), contract);
    std::vector<std::string> got;
    got.reserve(page.size());
    for (const auto &x : page) got.push_back(x.fid);
    EXPECT_EQ(got, std::vector<std::string>{kept}) << contract << ": list_executions";
  }
  expect_same_events("storage contract: archiving one execution leaves the others", "stored",
                     read_all(kept, contract), make_events(kept, user_, 0, 3));
}

TEST_F(StorageArchive, UnknownFidIsNotFound) {
  KODO_EXPECT_STATUS(store().archive_execution(fresh_fid()), KODO_ERR_NOT_FOUND,
                     "storage contract: archive_execution of an unknown fid is "
                     "KODO_ERR_NOT_FOUND");
}

// ---- PURGE ---------------------------------------------------------------------------------

TEST_F(StoragePurge, PurgesOnlyExecutionsOlderThanTheCutoff) {
  const char *contract =
      "storage contract: purge deletes exactly the executions whose last event is older than "
      "the cutoff, and counts them";
  // A server-backed store is shared by every case of a run: earlier cases may have left
  // executions older than the cutoff, so purge those first and count only ours.
  int64_t earlier = 0;
  KODO_ASSERT_OK(store().purge(kPurgeCutoff, &earlier),
                 "storage contract: PURGE is claimed, so purge works");
  const std::string old_fid = fresh_fid(), revived = fresh_fid(), recent = fresh_fid();
  std::vector<Event> batch = make_events(old_fid, user_, 0, 3, "stdout", kAncient);
  // Started long ago but its last event is recent: it stays.
  auto revived_events = make_events(revived, user_, 0, 3, "stdout", kAncient);
  revived_events[2].timestamp = now_seconds();
  batch = concat(batch, revived_events);
  batch = concat(batch, make_events(recent, user_, 0, 3, "stdout", now_seconds()));
  int64_t expected = 1;
  std::string archived_old;
  if (claims(KODO_STORAGE_CAP_ARCHIVE)) {
    archived_old = fresh_fid();  // "archived ones too"
    batch = concat(batch, make_events(archived_old, user_, 0, 2, "stdout", kAncient));
    ++expected;
  }
  KODO_ASSERT_OK(store().append(batch), "storage contract: append stores a batch");
  if (!archived_old.empty())
    KODO_ASSERT_OK(store().archive_execution(archived_old),
                   "storage contract: ARCHIVE is claimed, so archive_execution works");

  int64_t purged = -1;
  KODO_ASSERT_OK(store().purge(kPurgeCutoff, &purged),
                 "storage contract: PURGE is claimed, so purge works");
  EXPECT_EQ(purged, expected) << contract << ": the count purge returns"
                              << (archived_old.empty() ? "" : " (one of them archived)");
  KODO_EXPECT_STATUS(store().get_execution(old_fid, "", nullptr), KODO_ERR_NOT_FOUND,
                     std::string(contract) + ": get_execution of the purged fid " + old_fid);
  EventQuery query;
  query.fid = old_fid;
  KODO_EXPECT_STATUS(store().read_events(query, nullptr), KODO_ERR_NOT_FOUND,
                     std::string(contract) + ": read_events of the purged fid " + old_fid);
  expect_same_events(std::string(contract) + ": an execution with a recent last event stays",
                     "stored", read_all(revived, contract), revived_events);
  EXPECT_EQ(read_all(recent, contract).size(), 3u)
      << contract << ": a recent execution stays (fid " << recent << ")";

  KODO_EXPECT_OK(store().purge(kPurgeCutoff, &purged), "storage contract: purge again");
  EXPECT_EQ(purged, 0) << contract << ": a second purge with the same cutoff finds nothing";
}

}  // namespace
}  // namespace kodo::conformance
