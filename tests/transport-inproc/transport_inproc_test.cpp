// Tests of kodo-transport-inproc.so through its C table, loaded the way the host loads it.
#include <kodo/kodo_plugin.h>

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Log lines the plugin writes through the host.
struct HostLog {
  std::mutex mutex;
  std::vector<std::string> lines;
  bool contains(const std::string &part) {
    std::lock_guard<std::mutex> lock(mutex);
    for (const auto &line : lines)
      if (line.find(part) != std::string::npos) return true;
    return false;
  }
};

HostLog &host_log() {
  static HostLog log;
  return log;
}

const kodo_host_api *host_api() {
  static const kodo_host_api api = {sizeof(kodo_host_api), KODO_ABI_VERSION, nullptr,
                                    [](void *, int32_t, const char *message) {
                                      std::lock_guard<std::mutex> lock(host_log().mutex);
                                      host_log().lines.emplace_back(message);
                                    }};
  return &api;
}

// Loads the module once per test process and answers its descriptor.
const kodo_plugin *plugin() {
  static const kodo_plugin *loaded = [] {
    void *handle = dlopen(KODO_INPROC_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!handle) throw std::runtime_error(std::string("dlopen: ") + dlerror());
    auto entry = reinterpret_cast<kodo_plugin_entry_fn>(dlsym(handle, KODO_ENTRY_SYMBOL));
    if (!entry) throw std::runtime_error("no " KODO_ENTRY_SYMBOL);
    const kodo_plugin *p = nullptr;
    uint32_t abi = 0;
    kodo_error error = KODO_ERROR_INIT;
    if (entry(KODO_ABI_VERSION, KODO_ABI_VERSION, host_api(), &p, &abi, &error) != KODO_OK)
      throw std::runtime_error("kodo_plugin_entry failed");
    return p;
  }();
  return loaded;
}

const kodo_transport_api &api() {
  return *plugin()->transport;
}

// A status with what the error said, the error released.
struct Result {
  kodo_status status = KODO_OK;
  bool retryable = false;
  std::string message;
  bool ok() const { return status == KODO_OK; }
};

Result result(kodo_status status, kodo_error &error) {
  Result r;
  r.status = status;
  if (status != KODO_OK) {
    r.retryable = error.retryable != 0;
    r.message = error.message ? error.message : "";
  }
  kodo_error_release(&error);
  return r;
}

struct TestEvent {
  std::string fid;
  int64_t seq;
  std::string payload;
};

std::vector<TestEvent> run_of(const std::string &fid, int64_t first, int64_t count) {
  std::vector<TestEvent> events;
  for (int64_t s = first; s < first + count; ++s)
    events.push_back({fid, s, "{\"line\": \"output line " + std::to_string(s) + "\"}"});
  return events;
}

// Borrowed C views of TestEvents, as publish takes them.
class EventViews {
 public:
  explicit EventViews(const std::vector<TestEvent> &events) {
    views_.reserve(events.size());
    for (const auto &e : events)
      views_.push_back(kodo_event{sizeof(kodo_event), e.fid.c_str(), "alice", e.seq, 1.7e9,
                                  "stdout", e.payload.c_str(), e.payload.size()});
    for (const auto &v : views_) pointers_.push_back(&v);
  }
  const kodo_event *const *data() const { return pointers_.data(); }
  size_t size() const { return pointers_.size(); }

 private:
  std::vector<kodo_event> views_;
  std::vector<const kodo_event *> pointers_;
};

// Deliveries of one read, copied out, with the batch released.
struct Delivered {
  uint64_t id;
  uint32_t count;
  std::string fid;
  int64_t seq;
  std::string payload;
};

