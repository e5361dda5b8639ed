// The spooler against real plugins: everything arrives once, acks follow commits, a
// failing storage is retried with nothing lost, and stop drains the transport.
#include "core/spooler.hpp"
#include <kodo/host/error.hpp>
#include "core/ids.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <stdexcept>
#include <thread>

namespace kodo {
namespace {

std::unique_ptr<Transport> inproc(const OptionList &options = {}) {
  auto plugin = Plugin::load(INPROC_PLUGIN, "", KODO_KIND_TRANSPORT);
  PluginOptionSources sources;
  sources.command_line = options;
  return std::make_unique<Transport>(plugin, resolve_plugin_options(*plugin, sources));
}

std::unique_ptr<Storage> flaky_storage(int fail_first, const OptionList &more = {}) {
  auto plugin = Plugin::load(FLAKY_STORAGE_PLUGIN, "", KODO_KIND_STORAGE);
  PluginOptionSources sources;
  sources.command_line = {{"token", "t"}, {"fail_first", std::to_string(fail_first)}};
  sources.command_line.insert(sources.command_line.end(), more.begin(), more.end());
  return std::make_unique<Storage>(plugin, resolve_plugin_options(*plugin, sources));
}

std::vector<Event> run_events(const std::string &fid, int count) {
  std::vector<Event> events;
  for (int i = 0; i < count; ++i) {
    Event e;
    e.fid = fid;
    e.username = "alice";
    e.seq = i;
    e.timestamp = now_seconds();
    e.kind = i + 1 == count ? "status" : "agent";
    e.payload = i + 1 == count ? "finished" : "{\"i\":" + std::to_string(i) + "}";
    events.push_back(e);
  }
  return events;
}

void expect_all_stored_once(Storage &storage, const std::vector<std::string> &fids, int count) {
  for (const auto &fid : fids) {
    EventQuery query;
    query.fid = fid;
    query.limit = 100000;
    auto events = storage.read_events(query);
    ASSERT_EQ(events.size(), static_cast<size_t>(count)) << fid;
    for (int i = 0; i < count; ++i) EXPECT_EQ(events[static_cast<size_t>(i)].seq, i);
  }
}

SpoolerConfig fast_config(size_t consumers) {
  SpoolerConfig config;
  config.consumers = consumers;
  config.batch_size = 500;
  config.interval_s = 0.05;
  config.max_backoff_s = 0.1;
  return config;
}

TEST(Spooler, StoresEveryEventOnceWithSeveralConsumers) {
  auto transport = inproc();
  auto storage = flaky_storage(0);
  Metrics metrics;
  StoreNotifier notifier;
  Spooler spooler(fast_config(3), *transport, *storage, metrics, {&notifier});
  spooler.start();
  std::vector<std::string> fids;
  for (int x = 0; x < 20; ++x) {
    fids.push_back(new_fid());
    transport->publish(run_events(fids.back(), 300), 1000);
  }
  for (const auto &fid : fids) EXPECT_TRUE(notifier.wait_for_final(fid, 30)) << fid;
  spooler.stop_and_drain();
  expect_all_stored_once(*storage, fids, 300);
  EXPECT_EQ(metrics.events_stored.load(), 20u * 300u);
  EXPECT_EQ(metrics.executions_finished.load(), 20u);
}

TEST(Spooler, RetriesAFailingStorageAndLosesNothing) {
  auto transport = inproc();
  auto storage = flaky_storage(5);
  Metrics metrics;
  StoreNotifier notifier;
  Spooler spooler(fast_config(1), *transport, *storage, metrics, {&notifier});
  spooler.start();
  const std::string fid = new_fid();
  transport->publish(run_events(fid, 1000), 1000);
  EXPECT_TRUE(notifier.wait_for_final(fid, 30));
  spooler.stop_and_drain();
  EXPECT_EQ(metrics.store_failures.load(), 5u);
  EXPECT_EQ(metrics.storage_up.load(), 1);
  expect_all_stored_once(*storage, {fid}, 1000);
}

TEST(Spooler, StopDrainsWhatTheTransportHolds) {
  auto transport = inproc();
  auto storage = flaky_storage(0);
  Metrics metrics;
  std::vector<std::string> fids;
  for (int x = 0; x < 10; ++x) {
    fids.push_back(new_fid());
    transport->publish(run_events(fids.back(), 2000), 1000);
  }
  Spooler spooler(fast_config(2), *transport, *storage, metrics, {});
  spooler.start();
  spooler.stop_and_drain();  // at once: it must still store all 20,000
  expect_all_stored_once(*storage, fids, 2000);
}

// A batch storage refuses for good is split down to the refused event: every other event of
// every execution is stored, the refused one becomes an error event at its seq, and a metric
// counts it.
TEST(Spooler, ARefusedEventIsRecordedAndEverythingElseIsStored) {
  auto transport = inproc();
  auto storage = flaky_storage(0, {{"refuse_payload", "poison"}});
  Metrics metrics;
  StoreNotifier notifier;
  Spooler spooler(fast_config(2), *transport, *storage, metrics, {&notifier});
  spooler.start();
  std::vector<std::string> fids;
  for (int x = 0; x < 5; ++x) {
    fids.push_back(new_fid());
    auto events = run_events(fids.back(), 300);
    if (x == 2) events[123].payload = "poison";
    transport->publish(events, 1000);
  }
  for (const auto &fid : fids) EXPECT_TRUE(notifier.wait_for_final(fid, 30)) << fid;
  spooler.stop_and_drain();
  expect_all_stored_once(*storage, fids, 300);
  EventQuery query;
  query.fid = fids[2];
  query.after_seq = 122;
  query.limit = 1;
  const auto recorded = storage->read_events(query);
  ASSERT_EQ(recorded.size(), 1u);
  EXPECT_EQ(recorded[0].kind, "error");
  EXPECT_NE(recorded[0].payload.find("storage refused event seq 123 (kind 'agent'"),
            std::string::npos)
      << recorded[0].payload;
  EXPECT_NE(recorded[0].payload.find("has a payload this store refuses"), std::string::npos)
      << recorded[0].payload;
  EXPECT_EQ(metrics.events_refused.load(), 1u);
  EXPECT_EQ(metrics.events_stored.load(), 5u * 300u);
}

// An observer that throws (anything, not only kodo::Error) costs its round, not the thread:
// the next execution is still spooled by the same single consumer.
TEST(Spooler, ThreadsSurviveAnyException) {
  struct Throws : StoredObserver {
    std::atomic<int> calls{0};
    void on_stored(const kodo_event *const *, size_t, double) override {
      if (calls.fetch_add(1) == 0) throw std::runtime_error("observer failed (test)");
    }
  } throws;
  auto transport = inproc();
  auto storage = flaky_storage(0);
  Metrics metrics;
  StoreNotifier notifier;
  Spooler spooler(fast_config(1), *transport, *storage, metrics, {&throws, &notifier});
  spooler.start();
  const std::string first = new_fid();
  transport->publish(run_events(first, 50), 1000);
  for (int i = 0; i < 3000 && throws.calls.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(throws.calls.load(), 1) << "the first batch reached the observers";
  const std::string second = new_fid();
  transport->publish(run_events(second, 50), 1000);
  EXPECT_TRUE(notifier.wait_for_final(second, 30)) << "the thread went on after the exception";
  spooler.stop_and_drain();
  expect_all_stored_once(*storage, {first, second}, 50);
}

// Spools one execution into `storage` with a short drain timeout and stops: stop returns
// (ctest's timeout catches a hang), and nothing is stored or acked. With `after_a_failure`
// it stops only once an append has failed.
void expect_stop_within_drain_timeout(Storage &storage, bool after_a_failure) {
  auto transport = inproc();
  Metrics metrics;
  SpoolerConfig config = fast_config(1);
  config.drain_timeout_s = 0.3;
  Spooler spooler(config, *transport, storage, metrics, {});
  const std::string fid = new_fid();
  transport->publish(run_events(fid, 10), 1000);
  spooler.start();
  for (int i = 0; after_a_failure && i < 3000 && metrics.store_failures.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (after_a_failure) {
    EXPECT_GT(metrics.store_failures.load(), 0u) << "no append was tried";
  }
  spooler.stop_and_drain();
  EXPECT_FALSE(storage.get_execution(fid).has_value());
  EXPECT_EQ(metrics.events_stored.load(), 0u);
}

// A storage whose appends hang does not hold stop past the drain timeout: the spooler
// interrupts it.
TEST(Spooler, AHangingStorageIsInterruptedAtTheDrainTimeout) {
  auto storage = flaky_storage(0, {{"hang_appends", "true"}});
  ASSERT_TRUE(storage->can_interrupt());
  expect_stop_within_drain_timeout(*storage, false);
}

// Nor does a storage that fails every append retryably (the spooler keeps retrying): the
// retries are abandoned.
TEST(Spooler, AStorageThatAlwaysFailsDoesNotHoldStop) {
  auto storage = flaky_storage(std::numeric_limits<int>::max());
  expect_stop_within_drain_timeout(*storage, true);
}

// A call past its deadline is interrupted and fails with the plugin's retryable timeout.
TEST(Storage, AnAppendPastItsDeadlineIsInterrupted) {
  auto storage = flaky_storage(0, {{"hang_appends", "true"}});
  storage->set_call_timeouts(0.05, 0.05);
  try {
    storage->append(run_events(new_fid(), 1));
    FAIL() << "a hanging append returned";
  } catch (const Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_TIMEOUT);
    EXPECT_TRUE(e.retryable());
    EXPECT_NE(std::string(e.what()).find("append interrupted"), std::string::npos) << e.what();
  }
}

TEST(StoreNotifier, WakesOnNewEventsAndFinal) {
  StoreNotifier notifier;
  const std::string fid = new_fid();
  EXPECT_FALSE(notifier.wait_for_change(fid, -1, 0.01));
  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    Event e = run_events(fid, 1)[0];
    kodo_event view = e.view();
    const kodo_event *pointer = &view;
    notifier.on_stored(&pointer, 1, now_seconds());
  });
  EXPECT_TRUE(notifier.wait_for_change(fid, -1, 10));
  EXPECT_TRUE(notifier.wait_for_final(fid, 10));
  later.join();
}

}  // namespace
}  // namespace kodo
