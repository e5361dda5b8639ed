// transport_cases.cpp: the transport contract (kodo_transport_api in kodo_plugin.h, where
// every rule checked here is written). Each case opens a fresh transport and its own consumer
// group. Consumers join before anything is published, as the host's spooler does.
#include "conformance.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace kodo::conformance {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A claim time long enough that nothing is redelivered while a case runs: cases that count
// deliveries exactly use it (when the plugin declares claim_idle_ms).
OptionList no_redelivery() {
  return {{"claim_idle_ms", "600000"}};
}
// How long a case waits for events that should arrive; generous, because a loaded machine
// (sanitizers, CI) is slow, and the wait ends as soon as they are there.
constexpr milliseconds kArrivalWait{30000};
// Backpressure: publish at most this many events when the plugin declares no capacity.
constexpr size_t kBackpressureBound = 1000000;

std::vector<Event> events_of(const std::vector<Delivery> &deliveries) {
  std::vector<Event> events;
  events.reserve(deliveries.size());
  for (const auto &d : deliveries) events.push_back(d.event);
  return events;
}

std::vector<uint64_t> ids_of(const std::vector<Delivery> &deliveries) {
  std::vector<uint64_t> ids;
  ids.reserve(deliveries.size());
  for (const auto &d : deliveries) ids.push_back(d.id);
  return ids;
}

class TransportCase : public ::testing::Test {
 protected:
  void SetUp() override {
    if (target().kind() != KODO_KIND_TRANSPORT) GTEST_SKIP() << "not a transport plugin";
    group_ = fresh_name("group");
    user_ = fresh_name("user");
  }

  void open_transport(const OptionList &preferred = {}) {
    const OptionList options = options_for_new_handle(preferred);
    auto transport = std::make_unique<CheckedTransport>(options);
    if (!transport->open_outcome().ok())
      GTEST_FAIL() << "transport contract: open succeeds with valid options ("
                   << format_options(target(), options) << "): got " << transport->open_outcome();
    transport_ = std::move(transport);
  }

  void open_consumer(const std::string &name, std::unique_ptr<CheckedConsumer> *out) {
    KODO_ASSERT_OK(transport().open_consumer(group_, name, out),
                   "transport contract: consumer_open joins group " + group_ + " as " + name);
  }

  CheckedTransport &transport() { return *transport_; }

  // Publishes, waiting out a full transport (a retryable KODO_ERR_TIMEOUT) for up to a minute.
  void publish(const std::vector<Event> &events) {
    const auto deadline = Clock::now() + milliseconds(60000);
    for (;;) {
      const Outcome outcome = transport().publish(events, 1000);
      if (outcome.ok()) return;
      if (outcome.status != KODO_ERR_TIMEOUT || Clock::now() > deadline) {
        ADD_FAILURE() << "transport contract: publish takes a batch: got " << outcome;
        return;
      }
    }
  }

  // Reads until `expected` deliveries came or `wait` ran out. With `ack`, acks each batch
  // as it comes; without, checks that no delivery_id repeats among the unacked ones.
  std::vector<Delivery> receive(CheckedConsumer &consumer, size_t expected, milliseconds wait,
                                bool ack, size_t max = 100) {
    std::vector<Delivery> got;
    std::set<uint64_t> unacked;
    const auto deadline = Clock::now() + wait;
    while (got.size() < expected && Clock::now() < deadline) {
      std::vector<Delivery> batch;
      const Outcome outcome = consumer.read(max, 200, &batch);
      if (!outcome.ok()) {
        ADD_FAILURE() << "transport contract: read by consumer " << consumer.name()
                      << " works: got " << outcome;
        break;
      }
      for (const auto &d : batch)
        if (!ack && !unacked.insert(d.id).second)
          ADD_FAILURE() << "transport contract: a delivery_id is unique among a consumer's "
                           "unacked deliveries: consumer "
                        << consumer.name() << " got id " << d.id << " twice";
      if (ack && !batch.empty())
        KODO_EXPECT_OK(consumer.ack(ids_of(batch)),
                       "transport contract: ack by consumer " + consumer.name());
      got.insert(got.end(), batch.begin(), batch.end());
    }
    return got;
  }