class Consumer {
 public:
  Consumer(kodo_transport *transport, const std::string &group, const std::string &name) {
    kodo_error error = KODO_ERROR_INIT;
    Result r = result(api().consumer_open(transport, group.c_str(), name.c_str(), &handle_, &error),
                      error);
    if (!r.ok()) throw std::runtime_error("consumer_open: " + r.message);
  }
  ~Consumer() { close(); }
  Consumer(const Consumer &) = delete;
  Consumer &operator=(const Consumer &) = delete;

  kodo_consumer *handle() { return handle_; }
  void close() {
    if (handle_) api().consumer_close(handle_);
    handle_ = nullptr;
  }

  std::vector<Delivered> read(size_t max, int32_t block_ms) {
    kodo_delivery_batch batch{};
    batch.struct_size = sizeof batch;
    kodo_error error = KODO_ERROR_INIT;
    Result r = result(api().read(handle_, max, block_ms, &batch, &error), error);
    if (!r.ok()) throw std::runtime_error("read: " + r.message);
    std::vector<Delivered> out;
    for (size_t i = 0; i < batch.count; ++i) {
      const kodo_delivery &d = *batch.deliveries[i];
      out.push_back({d.delivery_id, d.delivery_count, d.event->fid, d.event->seq,
                     std::string(d.event->payload, d.event->payload_len)});
    }
    if (batch.release) batch.release(&batch);
    return out;
  }

  // Reads and acks at once, copying nothing: for measuring. Returns how many came.
  size_t read_and_ack(size_t max, int32_t block_ms) {
    kodo_delivery_batch batch{};
    batch.struct_size = sizeof batch;
    kodo_error error = KODO_ERROR_INIT;
    if (!result(api().read(handle_, max, block_ms, &batch, &error), error).ok())
      throw std::runtime_error("read failed");
    ids_.clear();
    for (size_t i = 0; i < batch.count; ++i) ids_.push_back(batch.deliveries[i]->delivery_id);
    if (batch.release) batch.release(&batch);
    if (!ack(ids_).ok()) throw std::runtime_error("ack failed");
    return ids_.size();
  }

  Result ack(const std::vector<uint64_t> &ids) {
    kodo_error error = KODO_ERROR_INIT;
    return result(api().ack(handle_, ids.data(), ids.size(), &error), error);
  }
  Result ack(const std::vector<Delivered> &deliveries) {
    std::vector<uint64_t> ids;
    for (const auto &d : deliveries) ids.push_back(d.id);
    return ack(ids);
  }

 private:
  kodo_consumer *handle_ = nullptr;
  std::vector<uint64_t> ids_;
};

using Options = std::map<std::string, std::string>;

class Transport {
 public:
  explicit Transport(const Options &options = {}) {
    std::vector<kodo_option> values;
    for (const auto &item : options)
      values.push_back(kodo_option{sizeof(kodo_option), item.first.c_str(), item.second.c_str()});
    std::vector<const kodo_option *> pointers;
    for (const auto &v : values) pointers.push_back(&v);
    kodo_error error = KODO_ERROR_INIT;
    Result r =
        result(api().open(pointers.data(), pointers.size(), host_api(), &handle_, &error), error);
    if (!r.ok()) throw std::runtime_error("open: " + r.message);
  }
  ~Transport() { api().close(handle_); }
  Transport(const Transport &) = delete;
  Transport &operator=(const Transport &) = delete;

  Result publish(const std::vector<TestEvent> &events, int32_t timeout_ms = 1000) {
    EventViews views(events);
    return publish(views, timeout_ms);
  }
  Result publish(const EventViews &views, int32_t timeout_ms) {
    kodo_error error = KODO_ERROR_INIT;
    return result(api().publish(handle_, views.data(), views.size(), timeout_ms, &error), error);
  }
  Result finish(const char *fid) {
    kodo_error error = KODO_ERROR_INIT;
    return result(api().finish_execution(handle_, fid, &error), error);
  }
  std::unique_ptr<Consumer> consumer(const std::string &group, const std::string &name) {
    return std::make_unique<Consumer>(handle_, group, name);
  }
  kodo_transport *handle() { return handle_; }

