// The Redis transport against a real redis-server (started per test on its own loopback port):
// an outage fills the producer's buffer and then fails clearly with nothing lost, trimming
// never drops an entry that is not acknowledged, reads record where each stream is stored and
// a takeover resumes there, a finished execution's stream goes after its
// grace, and the password never shows.
#include <kodo/host/error.hpp>
#include "core/ids.hpp"
#include "core/transport.hpp"
#include "redis_server.hpp"

#include <gtest/gtest.h>

#include <map>
#include <thread>

namespace kodo {
namespace {

using testing::RedisServer;
using Clock = std::chrono::steady_clock;

class RedisTransportTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NO_THROW(redis_.start()); }
  void TearDown() override {
    if (HasFailure()) std::cerr << "--- redis-server log ---\n" << redis_.log();
  }

  std::unique_ptr<Transport> open(OptionList options = {}) {
    auto plugin = Plugin::load(REDIS_PLUGIN, "", KODO_KIND_TRANSPORT);
    options.emplace_back("url", redis_.url());
    PluginOptionSources sources;
    sources.command_line = options;
    return std::make_unique<Transport>(plugin, resolve_plugin_options(*plugin, sources));
  }

  static std::vector<Event> events(const std::string &fid, int64_t first, int64_t count) {
    std::vector<Event> out;
    for (int64_t seq = first; seq < first + count; ++seq) {
      Event e;
      e.fid = fid;
      e.username = "alice";
      e.seq = seq;
      e.timestamp = now_seconds();
      e.kind = "stdout";
      e.payload = "line " + std::to_string(seq);
      out.push_back(std::move(e));
    }
    return out;
  }

  // Reads (and acks, when `ack`) until `count` deliveries came or a minute passed.
  static std::vector<std::pair<uint64_t, Event>> receive(Consumer &consumer, size_t count,
                                                         bool ack) {
    std::vector<std::pair<uint64_t, Event>> got;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (got.size() < count && Clock::now() < deadline) {
      DeliveryBatch batch;
      try {
        consumer.read(count - got.size(), 200, batch);
      } catch (const Error &e) {  // Redis restarting: retried, as the spooler does
        if (!e.retryable()) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      std::vector<uint64_t> ids;
      for (size_t i = 0; i < batch.size(); ++i) {
        got.emplace_back(batch[i].delivery_id, Event::copy(*batch[i].event));
        ids.push_back(batch[i].delivery_id);
      }
      if (ack) consumer.ack(ids.data(), ids.size());
    }
    return got;
  }

  std::string key(const std::string &fid) const { return "kodo:events:" + fid; }

  RedisServer redis_;
};

TEST_F(RedisTransportTest, OutageFillsTheBufferThenPublishFailsClearlyAndNothingIsLost) {
  auto transport = open({{"buffer_events", "300"}, {"connect_timeout_ms", "200"}});
  auto consumer = transport->open_consumer("kodo-spooler", "c1");
  const std::string fid = new_fid();
  transport->publish(events(fid, 0, 100), 1000);
  ASSERT_EQ(receive(*consumer, 100, true).size(), 100u);

  redis_.stop();
  // Redis is away: the buffer takes what fits, then publish waits its timeout and refuses.
  transport->publish(events(fid, 100, 150), 1000);
  transport->publish(events(fid, 250, 150), 1000);
  try {
    transport->publish(events(fid, 400, 100), 300);
    FAIL() << "publish succeeded with Redis away and the buffer full";
  } catch (const Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_TIMEOUT) << e.what();
    EXPECT_TRUE(e.retryable()) << e.what();
    const std::string message = e.what();
    EXPECT_NE(message.find("unreachable"), std::string::npos) << message;
    EXPECT_NE(message.find("nothing of this batch was taken"), std::string::npos) << message;
    EXPECT_EQ(message.find(RedisServer::kPassword), std::string::npos) << message;
  }

  redis_.start();
  // Everything accepted arrives once, in order; the refused batch never does.
  auto got = receive(*consumer, 300, true);
  ASSERT_EQ(got.size(), 300u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].second.seq, int64_t(100 + i));
  DeliveryBatch extra;
  consumer->read(100, 500, extra);
  EXPECT_EQ(extra.size(), 0u) << "seq " << extra[0].event->seq << " arrived: it was refused";
  const auto metrics = transport->metrics();
  double refused = -1, reconnects = -1;
  for (const auto &m : metrics) {
    if (m.name == "producer_refused_events_total") refused = m.value;
    if (m.name == "producer_reconnects_total") reconnects = m.value;
  }
  EXPECT_EQ(refused, 100);
  EXPECT_GE(reconnects, 1);
}

