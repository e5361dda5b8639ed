// lost_events.hpp: notices events that never reached storage and says so in the execution.
//
// A transport that loses data (a Redis restarted empty, or failed over to an empty replica)
// loses the events written to it and not yet stored; the producer goes on with the next seqs.
// Seqs are contiguous per execution (executor.hpp), so a stored seq beyond the next expected
// one marks a loss. The watch then stores an error event in the first lost seq (free, since
// its event is gone) saying which seqs were lost, and counts them (kodo_events_lost_total on
// /metrics, events_lost on /health).
//
// It knows what this process stored. An execution first seen at seq s > 0 (its earlier events
// were stored by another spooler, or before a restart) is checked once against storage: when
// seq s - 1 is missing, the error goes there, with the number of missing events from the
// execution's summary. Executions are forgotten at their final status.
#pragma once

#include "core/metrics.hpp"
#include "core/spooler.hpp"
#include "core/storage.hpp"

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace kodo {

class LostEventsWatch : public StoredObserver {
 public:
  LostEventsWatch(Storage &storage, Metrics &metrics) : storage_(storage), metrics_(metrics) {}
  void on_stored(const kodo_event *const *events, size_t count, double stored_at) override;

 private:
  // Stores the error event for seqs first..last of fid (last -1: unknown, `missing` known).
  void report(const std::string &fid, const std::string &username, int64_t first, int64_t last,
              int64_t missing);

  Storage &storage_;
  Metrics &metrics_;
  std::mutex mutex_;
  std::unordered_map<std::string, int64_t> next_seq_;  // fid -> the seq expected next
};

}  // namespace kodo