  void expect_nothing_more(CheckedConsumer &consumer, const std::string &contract) {
    std::vector<Delivery> extra;
    KODO_EXPECT_OK(consumer.read(1000, 300, &extra),
                   "transport contract: read by consumer " + consumer.name());
    if (!extra.empty())
      ADD_FAILURE() << contract << ": consumer " << consumer.name() << " got " << extra.size()
                    << " more deliveries, first seq " << extra[0].event.seq << " of fid "
                    << extra[0].event.fid << " (delivery_count " << extra[0].count << ")";
  }

  std::unique_ptr<CheckedTransport> transport_;
  std::string group_, user_;
};

class TransportDelivery : public TransportCase {};
class TransportAck : public TransportCase {};
class TransportBackpressure : public TransportCase {};
class TransportConcurrency : public TransportCase {};
class TransportCapabilities : public TransportCase {};

// Capability cases: skipped, with the reason, when the plugin does not claim them.
template <uint64_t Capability, bool Claimed>
class TransportWhen : public TransportCase {
 protected:
  void SetUp() override {
    if (target().kind() == KODO_KIND_TRANSPORT && claims(Capability) != Claimed)
      GTEST_SKIP() << capability_name(KODO_KIND_TRANSPORT, Capability)
                   << (Claimed ? " not claimed" : " claimed");
    TransportCase::SetUp();
  }
};
class TransportRedelivery : public TransportWhen<KODO_TRANSPORT_CAP_REDELIVERY, true> {};
class TransportGroups : public TransportWhen<KODO_TRANSPORT_CAP_GROUPS, true> {};
class TransportWithoutGroups : public TransportWhen<KODO_TRANSPORT_CAP_GROUPS, false> {};
class TransportFinish : public TransportWhen<KODO_TRANSPORT_CAP_FINISH, true> {};
class TransportCrossProcess : public TransportWhen<KODO_TRANSPORT_CAP_CROSS_PROCESS, true> {};

// ---- Delivery ------------------------------------------------------------------------------

TEST_F(TransportDelivery, PublishReadAckKeepsPerExecutionOrder) {
  const char *contract =
      "transport contract: events of one execution are delivered in seq order, each once";
  ASSERT_NO_FATAL_FAILURE(open_transport(no_redelivery()));
  std::unique_ptr<CheckedConsumer> consumer;
  ASSERT_NO_FATAL_FAILURE(open_consumer("a", &consumer));
  const std::vector<std::string> fids = {fresh_fid(), fresh_fid(), fresh_fid()};
  std::vector<Event> all;
  for (int round = 0; round < 4; ++round)  // the executions' batches interleave
    for (const auto &fid : fids) {
      const auto batch = make_events(fid, user_, int64_t{round} * 5, 5);
      ASSERT_NO_FATAL_FAILURE(publish(batch));
      all.insert(all.end(), batch.begin(), batch.end());
    }
  const auto got = receive(*consumer, all.size(), kArrivalWait, true, 7);
  expect_same_events(contract, "delivered", events_of(got), all);
  for (const auto &d : got)
    if (d.count != 1) {
      ADD_FAILURE() << "transport contract: delivery_count is 1 on first delivery: seq "
                    << d.event.seq << " of fid " << d.event.fid << " came with " << d.count;
      break;
    }
  expect_nothing_more(*consumer, "transport contract: an acked delivery is not delivered again");
}