TEST_F(RedisTransportTest, TrimmingNeverDropsAnEntryThatIsNotAcknowledged) {
  auto transport = open({{"max_stream_len", "40"}, {"claim_idle_ms", "400"}});
  auto consumer = transport->open_consumer("kodo-spooler", "c1");
  const std::string fid = new_fid();
  transport->publish(events(fid, 0, 400), 5000);
  // Take 300 and ack only the first 100: seqs 100..299 are read but not acknowledged.
  auto got = receive(*consumer, 300, false);
  ASSERT_EQ(got.size(), 300u);
  std::vector<uint64_t> first;
  for (size_t i = 0; i < 100; ++i) first.push_back(got[i].first);
  consumer->ack(first.data(), first.size());
  // Several upkeeps run (each read runs one when due); each may trim.
  for (int i = 0; i < 10; ++i) {
    DeliveryBatch none;
    consumer->read(0, 0, none);
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
  }
  const std::string oldest = redis_.cli({"XRANGE", key(fid), "-", "+", "COUNT", "1"});
  EXPECT_NE(oldest.find("line "), std::string::npos) << oldest;
  const int length = std::stoi(redis_.cli({"XLEN", key(fid)}));
  EXPECT_GE(length, 300) << "unacknowledged or unread entries were trimmed";
  EXPECT_LT(length, 400) << "acknowledged entries past max_stream_len were kept";
  // The oldest entry left is at or before the first unacknowledged one (seq 100).
  const auto at = oldest.find("line ");
  EXPECT_LE(std::stoi(oldest.substr(at + 5)), 100) << oldest;
  // The unacknowledged ones are still whole: another consumer gets every one of them.
  consumer.reset();
  auto other = transport->open_consumer("kodo-spooler", "c2");
  auto rest = receive(*other, 300, true);
  ASSERT_EQ(rest.size(), 300u);
  for (size_t i = 0; i < rest.size(); ++i) EXPECT_EQ(rest[i].second.seq, int64_t(100 + i));
}

// Event streams are read without per-entry pending lists (NOACK): what is stored is recorded as
// a position per stream, and a consumer that took over reads again from there, so what the
// silent one read and did not store comes again, marked as redelivered.
TEST_F(RedisTransportTest, ReadsRecordWhereEachStreamIsStoredAndATakeoverResumesThere) {
  auto transport = open({{"claim_idle_ms", "300"}});
  auto consumer = transport->open_consumer("kodo-spooler", "c1");
  const std::string fid = new_fid();
  transport->publish(events(fid, 0, 50), 1000);
  ASSERT_EQ(receive(*consumer, 50, true).size(), 50u);
  DeliveryBatch none;
  consumer->read(10, 0, none);  // sends the acks with its read
  const std::string last = redis_.cli({"XREVRANGE", key(fid), "+", "-", "COUNT", "1"});
  const std::string stored = redis_.cli({"HGET", "kodo:events:#stored:kodo-spooler", fid});
  ASSERT_FALSE(stored.empty());
  EXPECT_EQ(last.substr(0, last.find('\n')), stored);
  EXPECT_EQ(redis_.cli({"XPENDING", key(fid), "kodo-spooler", "-", "+", "10"}), "")
      << "event entries were left pending";

  // c1 reads 20 more and never acknowledges them, then falls silent.
  transport->publish(events(fid, 50, 20), 1000);
  ASSERT_EQ(receive(*consumer, 20, false).size(), 20u);
  auto other = open({{"claim_idle_ms", "300"}});
  auto c2 = other->open_consumer("kodo-spooler", "c2");
  auto again = receive(*c2, 20, true);
  ASSERT_EQ(again.size(), 20u);
  for (size_t i = 0; i < again.size(); ++i) EXPECT_EQ(again[i].second.seq, int64_t(50 + i));
  double claimed = -1;
  for (const auto &m : other->metrics())
    if (m.name == "claimed_entries_total" && m.labels.find("c2") != std::string::npos)
      claimed = m.value;
  EXPECT_EQ(claimed, 20);
}

