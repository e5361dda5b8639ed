// event.hpp: the C views of events, kodosumi's event kinds, and the sink executors publish into.
#pragma once

#include <kodo/host/records.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace kodo {

// The C views of a vector of events and the pointer array the ABI takes; valid while the
// events live unchanged.
class EventViews {
 public:
  explicit EventViews(const std::vector<Event> &events) {
    views_.reserve(events.size());
    for (const auto &e : events) views_.push_back(e.view());
    pointers_.reserve(views_.size());
    for (const auto &v : views_) pointers_.push_back(&v);
  }
  const kodo_event *const *data() const { return pointers_.data(); }
  size_t size() const { return pointers_.size(); }

 private:
  std::vector<kodo_event> views_;
  std::vector<const kodo_event *> pointers_;
};

// kodosumi's event kinds.
bool is_known_kind(const std::string &kind);
// Main events (kodosumi's /outputs/main) and stdio events (/outputs/stdio).
const std::vector<std::string> &main_kinds();
const std::vector<std::string> &stdio_kinds();
bool is_main_kind(const std::string &kind);
bool is_stdio_kind(const std::string &kind);
// Status values that end an execution.
inline bool is_final_status(const std::string &status) {
  return status == "finished" || status == "error";
}

// Seqs from here up hold the host's own notes on an execution (the run journal's end of a run a
// dead host left). A producer counts its seqs from 0 and never gets this far, so a note never
// takes the seq of an event still on its way through the transport. 10^15 is exact as a JSON
// number (a double) and leaves room for any run.
constexpr int64_t kHostNoteSeq = 1'000'000'000'000'000;

// Seconds since the epoch, as a double (kodosumi's timestamps).
double now_seconds();

// Where executors hand the events they make. Implementations publish to the transport.
// Threading: publish may be called from several threads.
class EventSink {
 public:
  virtual ~EventSink() = default;
  // Throws kodo::Error when the events could not be taken (nothing was taken then).
  virtual void publish(const std::vector<Event> &events) = 0;
};

}  // namespace kodo
