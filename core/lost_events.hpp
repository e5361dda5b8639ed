// lost_events.hpp: notices events that never reached storage and says so in the execution.
//
// A transport can lose events (a Redis restarted empty, or failed over to an empty replica) or
// deliver them late (a dead consumer's pending events go to another after an idle timeout).
// Seqs are contiguous per execution (executor.hpp), so a stored seq beyond the next expected
// one opens a gap. While a gap is open it is logged and counted in kodo_events_missing
// (events_missing on /health); events that fill it later are stored as any others and close it.
//
// Nothing is written into a run while it goes on: every seq up to its final status belongs to
// its producer, and an event arriving late to find its seq taken would be dropped as a
// duplicate. Once the final status is stored the producer has no seq left to use, so the watch
// asks storage (which also knows what other spoolers, or this one before a restart, stored)
// how many of seqs 0..final are missing. If any are, it appends one error event after the
// highest stored seq naming them, and counts them in kodo_events_lost_total (events_lost on
// /health). Once: a redelivered final status finds that error event and does nothing more.
// Events arriving after it are still stored in their place.
//
// Seqs from kHostNoteSeq up are notes, not the producer's (the run journal ends a dead host's
// runs there); a run ended that way says that its host stopped, and is not checked further.
#pragma once

#include "core/metrics.hpp"
#include "core/spooler.hpp"
#include "core/storage.hpp"

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

namespace kodo {

class LostEventsWatch : public StoredObserver {
 public:
  LostEventsWatch(Storage &storage, Metrics &metrics) : storage_(storage), metrics_(metrics) {}
  void on_stored(const kodo_event *const *events, size_t count, double stored_at) override;

  using Gaps = std::map<int64_t, int64_t>;  // first seq -> last seq, missing now

 private:
  struct Watched {
    int64_t next_seq = 0;  // the seq expected next
    Gaps gaps;
  };
  // After fid's final status at final_seq: reports, once, what storage still lacks of 0..final_seq
  // (`gaps`: what this process saw missing, to name them).
  void settle(const std::string &fid, const std::string &username, int64_t final_seq,
              const Gaps &gaps);

  Storage &storage_;
  Metrics &metrics_;
  std::mutex mutex_;
  std::unordered_map<std::string, Watched> watched_;  // runs under way, by fid
};

}  // namespace kodo