// A read whose reply a lost connection swallowed still moved the group past its entries; the
// reconnected consumer sets the group back. When Redis cannot take that yet (LOADING after a
// restart; here READONLY, as a replica), the consumer must not read on past them (it did:
// RedisRestartMidRunLosesNothing lost seqs 3..203 of two runs under load).
TEST_F(RedisTransportTest, AReconnectRedisCannotServeYetSkipsNothing) {
  auto transport = open();
  auto consumer = transport->open_consumer("kodo-spooler", "c1");
  const std::string fid = new_fid();
  transport->publish(events(fid, 0, 10), 1000);
  ASSERT_EQ(receive(*consumer, 10, true).size(), 10u);
  transport->publish(events(fid, 10, 20), 1000);
  // The lost read: the group moves past seqs 10..29, and the consumer's connection drops.
  redis_.cli({"XREADGROUP", "GROUP", "kodo-spooler", "c1", "COUNT", "100", "NOACK", "STREAMS",
              key(fid), ">"});
  redis_.cli({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
  redis_.cli({"REPLICAOF", "127.0.0.1", "1"});  // writes answer READONLY, reads are served
  for (int i = 0; i < 5; ++i) {
    DeliveryBatch batch;
    try {
      consumer->read(20, 100, batch);
    } catch (const Error &e) {
      ASSERT_TRUE(e.retryable()) << e.what();
    }
    EXPECT_EQ(batch.size(), 0u) << "read while its streams could not be set back";
  }
  redis_.cli({"REPLICAOF", "NO", "ONE"});
  const auto got = receive(*consumer, 20, true);
  ASSERT_EQ(got.size(), 20u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].second.seq, int64_t(10 + i));
}

TEST_F(RedisTransportTest, AFinishedExecutionsStreamGoesAfterItsGrace) {
  auto transport = open({{"stream_grace_ms", "300"}});
  auto consumer = transport->open_consumer("kodo-spooler", "c1");
  const std::string fid = new_fid(), other = new_fid();
  transport->publish(events(fid, 0, 20), 1000);
  transport->publish(events(other, 0, 20), 1000);
  ASSERT_EQ(receive(*consumer, 40, true).size(), 40u);
  transport->finish_execution(fid);
  // Upkeep deletes it once the grace has passed; keep the consumer reading until then.
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (redis_.cli({"EXISTS", key(fid)}) != "0" && Clock::now() < deadline) {
    DeliveryBatch none;
    consumer->read(10, 100, none);
  }
  EXPECT_EQ(redis_.cli({"EXISTS", key(fid)}), "0");
  EXPECT_EQ(redis_.cli({"HEXISTS", "kodo:events:#executions", fid}), "0");
  EXPECT_EQ(redis_.cli({"EXISTS", key(other)}), "1") << "an unfinished execution lost its stream";
  EXPECT_EQ(redis_.cli({"XLEN", "kodo:events:#registry"}), "1")
      << "the finished execution's announcement is still there";
}

TEST_F(RedisTransportTest, TheForksUnannouncedStreamsAreFoundNumberedAndGetTheirUserFromMeta) {
  auto transport = open({{"claim_idle_ms", "300"}});
  auto c1 = transport->open_consumer("kodo-spooler", "c1");
  const std::string fid = new_fid();
  // Exactly as the fork's producer writes (kodosumi/transport.py, RedisStreamProducer._xadd):
  // str() of each value, three fields, MAXLEN ~ 10000, and no announcement.
  auto fork_xadd = [&](const std::string &kind, const std::string &payload) {
    redis_.cli({"XADD", key(fid), "MAXLEN", "~", "10000", "*", "timestamp", "1700000000.25", "kind",
                kind, "payload", payload});
  };
  const std::string meta = R"({"dict":{"fid":")" + fid + R"(","username":"carol","summary":"s"}})";
  fork_xadd("status", "starting");
  fork_xadd("inputs", R"({"dict":{"n":1}})");
  fork_xadd("meta", meta);
  fork_xadd("status", "running");
  fork_xadd("agent", R"({"dict":{"step":1}})");
  auto got = receive(*c1, 5, true);
  ASSERT_EQ(got.size(), 5u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].second.fid, fid);
    EXPECT_EQ(got[i].second.seq, int64_t(i));
    EXPECT_EQ(got[i].second.username, "carol");
    EXPECT_EQ(got[i].second.timestamp, 1700000000.25);
  }
  EXPECT_EQ(got[0].second.payload, "starting");
  EXPECT_EQ(got[2].second.kind, "meta");
  EXPECT_EQ(got[2].second.payload, meta);
  EXPECT_EQ(redis_.cli({"HEXISTS", "kodo:events:#executions", fid}), "1");
  DeliveryBatch none;
  c1->read(10, 0, none);  // sends the acks: entries up to the 5th are recorded stored

  // Trimmed below what is stored (the fork's MAXLEN or kodo's owner do that), then more
  // entries; c1 falls silent and c2 takes over: its numbering goes on from the position.
  redis_.cli({"XTRIM", key(fid), "MAXLEN", "2"});
  fork_xadd("final", R"({"dict":{"ok":true}})");
  fork_xadd("status", "finished");
  auto other = open({{"claim_idle_ms", "300"}});
  auto c2 = other->open_consumer("kodo-spooler", "c2");
  auto rest = receive(*c2, 2, true);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].second.seq, 5);
  EXPECT_EQ(rest[0].second.kind, "final");
  EXPECT_EQ(rest[1].second.seq, 6);
  EXPECT_EQ(rest[1].second.username, "carol");
}