TEST_F(TransportDelivery, ReadTimesOutWithNothing) {
  const char *contract =
      "transport contract: read returns KODO_OK with count 0 when nothing came within block_ms";
  ASSERT_NO_FATAL_FAILURE(open_transport());
  std::unique_ptr<CheckedConsumer> consumer;
  ASSERT_NO_FATAL_FAILURE(open_consumer("a", &consumer));
  for (int32_t block_ms : {0, 200}) {
    std::vector<Delivery> got;
    KODO_EXPECT_OK(consumer->read(10, block_ms, &got),
                   std::string(contract) + " (block_ms " + std::to_string(block_ms) + ")");
    EXPECT_TRUE(got.empty()) << contract << ": got " << got.size() << " deliveries";
  }
}

TEST_F(TransportDelivery, LargeAndUtf8PayloadsArriveIntact) {
  const char *contract = "transport contract: 1 MiB and UTF-8 payloads arrive byte-exact";
  ASSERT_NO_FATAL_FAILURE(open_transport(no_redelivery()));
  std::unique_ptr<CheckedConsumer> consumer;
  ASSERT_NO_FATAL_FAILURE(open_consumer("a", &consumer));
  auto events = make_events(fresh_fid(), user_, 0, 4);
  events[0].payload = large_payload(1 << 20);
  events[1].payload = utf8_sample();
  events[2].payload = "";
  ASSERT_NO_FATAL_FAILURE(publish(events));
  expect_same_events(contract, "delivered",
                     events_of(receive(*consumer, events.size(), kArrivalWait, true)), events);
}

// ---- Ack -----------------------------------------------------------------------------------

TEST_F(TransportAck, RepeatedAndUnknownAcksAreFine) {
  const char *contract = "transport contract: ack ignores unknown ids, so it may be repeated";
  ASSERT_NO_FATAL_FAILURE(open_transport(no_redelivery()));
  std::unique_ptr<CheckedConsumer> consumer;
  ASSERT_NO_FATAL_FAILURE(open_consumer("a", &consumer));
  const auto events = make_events(fresh_fid(), user_, 0, 5);
  ASSERT_NO_FATAL_FAILURE(publish(events));
  const auto got = receive(*consumer, events.size(), kArrivalWait, false);
  expect_same_events("transport contract: published events are delivered", "delivered",
                     events_of(got), events);
  const auto ids = ids_of(got);
  KODO_EXPECT_OK(consumer->ack(ids), "transport contract: ack");
  KODO_EXPECT_OK(consumer->ack(ids), std::string(contract) + ": the same ids again");
  const uint64_t highest = ids.empty() ? 0 : *std::max_element(ids.begin(), ids.end());
  KODO_EXPECT_OK(consumer->ack({highest + 1000003, UINT64_MAX}),
                 std::string(contract) + ": ids never delivered");
  KODO_EXPECT_OK(consumer->ack({}), std::string(contract) + ": no ids at all");
  expect_nothing_more(*consumer, "transport contract: an acked delivery is not delivered again");
}

// ---- Redelivery ----------------------------------------------------------------------------

TEST_F(TransportRedelivery, UnackedDeliveriesGoToAnotherConsumer) {
  const char *contract =
      "transport contract: unacked deliveries are not lost: what a closed consumer never "
      "acked goes to another consumer of its group once idle";
  ASSERT_NO_FATAL_FAILURE(open_transport());
  int64_t claim_idle_ms = 30000;  // when the plugin declares no claim_idle_ms
  if (auto value = option_value(transport().options(), "claim_idle_ms"))
    claim_idle_ms = std::stoll(*value);
  const auto events = make_events(fresh_fid(), user_, 0, 6);
  {
    std::unique_ptr<CheckedConsumer> first;
    ASSERT_NO_FATAL_FAILURE(open_consumer("a", &first));
    ASSERT_NO_FATAL_FAILURE(publish(events));
    expect_same_events("transport contract: published events are delivered", "delivered",
                       events_of(receive(*first, events.size(), kArrivalWait, false)), events);
  }  // consumer a leaves without acking
  std::unique_ptr<CheckedConsumer> second;
  ASSERT_NO_FATAL_FAILURE(open_consumer("b", &second));
  const auto got =
      receive(*second, events.size(), milliseconds(claim_idle_ms) + kArrivalWait, false);
  expect_same_events(
      std::string(contract) + " (claim_idle_ms " + std::to_string(claim_idle_ms) + ")",
      "redelivered", events_of(got), events);
  for (const auto &d : got)
    if (d.count < 2) {
      ADD_FAILURE() << "transport contract: a redelivered event has delivery_count > 1: seq "
                    << d.event.seq << " of fid " << d.event.fid << " came with " << d.count;
      break;
    }
  KODO_EXPECT_OK(second->ack(ids_of(got)), "transport contract: ack of redelivered events");
  // Only worth waiting for when the claim time is short.
  if (claim_idle_ms <= 5000) {
    std::this_thread::sleep_for(milliseconds(claim_idle_ms + 100));
    expect_nothing_more(*second, "transport contract: an acked delivery is not redelivered");
  }
}

