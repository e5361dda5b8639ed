// lost_events_test.cpp: gaps in a run's seqs, as a transport that loses or delays events
// leaves them, on real SQLite storage: reported while open, never filled with a note that
// would take a late event's seq, and reported once more only if still open at the run's end.
#include "core/lost_events.hpp"
#include "core/ids.hpp"
#include "sqlite_storage.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kodo {
namespace {

using test::run_event;

class LostEventsTest : public test::SqliteStorageTest {
 protected:
  // What a spooler does with a batch: store it, then tell the watch.
  void spool(LostEventsWatch &watch, const std::vector<Event> &events) {
    storage_->append(events);
    EventViews views(events);
    watch.on_stored(views.data(), views.size(), now_seconds());
  }
  std::vector<Event> seqs(int64_t first, int64_t last) {
    std::vector<Event> out;
    for (int64_t seq = first; seq <= last; ++seq) out.push_back(run_event(fid_, seq));
    return out;
  }
  std::vector<Event> errors() {
    std::vector<Event> out;
    for (Event &e : stored(fid_))
      if (e.kind == "error") out.push_back(std::move(e));
    return out;
  }
  // Seqs 0..last each stored once with its own event (not an error in its place).
  void expect_all_producer_events(int64_t last) {
    const auto events = stored(fid_);
    ASSERT_GE(events.size(), static_cast<size_t>(last + 1));
    for (int64_t seq = 0; seq <= last; ++seq) {
      const Event &e = events[static_cast<size_t>(seq)];
      EXPECT_EQ(e.seq, seq);
      EXPECT_NE(e.kind, "error") << "seq " << seq << " holds a note, not its event";
    }
  }

  Metrics metrics_;
  const std::string fid_ = new_fid();
  const Event finished_ = run_event(fid_, 10, "status", "finished");
};

TEST_F(LostEventsTest, AGapFilledLateIsStoredCompletelyAndReportedOnlyWhileOpen) {
  LostEventsWatch watch(*storage_, metrics_);
  spool(watch, seqs(0, 4));
  EXPECT_EQ(metrics_.events_missing.load(), 0);
  spool(watch, seqs(8, 9));  // 5..7 held by a consumer that died, redelivered later
  EXPECT_EQ(metrics_.events_missing.load(), 3);
  EXPECT_TRUE(errors().empty()) << "nothing is written into a run under way";

  spool(watch, seqs(5, 6));
  EXPECT_EQ(metrics_.events_missing.load(), 1);
  spool(watch, seqs(5, 7));  // 5 and 6 again: a redelivery fills nothing twice
  EXPECT_EQ(metrics_.events_missing.load(), 0);
  spool(watch, {finished_});

  ASSERT_NO_FATAL_FAILURE(expect_all_producer_events(10));
  EXPECT_EQ(stored(fid_).size(), 11u);
  EXPECT_EQ(metrics_.events_lost.load(), 0u);
  EXPECT_EQ(storage_->get_execution(fid_)->status, "finished");
}

TEST_F(LostEventsTest, AGapStillOpenAtTheEndIsReportedOnceAfterTheFinalStatus) {
  LostEventsWatch watch(*storage_, metrics_);
  spool(watch, seqs(0, 4));
  spool(watch, seqs(8, 9));
  EXPECT_EQ(metrics_.events_missing.load(), 3);
  spool(watch, {finished_});

  EXPECT_EQ(metrics_.events_missing.load(), 0);
  EXPECT_EQ(metrics_.events_lost.load(), 3u);
  auto reported = errors();
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_EQ(reported[0].seq, 11) << "after the final status, where no producer seq is left";
  EXPECT_NE(reported[0].payload.find("events seq 5..7 of this execution were lost"),
            std::string::npos)
      << reported[0].payload;

  spool(watch, {finished_});  // the final status redelivered: no second report
  EXPECT_EQ(metrics_.events_lost.load(), 3u);
  EXPECT_EQ(errors().size(), 1u);

  spool(watch, seqs(5, 7));  // they did arrive after all: stored in their place
  ASSERT_NO_FATAL_FAILURE(expect_all_producer_events(10));
  EXPECT_EQ(stored(fid_).size(), 12u);
  EXPECT_EQ(metrics_.events_lost.load(), 3u);
  EXPECT_EQ(metrics_.events_missing.load(), 0);
  EXPECT_EQ(storage_->get_execution(fid_)->status, "finished");
}

TEST_F(LostEventsTest, AWatchThatSawOnlyTheEndAsksStorage) {
  // Another spooler (or this one before a restart) stored the start; this one the end.
  storage_->append(seqs(0, 3));
  LostEventsWatch watch(*storage_, metrics_);
  spool(watch, seqs(6, 9));
  EXPECT_EQ(metrics_.events_missing.load(), 0) << "what came before is not known yet";
  spool(watch, {finished_});
  EXPECT_EQ(metrics_.events_lost.load(), 2u);
  auto reported = errors();
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_NE(reported[0].payload.find("2 events of this execution were lost"), std::string::npos)
      << reported[0].payload;
}

TEST_F(LostEventsTest, NotesPastTheProducersSeqsOpenNoGap) {
  LostEventsWatch watch(*storage_, metrics_);
  spool(watch, seqs(0, 2));
  // The run journal ends a dead host's run among the notes.
  spool(watch, {run_event(fid_, kHostNoteSeq, "error", "the host stopped"),
                run_event(fid_, kHostNoteSeq + 1, "status", "error")});
  EXPECT_EQ(metrics_.events_missing.load(), 0);
  EXPECT_EQ(metrics_.events_lost.load(), 0u);
  EXPECT_EQ(errors().size(), 1u);
}

}  // namespace
}  // namespace kodo