TEST_F(RedisTransportTest, AForkStreamWithoutItsMetaYetWaitsAndKodosOwnStreamsAreLeftAlone) {
  auto transport = open();
  auto consumer = transport->open_consumer("kodo-spooler", "c1");
  const std::string fid = new_fid(), kodo_fid = new_fid();
  redis_.cli({"XADD", key(fid), "*", "timestamp", "1.5", "kind", "status", "payload", "starting"});
  transport->publish(events(kodo_fid, 0, 3), 1000);
  ASSERT_EQ(receive(*consumer, 3, true).size(), 3u);
  DeliveryBatch batch;
  consumer->read(10, 1500, batch);  // an upkeep and a scan pass at least
  EXPECT_EQ(batch.size(), 0u);
  EXPECT_EQ(redis_.cli({"HEXISTS", "kodo:events:#executions", fid}), "0");
  EXPECT_EQ(redis_.cli({"XLEN", "kodo:events:#registry"}), "1");  // kodo's run, announced once
  // Its meta comes: the stream is announced and read from its first entry.
  redis_.cli({"XADD", key(fid), "*", "timestamp", "1.6", "kind", "meta", "payload",
              R"({"username":"dave"})"});
  auto got = receive(*consumer, 2, true);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].second.seq, 0);
  EXPECT_EQ(got[0].second.username, "dave");
  EXPECT_EQ(got[1].second.seq, 1);
}

TEST_F(RedisTransportTest, ThePasswordNeverShows) {
  auto plugin = Plugin::load(REDIS_PLUGIN, "", KODO_KIND_TRANSPORT);
  PluginOptionSources sources;
  const std::string wrong = "redis://:" + std::string(RedisServer::kPassword) +
                            "@127.0.0.1:" + std::to_string(testing::free_loopback_port()) + "/0";
  sources.command_line = {{"url", wrong}, {"buffer_events", "10"}, {"connect_timeout_ms", "200"}};
  Transport transport(plugin, resolve_plugin_options(*plugin, sources));
  auto consumer = transport.open_consumer("kodo-spooler", "c1");
  try {
    DeliveryBatch batch;
    consumer->read(10, 100, batch);
    FAIL() << "read succeeded with nothing listening";
  } catch (const Error &e) {
    EXPECT_EQ(e.code(), KODO_ERR_UNAVAILABLE) << e.what();
    EXPECT_EQ(std::string(e.what()).find(RedisServer::kPassword), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(":***@127.0.0.1"), std::string::npos) << e.what();
  }
  transport.publish(events(new_fid(), 0, 10), 100);
  try {
    transport.publish(events(new_fid(), 0, 5), 100);
    FAIL() << "publish succeeded with nothing listening and the buffer full";
  } catch (const Error &e) {
    EXPECT_EQ(std::string(e.what()).find(RedisServer::kPassword), std::string::npos) << e.what();
  }
  // A wrong password is named as such, without the password.
  PluginOptionSources bad;
  bad.command_line = {{"url", "redis://:not-it@127.0.0.1:" + std::to_string(redis_.port())}};
  Transport refused(plugin, resolve_plugin_options(*plugin, bad));
  auto c2 = refused.open_consumer("kodo-spooler", "c2");
  try {
    DeliveryBatch batch;
    c2->read(10, 100, batch);
    FAIL() << "read succeeded with a wrong password";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("AUTH"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("not-it"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kodo
