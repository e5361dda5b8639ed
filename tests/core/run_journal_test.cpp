// run_journal_test.cpp: the journal a host keeps of its runs under way, and what a starting
// host takes over from dead ones (and never from live ones).
#include "core/run_journal.hpp"
#include <kodo/host/error.hpp>
#include "core/ids.hpp"
#include "sqlite_storage.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using kodo::Event;
using kodo::JournalingSink;
using kodo::RunJournal;

class RunJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kodo-journal-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto &e : fs::directory_iterator(dir_)) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }
  std::string read(const std::string &name) const {
    std::ifstream in(dir_ + "/" + name);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::string dir_;
};

TEST_F(RunJournalTest, ADeadHostsUnendedRunsAreTakenOverOnce) {
  const std::string a = kodo::new_fid(), b = kodo::new_fid(), c = kodo::new_fid();
  // A host that died: its lock file is there, nobody holds it.
  std::ofstream(dir_ + "/host-1-dead.lock") << "";
  std::ofstream(dir_ + "/host-1-dead.runs")
      << "+" << a << " alice\n+" << b << " bob\n-" << a << "\n+" << c << " carol\n+6b0c";
  RunJournal journal(dir_);
  const auto orphans = journal.take_dead_hosts_runs();
  ASSERT_EQ(orphans.size(), 2u);  // the torn last line is skipped
  EXPECT_EQ(orphans[0].fid, b);
  EXPECT_EQ(orphans[0].username, "bob");
  EXPECT_EQ(orphans[0].instance, "host-1-dead");
  EXPECT_EQ(orphans[1].fid, c);
  EXPECT_EQ(orphans[1].username, "carol");
  EXPECT_TRUE(journal.take_dead_hosts_runs().empty());
  EXPECT_EQ(files(),
            (std::vector<std::string>{journal.instance() + ".lock", journal.instance() + ".runs"}));
}

TEST_F(RunJournalTest, ALiveHostsRunsAreLeftAlone) {
  RunJournal live(dir_);
  const std::string fid = kodo::new_fid();
  live.begun(fid, "alice");
  RunJournal other(dir_);  // its lock held by `live`, as by another process
  EXPECT_TRUE(other.take_dead_hosts_runs().empty());
  EXPECT_EQ(read(live.instance() + ".runs"), "+" + fid + " alice\n");
}

TEST_F(RunJournalTest, ACleanStopLeavesNothingAndARunStillListedStays) {
  {
    RunJournal journal(dir_);
    const std::string fid = kodo::new_fid();
    journal.begun(fid, "alice");
    journal.ended(fid);
  }
  EXPECT_TRUE(files().empty());
  const std::string kept = kodo::new_fid();
  std::string instance;
  {
    RunJournal journal(dir_);
    instance = journal.instance();
    journal.begun(kept, "alice");
  }
  RunJournal next(dir_);
  const auto orphans = next.take_dead_hosts_runs();
  ASSERT_EQ(orphans.size(), 1u);
  EXPECT_EQ(orphans[0].fid, kept);
  EXPECT_EQ(orphans[0].instance, instance);
}

TEST_F(RunJournalTest, TheFileStaysInProportionToTheRunsUnderWay) {
  RunJournal journal(dir_);
  const std::string active = kodo::new_fid();
  journal.begun(active, "alice");
  for (int i = 0; i < 3000; ++i) {
    const std::string fid = kodo::new_fid();
    journal.begun(fid, "bob");
    journal.ended(fid);
  }
  EXPECT_LT(read(journal.instance() + ".runs").size(), size_t{1024} * 64);
  EXPECT_NE(read(journal.instance() + ".runs").find("+" + active + " alice\n"), std::string::npos);
}

class RecordingSink : public kodo::EventSink {
 public:
  void publish(const std::vector<Event> &events) override {
    if (refuse) throw kodo::Error(KODO_ERR_UNAVAILABLE, "refused", true);
    published += events.size();
  }
  bool refuse = false;
  size_t published = 0;
};

Event status(const std::string &fid, int64_t seq, const std::string &value) {
  Event e;
  e.fid = fid;
  e.username = "alice";
  e.seq = seq;
  e.kind = "status";
  e.payload = value;
  return e;
}

TEST_F(RunJournalTest, TheSinkWritesRunsBegunAndEnded) {
  RunJournal journal(dir_);
  RecordingSink next;
  JournalingSink sink(next, journal);
  const std::string ran = kodo::new_fid(), refused = kodo::new_fid();
  sink.publish({status(ran, 0, "starting")});
  EXPECT_EQ(read(journal.instance() + ".runs"), "+" + ran + " alice\n");
  sink.publish({status(ran, 3, "running"), status(ran, 4, "finished")});
  next.refuse = true;
  EXPECT_THROW(sink.publish({status(refused, 0, "starting")}), kodo::Error);
  EXPECT_EQ(read(journal.instance() + ".runs"),
            "+" + ran + " alice\n-" + ran + "\n+" + refused + " alice\n-" + refused + "\n");
}