// ---- Groups --------------------------------------------------------------------------------

// Tracks who holds unacked deliveries of which execution, and each execution's next seq.
class HolderBook {
 public:
  HolderBook(const char *contract) : contract_(contract) {}

  void take(const std::string &consumer, const std::vector<Delivery> &deliveries) {
    for (const auto &d : deliveries) {
      const std::string &fid = d.event.fid;
      auto holder = holder_.find(fid);
      if (holder != holder_.end() && holder->second != consumer)
        ADD_FAILURE() << contract_ << ": consumer " << consumer << " got seq " << d.event.seq
                      << " of fid " << fid << " while consumer " << holder->second
                      << " held unacked deliveries of it";
      holder_[fid] = consumer;
      const int64_t want = next_seq_.count(fid) ? next_seq_[fid] : 0;
      if (d.event.seq != want)
        ADD_FAILURE() << "transport contract: per-execution order is kept across consumers: "
                      << consumer << " got seq " << d.event.seq << " of fid " << fid
                      << ", expected seq " << want;
      next_seq_[fid] = d.event.seq + 1;
      all_.push_back(d.event);
    }
  }
  void acked_all_of(const std::string &consumer) {
    for (auto it = holder_.begin(); it != holder_.end();)
      it = it->second == consumer ? holder_.erase(it) : std::next(it);
  }
  std::set<std::string> held_by(const std::string &consumer) const {
    std::set<std::string> fids;
    for (const auto &[fid, holder] : holder_)
      if (holder == consumer) fids.insert(fid);
    return fids;
  }
  const std::vector<Event> &all() const { return all_; }

 private:
  const char *contract_;
  std::map<std::string, std::string> holder_;
  std::map<std::string, int64_t> next_seq_;
  std::vector<Event> all_;
};