 private:
  kodo_transport *handle_ = nullptr;
};

std::vector<std::pair<std::string, int64_t>> keys(const std::vector<Delivered> &deliveries) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto &d : deliveries) out.emplace_back(d.fid, d.seq);
  return out;
}

TEST(TransportInproc, DescribesItself) {
  const kodo_plugin &p = *plugin();
  EXPECT_EQ(p.kind, KODO_KIND_TRANSPORT);
  EXPECT_STREQ(p.name, "inproc");
  EXPECT_EQ(p.capabilities,
            KODO_TRANSPORT_CAP_GROUPS | KODO_TRANSPORT_CAP_REDELIVERY | KODO_TRANSPORT_CAP_FINISH);
  ASSERT_NE(p.transport, nullptr);
  EXPECT_EQ(p.storage, nullptr);
  std::set<std::string> names;
  for (size_t i = 0; i < p.option_count; ++i) {
    names.insert(p.options[i]->name);
    EXPECT_EQ(p.options[i]->type, KODO_OPTION_INT);
  }
  EXPECT_EQ(names, (std::set<std::string>{"capacity", "claim_idle_ms"}));
}

TEST(TransportInproc, RejectsBadOptions) {
  EXPECT_THROW(Transport(Options{{"capacity", "0"}}), std::runtime_error);
  EXPECT_THROW(Transport(Options{{"claim_idle_ms", "soon"}}), std::runtime_error);
}

TEST(TransportInproc, KeepsOrderPerFid) {
  Transport t;
  auto c = t.consumer("spoolers", "one");
  for (int round = 0; round < 5; ++round) {
    std::vector<TestEvent> batch;
    for (const char *fid : {"fa", "fb", "fc"})
      for (const auto &e : run_of(fid, round * 4, 4)) batch.push_back(e);
    ASSERT_TRUE(t.publish(batch).ok());
  }
  std::map<std::string, int64_t> next;
  size_t total = 0;
  for (auto got = c->read(7, 0); !got.empty(); got = c->read(7, 0)) {
    EXPECT_LE(got.size(), 7u);
    for (const auto &d : got) {
      EXPECT_EQ(d.seq, next[d.fid]++) << d.fid;
      EXPECT_EQ(d.count, 1u);
      EXPECT_EQ(d.payload, "{\"line\": \"output line " + std::to_string(d.seq) + "\"}");
    }
    total += got.size();
    ASSERT_TRUE(c->ack(got).ok());
  }
  EXPECT_EQ(total, 60u);
  EXPECT_EQ(next, (std::map<std::string, int64_t>{{"fa", 20}, {"fb", 20}, {"fc", 20}}));
}

TEST(TransportInproc, ReadTakesWholeRunsFidByFid) {
  Transport t;
  auto c = t.consumer("spoolers", "one");
  std::vector<TestEvent> batch;
  for (int64_t s = 0; s < 3; ++s)
    for (const char *fid : {"fa", "fb"}) batch.push_back({fid, s, "x"});
  ASSERT_TRUE(t.publish(batch).ok());
  auto got = c->read(100, 0);
  using K = std::pair<std::string, int64_t>;
  EXPECT_EQ(keys(got),
            (std::vector<K>{{"fa", 0}, {"fa", 1}, {"fa", 2}, {"fb", 0}, {"fb", 1}, {"fb", 2}}));
}

TEST(TransportInproc, DeliveryIdsAreUniqueAndUnknownAcksIgnored) {
  Transport t;
  auto c = t.consumer("spoolers", "one");
  ASSERT_TRUE(t.publish(run_of("fa", 0, 10)).ok());
  auto first = c->read(4, 0);
  auto second = c->read(100, 0);
  std::set<uint64_t> ids;
  for (const auto &d : first) ids.insert(d.id);
  for (const auto &d : second) ids.insert(d.id);
  EXPECT_EQ(ids.size(), 10u);
  EXPECT_TRUE(c->ack(std::vector<uint64_t>{0, 999999, ~0ull}).ok());
  EXPECT_TRUE(c->ack(first).ok());
  EXPECT_TRUE(c->ack(first).ok());  // repeated: ignored
  EXPECT_TRUE(c->ack(second).ok());
  EXPECT_TRUE(c->read(100, 0).empty());
}