// What a host publishes reaches storage (the transport and spooler between them left out).
class StoringSink : public kodo::EventSink {
 public:
  explicit StoringSink(kodo::Storage &storage) : storage_(storage) {}
  void publish(const std::vector<Event> &events) override { storage_.append(events); }

 private:
  kodo::Storage &storage_;
};

class ReconcileTest : public kodo::test::SqliteStorageTest {};

TEST_F(ReconcileTest, ARunEndedForADeadHostLeavesTheSeqsOfItsUnstoredEventsFree) {
  using kodo::test::run_event;
  const std::string fid = kodo::new_fid();
  storage_->append({run_event(fid, 0, "status", "starting"), run_event(fid, 1, "status", "running"),
                    run_event(fid, 2)});
  const std::string hosts = dir_ + "/hosts";
  fs::create_directories(hosts);
  std::ofstream(hosts + "/host-1-dead.lock") << "";
  std::ofstream(hosts + "/host-1-dead.runs") << "+" << fid << " alice\n";
  RunJournal journal(hosts);
  StoringSink sink(*storage_);
  EXPECT_EQ(kodo::reconcile_dead_hosts(journal, *storage_, sink), 1u);
  EXPECT_EQ(storage_->get_execution(fid)->status, "error");

  // The dead host's last events, still in Redis when it was ended, arrive: each is stored.
  const std::vector<Event> late = {run_event(fid, 3), run_event(fid, 4),
                                   run_event(fid, 5, "status", "finished")};
  storage_->append(late);
  const auto events = stored(fid);
  ASSERT_EQ(events.size(), 8u);
  for (size_t i = 0; i < late.size(); ++i) {
    EXPECT_EQ(events[3 + i].seq, late[i].seq);
    EXPECT_EQ(events[3 + i].kind, late[i].kind);
    EXPECT_EQ(events[3 + i].payload, late[i].payload);
  }
  EXPECT_EQ(events[6].seq, kodo::kHostNoteSeq);
  EXPECT_EQ(events[6].kind, "error");
  EXPECT_NE(events[6].payload.find("the host stopped while this run was running"),
            std::string::npos);
  EXPECT_EQ(events[7].kind, "status");
  EXPECT_EQ(events[7].payload, "error");
  // The note has the higher seq: the run reads as it was ended (a limit run_journal.hpp names).
  EXPECT_EQ(storage_->get_execution(fid)->status, "error");
}

// A Resumer takes a run over (it stays in this host's journal, nothing is published for it) or
// names why it ends; without a reason the usual one is stored.
TEST_F(ReconcileTest, AResumerTakesARunOverOrSaysWhyItEnds) {
  using kodo::test::run_event;
  const std::string resumed = kodo::new_fid(), expired = kodo::new_fid(), plain = kodo::new_fid();
  for (const std::string &fid : {resumed, expired, plain})
    storage_->append({run_event(fid, 0, "status", "starting"), run_event(fid, 1)});
  const std::string hosts = dir_ + "/hosts";
  fs::create_directories(hosts);
  std::ofstream(hosts + "/host-2-dead.lock") << "";
  std::ofstream(hosts + "/host-2-dead.runs")
      << "+" << resumed << " alice\n+" << expired << " alice\n+" << plain << " alice\n";
  RunJournal journal(hosts);
  StoringSink sink(*storage_);
  std::vector<std::string> asked;
  const kodo::Resumer resume = [&](const RunJournal::Orphan &orphan,
                                   const kodo::ExecutionInfo &info) {
    asked.push_back(orphan.fid + " " + info.status);
    kodo::Resumption r;
    r.resumed = orphan.fid == resumed;
    if (orphan.fid == expired) r.end_reason = "lock x expired";
    return r;
  };
  EXPECT_EQ(kodo::reconcile_dead_hosts(journal, *storage_, sink, resume), 2u);
  EXPECT_EQ(asked, (std::vector<std::string>{resumed + " starting", expired + " starting",
                                             plain + " starting"}));
  EXPECT_EQ(stored(resumed).size(), 2u) << "the resumer's run: nothing published for it";
  EXPECT_EQ(stored(expired)[2].payload, "lock x expired");
  EXPECT_NE(stored(plain)[2].payload.find("the host stopped while this run was running"),
            std::string::npos);
  // Only the resumed run stays this host's: a crash now leaves it to the next host.
  std::ifstream in(hosts + "/" + journal.instance() + ".runs");
  std::stringstream runs;
  runs << in.rdbuf();
  EXPECT_EQ(runs.str(), "+" + resumed + " alice\n+" + expired + " alice\n-" + expired + "\n+" +
                            plain + " alice\n-" + plain + "\n");
}

}  // namespace