TEST_F(TransportGroups, ConsumersShareWithoutInterleavingAnExecution) {
  const char *contract =
      "transport contract: while one consumer holds unacked deliveries of an execution, no "
      "other consumer is given its later events";
  ASSERT_NO_FATAL_FAILURE(open_transport(no_redelivery()));
  std::unique_ptr<CheckedConsumer> a, b;
  ASSERT_NO_FATAL_FAILURE(open_consumer("a", &a));
  ASSERT_NO_FATAL_FAILURE(open_consumer("b", &b));
  constexpr int kExecutions = 6, kPerExecution = 10;
  std::vector<Event> all;
  for (int i = 0; i < kExecutions; ++i) {
    const auto batch = make_events(fresh_fid(), user_, 0, kPerExecution);
    ASSERT_NO_FATAL_FAILURE(publish(batch));
    all.insert(all.end(), batch.begin(), batch.end());
  }

  HolderBook book(contract);
  std::vector<Delivery> pending_a = receive(*a, 1, kArrivalWait, false, 5);
  book.take("a", pending_a);
  ASSERT_FALSE(pending_a.empty()) << "transport contract: published events are delivered";
  const size_t held = book.held_by("a").size();
  std::vector<Delivery> pending_b = receive(*b, 1, milliseconds(3000), false, 5);
  book.take("b", pending_b);
  if (held < kExecutions && pending_b.empty())
    ADD_FAILURE() << "transport contract: consumers of a group share the work (GROUPS): "
                     "consumer b got nothing while consumer a held "
                  << held << " of " << kExecutions << " executions";

  // Both read while both hold, then both ack; repeat until everything came.
  const auto deadline = Clock::now() + kArrivalWait;
  while (book.all().size() < all.size() && Clock::now() < deadline) {
    std::vector<Delivery> batch_a, batch_b;
    KODO_ASSERT_OK(a->read(5, 50, &batch_a), "transport contract: read by consumer a");
    book.take("a", batch_a);
    pending_a.insert(pending_a.end(), batch_a.begin(), batch_a.end());
    KODO_ASSERT_OK(b->read(5, 50, &batch_b), "transport contract: read by consumer b");
    book.take("b", batch_b);
    pending_b.insert(pending_b.end(), batch_b.begin(), batch_b.end());
    KODO_ASSERT_OK(a->ack(ids_of(pending_a)), "transport contract: ack by consumer a");
    book.acked_all_of("a");
    pending_a.clear();
    KODO_ASSERT_OK(b->ack(ids_of(pending_b)), "transport contract: ack by consumer b");
    book.acked_all_of("b");
    pending_b.clear();
  }
  expect_same_events("transport contract: a group's consumers together get every event once",
                     "delivered", book.all(), all);
  expect_nothing_more(*a, "transport contract: an acked delivery is not delivered again");
  expect_nothing_more(*b, "transport contract: an acked delivery is not delivered again");
}

TEST_F(TransportWithoutGroups, SecondConsumerOfAGroupIsRefused) {
  ASSERT_NO_FATAL_FAILURE(open_transport());
  std::unique_ptr<CheckedConsumer> first, second;
  ASSERT_NO_FATAL_FAILURE(open_consumer("a", &first));
  KODO_EXPECT_STATUS(transport().open_consumer(group_, "b", &second), KODO_ERR_NOT_SUPPORTED,
                     "transport contract: without GROUPS a second live consumer of one group "
                     "is refused");
  second.reset();
  first->close();
  KODO_EXPECT_OK(transport().open_consumer(group_, "b", &second),
                 "transport contract: once a group's consumer left, another may join");
}

// ---- Finish --------------------------------------------------------------------------------

TEST_F(TransportFinish, FinishAfterAckThenNewExecutionsWork) {
  ASSERT_NO_FATAL_FAILURE(open_transport(no_redelivery()));
  std::unique_ptr<CheckedConsumer> consumer;
  ASSERT_NO_FATAL_FAILURE(open_consumer("a", &consumer));
  const std::string finished = fresh_fid();
  const auto first = make_events(finished, user_, 0, 5);
  ASSERT_NO_FATAL_FAILURE(publish(first));
  expect_same_events("transport contract: published events are delivered", "delivered",
                     events_of(receive(*consumer, first.size(), kArrivalWait, true)), first);
  KODO_EXPECT_OK(transport().finish_execution(finished),
                 "transport contract: FINISH is claimed, so finish_execution works once every "
                 "event is acked");
  const auto later = make_events(fresh_fid(), user_, 0, 5);
  ASSERT_NO_FATAL_FAILURE(publish(later));
  expect_same_events("transport contract: after finish_execution, new executions still flow",
                     "delivered", events_of(receive(*consumer, later.size(), kArrivalWait, true)),
                     later);
  expect_nothing_more(*consumer, "transport contract: an acked delivery is not delivered again");
}

// ---- Cross process -------------------------------------------------------------------------

