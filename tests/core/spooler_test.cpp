// The spooler against real plugins: everything arrives once, acks follow commits, a
// failing storage is retried with nothing lost, and stop drains the transport.
#include "core/spooler.hpp"
#include "core/error.hpp"
#include "core/ids.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace kodo {
namespace {

std::unique_ptr<Transport> inproc(const OptionList &options = {}) {
  auto plugin = Plugin::load(INPROC_PLUGIN, "", KODO_KIND_TRANSPORT);
  PluginOptionSources sources;
  sources.command_line = options;
  return std::make_unique<Transport>(plugin, resolve_plugin_options(*plugin, sources));
}

std::unique_ptr<Storage> flaky_storage(int fail_first) {
  auto plugin = Plugin::load(FLAKY_STORAGE_PLUGIN, "", KODO_KIND_STORAGE);
  PluginOptionSources sources;
  sources.command_line = {{"token", "t"}, {"fail_first", std::to_string(fail_first)}};
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
