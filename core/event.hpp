// event.hpp: the host's owning form of an event, and the sink executors publish into.
#pragma once

#include <kodo/kodo_plugin.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kodo {

struct Event {
  std::string fid;
  std::string username;
  int64_t seq = 0;
  double timestamp = 0;
  std::string kind;
  std::string payload;

  // A C view pointing into this event; valid while the event lives unchanged.
  kodo_event view() const {
    return kodo_event{sizeof(kodo_event), fid.c_str(),  username.c_str(), seq,
                      timestamp,          kind.c_str(), payload.c_str(),  payload.size()};
  }
  static Event from(const kodo_event &e) {
    Event out;
    out.fid = e.fid ? e.fid : "";
    out.username = e.username ? e.username : "";
    out.seq = e.seq;
    out.timestamp = e.timestamp;
    out.kind = e.kind ? e.kind : "";
    if (e.payload) out.payload.assign(e.payload, e.payload_len);
    return out;
  }
};

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