TEST_F(TransportCrossProcess, EventsPublishedByAnotherProcessArrive) {
  const char *contract =
      "transport contract: CROSS_PROCESS: a consumer gets every event a producer in another "
      "process published, once and in order, and closing that producer's handle loses none";
  ASSERT_NO_FATAL_FAILURE(open_transport(no_redelivery()));
  std::unique_ptr<CheckedConsumer> consumer;
  ASSERT_NO_FATAL_FAILURE(open_consumer("a", &consumer));
  std::vector<Event> all;
  for (int i = 0; i < 3; ++i) {
    const auto events = make_events(fresh_fid(), user_, 0, 100);
    all.insert(all.end(), events.begin(), events.end());
  }
  int report[2];
  ASSERT_EQ(pipe(report), 0);
  (void)std::fflush(nullptr);  // nothing buffered may be written twice, by both processes
  const pid_t child = fork();
  ASSERT_GE(child, 0) << "fork failed";
  if (child == 0) {
    // Another process: its own handle, opened as that process would, closed before it exits.
    close(report[0]);
    std::string problem;
    {
      CheckedTransport producer(transport().options());
      if (!producer.open_outcome().ok()) {
        std::ostringstream out;
        out << "open in the child process: " << producer.open_outcome();
        problem = out.str();
      } else {
        for (std::ptrdiff_t first = 0;
             first < static_cast<std::ptrdiff_t>(all.size()) && problem.empty(); first += 50) {
          const Outcome outcome = producer.publish(
              std::vector<Event>(all.begin() + first, all.begin() + first + 50), 30000);
          if (!outcome.ok()) {
            std::ostringstream out;
            out << "publish in the child process: " << outcome;
            problem = out.str();
          }
        }
      }
    }
    if (!problem.empty()) (void)!write(report[1], problem.data(), problem.size());
    _exit(problem.empty() ? 0 : 1);
  }
  close(report[1]);
  std::string problem;
  char buffer[512];
  for (ssize_t n; (n = ::read(report[0], buffer, sizeof buffer)) > 0;) problem.append(buffer, n);
  close(report[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << contract << ": the producing child process failed: "
      << (problem.empty() ? "it died (status " + std::to_string(status) + ")" : problem);
  expect_same_events(contract, "delivered",
                     events_of(receive(*consumer, all.size(), kArrivalWait, true)), all);
  expect_nothing_more(*consumer, "transport contract: an acked delivery is not delivered again");
}

// ---- Capabilities: exactly what is claimed --------------------------------------------------

TEST_F(TransportCapabilities, ClaimedCapabilitiesHaveTheirFunction) {
  ASSERT_NO_FATAL_FAILURE(open_transport());
  if (claims(KODO_TRANSPORT_CAP_FINISH) && !transport().api().finish_execution)
    ADD_FAILURE() << "transport contract: a claimed capability has its function: FINISH is "
                     "claimed but finish_execution is NULL";
}

// The host's kodo::Transport skips unclaimed calls itself, so this goes to the raw table.
TEST_F(TransportCapabilities, UnclaimedFinishIsReportedNotSupported) {
  if (claims(KODO_TRANSPORT_CAP_FINISH)) GTEST_SKIP() << "FINISH claimed";
  ASSERT_NO_FATAL_FAILURE(open_transport());
  if (!transport().api().finish_execution) return;
  KODO_EXPECT_STATUS(transport().finish_execution(fresh_fid()), KODO_ERR_NOT_SUPPORTED,
                     "transport contract: an unclaimed capability is NULL or returns "
                     "KODO_ERR_NOT_SUPPORTED: FINISH is not claimed, but finish_execution");
}

// ---- Backpressure --------------------------------------------------------------------------

TEST_F(TransportBackpressure, FullTransportTimesOutAndTakesAllOrNothing) {
  const char *contract =
      "transport contract: a full transport fails publish with a retryable KODO_ERR_TIMEOUT "
      "and takes none of the batch";
  ASSERT_NO_FATAL_FAILURE(open_transport(no_redelivery()));
  std::unique_ptr<CheckedConsumer> consumer;
  ASSERT_NO_FATAL_FAILURE(open_consumer("a", &consumer));

  // A batch size that does not divide the capacity, so the refused batch finds some room
  // and a transport that takes part of it shows. 499 is prime, for an unknown capacity.
  int64_t batch_size = 499;
  size_t bound = kBackpressureBound;
  if (auto capacity = option_value(transport().options(), "capacity")) {
    const int64_t held = std::stoll(*capacity);
    for (batch_size = 500; batch_size > 2 && held % batch_size == 0;) --batch_size;
    bound = static_cast<size_t>(held + batch_size);
  }
  constexpr size_t kExecutions = 8;
  std::vector<std::string> fids;
  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < kExecutions; ++i) {
    fids.push_back(fresh_fid());
    index_of[fids.back()] = i;
  }
  // Every batch that returned KODO_OK extends its execution by batch_size seqs, so an
  // execution's published events are exactly seqs 0..published[i]-1.
  std::vector<int64_t> published(kExecutions, 0);
  size_t total = 0;
  std::vector<Event> refused;
  for (size_t k = 0; total < bound; ++k) {
    const size_t i = k % kExecutions;
    auto batch = make_events(fids[i], user_, published[i], batch_size);
    const Outcome outcome = transport().publish(batch, 50);
    if (outcome.ok()) {
      published[i] += batch_size;
      total += static_cast<size_t>(batch_size);
      continue;
    }
    if (outcome.status != KODO_ERR_TIMEOUT) {
      GTEST_FAIL() << contract << ": publish into a full transport: got " << outcome;
    }
    if (!outcome.retryable)
      ADD_FAILURE() << contract << ": the KODO_ERR_TIMEOUT is not marked retryable";
    refused = std::move(batch);
    break;
  }
  if (refused.empty())
    std::cout << "[   NOTE   ] no backpressure within " << total
              << " events: the transport took them all\n";

  // Drain: every event published with KODO_OK arrives once, none of the refused batch.
  std::vector<std::vector<uint8_t>> seen(kExecutions);
  for (size_t i = 0; i < kExecutions; ++i) seen[i].resize(published[i] + batch_size);
  std::vector<int64_t> next(kExecutions, 0);
  size_t received = 0, problems = 0;
  auto problem = [&](const std::string &text) {
    if (++problems <= 5) ADD_FAILURE() << contract << ": " << text;
  };
  // Reads on past the expected count until a read comes back empty, so extras (a part of
  // the refused batch) are judged here too.
  const auto deadline = Clock::now() + kArrivalWait + milliseconds(total / 10);
  while (Clock::now() < deadline) {
    std::vector<Delivery> batch;
    KODO_ASSERT_OK(consumer->read(1000, received < total ? 200 : 300, &batch),
                   "transport contract: read while draining");
    if (batch.empty() && received >= total) break;
    for (const auto &d : batch) {
      const std::string where = "seq " + std::to_string(d.event.seq) + " of fid " + d.event.fid;
      auto it = index_of.find(d.event.fid);
      if (it == index_of.end() || d.event.seq < 0 ||
          d.event.seq >= static_cast<int64_t>(seen[it->second].size())) {
        problem(where + " was delivered but never published");
        continue;
      }
      const size_t i = it->second;
      if (d.event.seq >= published[i])
        problem(where + " belongs to the refused batch, yet it was delivered");
      if (++seen[i][d.event.seq] == 2) problem(where + " delivered twice");
      if (d.event.seq != next[i])
        problem("events out of seq order: " + where + " came when seq " + std::to_string(next[i]) +
                " was due");
      next[i] = d.event.seq + 1;
      ++received;
    }
    if (!batch.empty()) KODO_ASSERT_OK(consumer->ack(ids_of(batch)), "transport contract: ack");
  }
  for (size_t i = 0; i < kExecutions; ++i)
    for (int64_t seq = 0; seq < published[i]; ++seq)
      if (!seen[i][seq]) {
        problem("seq " + std::to_string(seq) + " of fid " + fids[i] +
                " was published with KODO_OK but never delivered");
        break;
      }
  if (problems > 5)
    ADD_FAILURE() << contract << ": and " << problems - 5 << " more problems like these";

  if (refused.empty()) return;
  KODO_EXPECT_OK(transport().publish(refused, 10000),
                 "transport contract: KODO_ERR_TIMEOUT is retryable: the refused batch is taken "
                 "once there is room");
  expect_same_events(
      "transport contract: a batch taken on retry is delivered whole, once", "delivered",
      events_of(receive(*consumer, refused.size(), kArrivalWait, true, 1000)), refused);
}

// ---- Concurrency ---------------------------------------------------------------------------

TEST_F(TransportConcurrency, ProducersAndConsumersDeliverEveryEventOnce) {
  const char *contract =
      "transport contract: with concurrent producers and consumers every event is delivered "
      "once, in seq order per execution";
  ASSERT_NO_FATAL_FAILURE(open_transport(no_redelivery()));
  // Without GROUPS a group has one consumer.
  const int consumer_count = claims(KODO_TRANSPORT_CAP_GROUPS) ? 2 : 1;
  std::vector<std::unique_ptr<CheckedConsumer>> consumers(consumer_count);
  for (int c = 0; c < consumer_count; ++c)
    ASSERT_NO_FATAL_FAILURE(
        open_consumer(std::string(1, static_cast<char>('a' + c)), &consumers[c]));

  constexpr int kProducers = 4, kExecutionsEach = 5, kEventsEach = 100, kBatch = 10;
  std::vector<std::vector<std::string>> fids(kProducers);
  std::vector<Event> all;
  for (auto &mine : fids)
    for (int i = 0; i < kExecutionsEach; ++i) {
      mine.push_back(fresh_fid());
      auto events = make_events(mine.back(), user_, 0, kEventsEach);
      all.insert(all.end(), events.begin(), events.end());
    }

  std::mutex book_mutex;
  HolderBook book(contract);
  std::atomic<size_t> delivered{0};
  std::vector<std::thread> threads;
  threads.reserve(kProducers + static_cast<size_t>(consumer_count));
  for (int p = 0; p < kProducers; ++p)
    threads.emplace_back([&, p] {
      for (int64_t first = 0; first < kEventsEach; first += kBatch)
        for (const auto &fid : fids[p]) publish(make_events(fid, user_, first, kBatch));
    });
  for (int c = 0; c < consumer_count; ++c)
    threads.emplace_back([&, c] {
      CheckedConsumer &consumer = *consumers[c];
      const auto deadline = Clock::now() + kArrivalWait * 2;
      while (delivered.load() < all.size() && Clock::now() < deadline) {
        std::vector<Delivery> batch;
        const Outcome outcome = consumer.read(64, 100, &batch);
        if (!outcome.ok()) {
          ADD_FAILURE() << contract << ": read by consumer " << consumer.name() << ": got "
                        << outcome;
          return;
        }
        {
          // Recorded before the ack, so per-execution order shows in the book. Holders are
          // released at once: the real ack races with the other consumer's read, so the
          // holder rule is checked by TransportGroups, where reads and acks take turns.
          std::lock_guard<std::mutex> lock(book_mutex);
          book.take(consumer.name(), batch);
          book.acked_all_of(consumer.name());
        }
        delivered += batch.size();
        if (!batch.empty())
          KODO_EXPECT_OK(consumer.ack(ids_of(batch)),
                         std::string(contract) + ": ack by consumer " + consumer.name());
      }
    });
  for (auto &t : threads) t.join();
  expect_same_events(contract, "delivered", book.all(), all);
  for (auto &consumer : consumers)
    expect_nothing_more(*consumer, "transport contract: an acked delivery is not delivered again");
}

}  // namespace
}  // namespace kodo::conformance