// Two consumers of one group: every fid goes to one of them at a time, in order, and both
// get work.
TEST(TransportInproc, TwoConsumersShareFidsWithoutInterleaving) {
  Transport t;
  constexpr int kFids = 20, kPerFid = 60;
  for (int round = 0; round < kPerFid / 10; ++round)
    for (int f = 0; f < kFids; ++f)
      ASSERT_TRUE(t.publish(run_of("f" + std::to_string(f), round * 10, 10)).ok());

  std::mutex mutex;
  std::map<std::string, int64_t> next;  // next seq expected, across both consumers
  std::map<std::string, int> holder;    // which consumer holds unacked events of a fid
  std::atomic<int> remaining{kFids * kPerFid};
  int got_by[2] = {0, 0};
  std::vector<std::string> failures;
  auto spool = [&](int me) {
    auto c = t.consumer("spoolers", "c" + std::to_string(me));
    while (remaining.load() > 0) {
      auto got = c->read(15, 20);
      if (got.empty()) continue;
      {
        std::lock_guard<std::mutex> lock(mutex);
        for (const auto &d : got) {
          auto h = holder.find(d.fid);
          if (h != holder.end() && h->second != me)
            failures.push_back(d.fid + " given to both consumers at once");
          holder[d.fid] = me;
          if (next[d.fid] != d.seq)
            failures.push_back(d.fid + " seq " + std::to_string(d.seq) + " out of order");
          next[d.fid] = d.seq + 1;
        }
        got_by[me] += static_cast<int>(got.size());
      }
      std::this_thread::sleep_for(milliseconds(1));  // "storing"
      {
        std::lock_guard<std::mutex> lock(mutex);
        for (const auto &d : got) holder.erase(d.fid);
      }
      if (!c->ack(got).ok()) {
        std::lock_guard<std::mutex> lock(mutex);
        failures.push_back("ack failed");
      }
      remaining -= static_cast<int>(got.size());
    }
  };
  std::thread a(spool, 0), b(spool, 1);
  a.join();
  b.join();
  EXPECT_TRUE(failures.empty()) << failures.front();
  EXPECT_EQ(got_by[0] + got_by[1], kFids * kPerFid);
  EXPECT_GT(got_by[0], 0);
  EXPECT_GT(got_by[1], 0);
  for (int f = 0; f < kFids; ++f) EXPECT_EQ(next["f" + std::to_string(f)], kPerFid);
}

TEST(TransportInproc, LaterEventsOfAHeldFidWaitForItsHolder) {
  Transport t;
  auto a = t.consumer("spoolers", "a");
  auto b = t.consumer("spoolers", "b");
  ASSERT_TRUE(t.publish(run_of("fa", 0, 3)).ok());
  auto held = a->read(100, 0);
  ASSERT_EQ(held.size(), 3u);
  ASSERT_TRUE(t.publish(run_of("fa", 3, 2)).ok());
  ASSERT_TRUE(t.publish(run_of("fb", 0, 2)).ok());
  using K = std::pair<std::string, int64_t>;
  EXPECT_EQ(keys(b->read(100, 0)), (std::vector<K>{{"fb", 0}, {"fb", 1}}));  // not fa
  ASSERT_TRUE(a->ack(held).ok());
  EXPECT_EQ(keys(b->read(100, 0)), (std::vector<K>{{"fa", 3}, {"fa", 4}}));
}

TEST(TransportInproc, OwnershipLastsUntilEveryDeliveryIsAckedInAnyOrder) {
  Transport t;
  auto a = t.consumer("spoolers", "a");
  auto b = t.consumer("spoolers", "b");
  ASSERT_TRUE(t.publish(run_of("fa", 0, 4)).ok());
  auto held = a->read(2, 0);  // fa 0, 1; fa 2, 3 stay queued but belong to a
  ASSERT_EQ(held.size(), 2u);
  EXPECT_TRUE(b->read(100, 0).empty());
  ASSERT_TRUE(a->ack(std::vector<uint64_t>{held[1].id}).ok());
  EXPECT_TRUE(b->read(100, 0).empty());  // fa 0 is still unacked
  ASSERT_TRUE(a->ack(std::vector<uint64_t>{held[0].id}).ok());
  using K = std::pair<std::string, int64_t>;
  EXPECT_EQ(keys(b->read(100, 0)), (std::vector<K>{{"fa", 2}, {"fa", 3}}));
}

TEST(TransportInproc, BatchStaysValidAfterCloseUntilReleased) {
  kodo_delivery_batch batch{};
  batch.struct_size = sizeof batch;
  {
    Transport t;
    auto c = t.consumer("spoolers", "one");
    ASSERT_TRUE(t.publish(run_of("fa", 0, 2)).ok());
    kodo_error error = KODO_ERROR_INIT;
    ASSERT_TRUE(result(api().read(c->handle(), 10, 0, &batch, &error), error).ok());
    ASSERT_EQ(batch.count, 2u);
  }
  ASSERT_NE(batch.release, nullptr);
  const kodo_delivery &d = *batch.deliveries[1];
  EXPECT_EQ(d.struct_size, sizeof(kodo_delivery));
  EXPECT_EQ(d.event->struct_size, sizeof(kodo_event));
  EXPECT_STREQ(d.event->fid, "fa");
  EXPECT_STREQ(d.event->username, "alice");
  EXPECT_STREQ(d.event->kind, "stdout");
  EXPECT_EQ(d.event->seq, 1);
  EXPECT_DOUBLE_EQ(d.event->timestamp, 1.7e9);
  EXPECT_EQ(std::string(d.event->payload, d.event->payload_len), "{\"line\": \"output line 1\"}");
  EXPECT_EQ(d.event->payload[d.event->payload_len], '\0');
  batch.release(&batch);
}

TEST(TransportInproc, AckFreesCapacity) {
  Transport t(Options{{"capacity", "10"}});
  auto c = t.consumer("spoolers", "one");
  ASSERT_TRUE(t.publish(run_of("fa", 0, 10)).ok());
  Result full = t.publish(run_of("fa", 10, 1), 0);
  EXPECT_EQ(full.status, KODO_ERR_TIMEOUT);
  auto got = c->read(100, 0);
  ASSERT_EQ(got.size(), 10u);
  // Delivered but unacked events still count.
  EXPECT_EQ(t.publish(run_of("fa", 10, 1), 0).status, KODO_ERR_TIMEOUT);
  ASSERT_TRUE(c->ack({got[0].id, got[1].id, got[2].id}).ok());
  EXPECT_TRUE(t.publish(run_of("fa", 10, 3), 0).ok());
  EXPECT_EQ(t.publish(run_of("fa", 13, 1), 0).status, KODO_ERR_TIMEOUT);
}

TEST(TransportInproc, FullQueueTimesOutTakingNothingThenSucceedsAfterAcks) {
  Transport t(Options{{"capacity", "5"}});
  auto c = t.consumer("spoolers", "one");
  ASSERT_TRUE(t.publish(run_of("fa", 0, 3)).ok());

  const auto start = Clock::now();
  Result r = t.publish(run_of("fb", 0, 3), 100);
  const auto waited = Clock::now() - start;
  EXPECT_EQ(r.status, KODO_ERR_TIMEOUT);
  EXPECT_TRUE(r.retryable);
  EXPECT_NE(r.message.find("capacity 5"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("batch of 3"), std::string::npos) << r.message;
  EXPECT_GE(waited, milliseconds(90));

  auto got = c->read(100, 0);
  using K = std::pair<std::string, int64_t>;
  EXPECT_EQ(keys(got), (std::vector<K>{{"fa", 0}, {"fa", 1}, {"fa", 2}}));  // none of fb

  // A producer blocked on a full transport goes on as soon as an ack makes room.
  Result late;
  std::thread producer([&] { late = t.publish(run_of("fb", 0, 3), 10000); });
  std::this_thread::sleep_for(milliseconds(50));
  ASSERT_TRUE(c->ack(got).ok());
  producer.join();
  EXPECT_TRUE(late.ok()) << late.message;
  EXPECT_EQ(keys(c->read(100, 0)), (std::vector<K>{{"fb", 0}, {"fb", 1}, {"fb", 2}}));
}

TEST(TransportInproc, OversizedBatchIsInvalidAtOnce) {
  Transport t(Options{{"capacity", "5"}});
  const auto start = Clock::now();
  Result r = t.publish(run_of("fa", 0, 6), 10000);
  EXPECT_EQ(r.status, KODO_ERR_INVALID_ARGUMENT);
  EXPECT_FALSE(r.retryable);
  EXPECT_NE(r.message.find("capacity"), std::string::npos) << r.message;
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
}

TEST(TransportInproc, RejectsMalformedEventsTakingNone) {
  Transport t;
  auto c = t.consumer("spoolers", "one");
  auto events = run_of("fa", 0, 3);
  events[2].fid = "../etc";
  Result r = t.publish(events);
  EXPECT_EQ(r.status, KODO_ERR_INVALID_ARGUMENT);
  EXPECT_NE(r.message.find("event 2"), std::string::npos) << r.message;

  kodo_event nameless{sizeof(kodo_event), nullptr, "alice", 0, 0, "stdout", "x", 1};
  const kodo_event *one[] = {&nameless};
  kodo_error error = KODO_ERROR_INIT;
  EXPECT_EQ(result(api().publish(t.handle(), one, 1, 0, &error), error).status,
            KODO_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(c->read(100, 0).empty());
}

TEST(TransportInproc, ClosedConsumersDeliveriesGoToAnotherAfterClaimIdle) {
  Transport t(Options{{"claim_idle_ms", "100"}});
  auto a = t.consumer("spoolers", "a");
  auto b = t.consumer("spoolers", "b");
  ASSERT_TRUE(t.publish(run_of("fa", 0, 5)).ok());
  auto by_a = a->read(100, 0);
  ASSERT_EQ(by_a.size(), 5u);
  a->close();
  ASSERT_TRUE(t.publish(run_of("fa", 5, 2)).ok());

  EXPECT_TRUE(b->read(100, 0).empty());  // not idle yet, and fa still belongs to a
  const auto start = Clock::now();
  auto by_b = b->read(100, 2000);
  EXPECT_GE(Clock::now() - start, milliseconds(50));
  ASSERT_EQ(by_b.size(), 7u);
  for (int64_t s = 0; s < 7; ++s) {
    EXPECT_EQ(by_b[s].fid, "fa");
    EXPECT_EQ(by_b[s].seq, s);
    EXPECT_EQ(by_b[s].count, s < 5 ? 2u : 1u);
  }
  EXPECT_TRUE(host_log().contains("redelivering 5 unacked events of execution fa"));
  ASSERT_TRUE(b->ack(by_b).ok());
  EXPECT_TRUE(b->read(100, 150).empty());  // acked: nothing comes back
}

TEST(TransportInproc, SlowHolderLosesIdleDeliveriesAndItsLateAckIsIgnored) {
  Transport t(Options{{"claim_idle_ms", "50"}, {"capacity", "4"}});
  auto a = t.consumer("spoolers", "a");
  auto b = t.consumer("spoolers", "b");
  ASSERT_TRUE(t.publish(run_of("fa", 0, 4)).ok());
  auto by_a = a->read(100, 0);
  auto by_b = b->read(100, 1000);
  ASSERT_EQ(by_b.size(), 4u);
  EXPECT_EQ(by_b[0].count, 2u);
  ASSERT_TRUE(a->ack(by_a).ok());  // stale: still held by b, so no room yet
  EXPECT_EQ(t.publish(run_of("fa", 4, 1), 0).status, KODO_ERR_TIMEOUT);
  ASSERT_TRUE(b->ack(by_b).ok());
  EXPECT_TRUE(t.publish(run_of("fa", 4, 1), 0).ok());
}

TEST(TransportInproc, BlockingReadReturnsNothingOnTimeout) {
  Transport t;
  auto c = t.consumer("spoolers", "one");
  const auto start = Clock::now();
  EXPECT_TRUE(c->read(100, 100).empty());
  EXPECT_GE(Clock::now() - start, milliseconds(90));
}

TEST(TransportInproc, BlockingReadWakesForAPublish) {
  Transport t;
  auto c = t.consumer("spoolers", "one");
  std::thread producer([&] {
    std::this_thread::sleep_for(milliseconds(50));
    t.publish(run_of("fa", 0, 1));
  });
  auto got = c->read(100, 5000);
  producer.join();
  EXPECT_EQ(got.size(), 1u);
}

TEST(TransportInproc, GroupsAreIndependent) {
  Transport t(Options{{"capacity", "4"}});
  auto spool = t.consumer("spoolers", "one");
  auto audit = t.consumer("audit", "one");
  ASSERT_TRUE(t.publish(run_of("fa", 0, 4)).ok());
  auto s = spool->read(100, 0);
  auto a = audit->read(100, 0);
  EXPECT_EQ(s.size(), 4u);
  EXPECT_EQ(keys(s), keys(a));
  ASSERT_TRUE(spool->ack(s).ok());
  // The audit group has not acked: the events are still held.
  EXPECT_EQ(t.publish(run_of("fa", 4, 1), 0).status, KODO_ERR_TIMEOUT);
  ASSERT_TRUE(audit->ack(a).ok());
  EXPECT_TRUE(t.publish(run_of("fa", 4, 1), 0).ok());
}

TEST(TransportInproc, EventsPublishedBeforeAnyGroupGoToTheFirstGroup) {
  Transport t;
  ASSERT_TRUE(t.publish(run_of("fa", 0, 3)).ok());
  auto c = t.consumer("spoolers", "one");
  EXPECT_EQ(c->read(100, 0).size(), 3u);
  auto late = t.consumer("audit", "one");  // a group made later starts from now
  EXPECT_TRUE(late->read(100, 0).empty());
}

TEST(TransportInproc, RefusesASecondOpenConsumerOfTheSameName) {
  Transport t;
  auto c = t.consumer("spoolers", "one");
  EXPECT_THROW(t.consumer("spoolers", "one"), std::runtime_error);
  EXPECT_NO_THROW(t.consumer("audit", "one"));
  c->close();
  EXPECT_NO_THROW(t.consumer("spoolers", "one"));
}

TEST(TransportInproc, FinishExecution) {
  Transport t;
  auto c = t.consumer("spoolers", "one");
  ASSERT_TRUE(t.publish(run_of("fa", 0, 2)).ok());
  auto got = c->read(100, 0);
  EXPECT_TRUE(t.finish("fa").ok());  // before the ack: the events stay until acked
  ASSERT_TRUE(c->ack(got).ok());
  EXPECT_TRUE(t.finish("never-seen").ok());
  EXPECT_EQ(t.finish("../x").status, KODO_ERR_INVALID_ARGUMENT);
  // The fid may be published again afterwards; it starts afresh.
  ASSERT_TRUE(t.publish(run_of("fa", 2, 1)).ok());
  EXPECT_EQ(c->read(100, 0).size(), 1u);
}

TEST(TransportInproc, ManyProducersTwoConsumersDeliverEveryEventExactlyOnce) {
  Transport t(Options{{"capacity", "1000"}});
  constexpr int kProducers = 4, kFidsEach = 3, kPerFid = 3000;
  constexpr int kTotal = kProducers * kFidsEach * kPerFid;

  std::vector<std::thread> producers;
  std::atomic<int> publish_failures{0};
  for (int p = 0; p < kProducers; ++p)
    producers.emplace_back([&, p] {
      std::mt19937 random(p);
      std::vector<int64_t> sent(kFidsEach, 0);
      for (int done = 0; done < kFidsEach;) {
        const int f = static_cast<int>(random() % kFidsEach);
        if (sent[f] == kPerFid) continue;
        const int64_t n = std::min<int64_t>(1 + random() % 200, kPerFid - sent[f]);
        auto batch = run_of("p" + std::to_string(p) + "f" + std::to_string(f), sent[f], n);
        if (!t.publish(batch, 10000).ok()) ++publish_failures;
        sent[f] += n;
        if (sent[f] == kPerFid) ++done;
      }
    });

  std::mutex mutex;
  std::map<std::string, int64_t> next;
  std::map<std::pair<std::string, int64_t>, int> seen;
  std::atomic<int> acked{0};
  std::atomic<int> order_errors{0};
  auto spool = [&](const char *name) {
    auto c = t.consumer("spoolers", name);
    while (acked.load() < kTotal) {
      auto got = c->read(256, 50);
      {
        std::lock_guard<std::mutex> lock(mutex);
        for (const auto &d : got) {
          if (next[d.fid] != d.seq || d.count != 1) ++order_errors;
          next[d.fid] = d.seq + 1;
          ++seen[{d.fid, d.seq}];
        }
      }
      if (!got.empty() && c->ack(got).ok()) acked += static_cast<int>(got.size());
    }
  };
  std::thread a(spool, "a"), b(spool, "b");
  for (auto &p : producers) p.join();
  a.join();
  b.join();

  EXPECT_EQ(publish_failures.load(), 0);
  EXPECT_EQ(order_errors.load(), 0);
  EXPECT_EQ(acked.load(), kTotal);
  EXPECT_EQ(seen.size(), static_cast<size_t>(kTotal));
  for (const auto &item : seen) ASSERT_EQ(item.second, 1) << item.first.first;
}

// Prints publish -> read -> ack throughput: a figure, never a pass/fail criterion.
TEST(TransportInproc, Throughput) {
  constexpr int kBatch = 1000, kBatches = 2000, kFids = 64;
  std::vector<std::vector<TestEvent>> runs;
  for (int f = 0; f < kFids; ++f) runs.push_back(run_of("fid-" + std::to_string(f), 0, kBatch));
  std::vector<EventViews> views;
  for (const auto &run : runs) views.emplace_back(run);

  Transport t;
  auto c = t.consumer("spoolers", "one");
  const auto start = Clock::now();
  std::thread producer([&] {
    for (int i = 0; i < kBatches; ++i)
      if (!t.publish(views[i % kFids], 10000).ok()) return;  // the reader then sees a gap
  });
  size_t received = 0;
  while (received < static_cast<size_t>(kBatch) * kBatches) {
    const size_t n = c->read_and_ack(kBatch, 2000);
    if (n == 0) break;
    received += n;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  producer.join();
  ASSERT_EQ(received, static_cast<size_t>(kBatch) * kBatches);
  std::printf(
      "[ inproc   ] %zu events in %.3f s: %.0f events/s (publish -> read -> ack, "
      "batches of %d, 1 producer, 1 consumer)\n",
      received, seconds, received / seconds, kBatch);
}

}  // namespace
