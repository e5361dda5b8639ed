// lost_events.cpp: see lost_events.hpp.
#include "core/lost_events.hpp"

#include <kodo/host/log.hpp>

#include <vector>

namespace kodo {

void LostEventsWatch::on_stored(const kodo_event *const *events, size_t count, double) {
  struct Gap {
    std::string fid, username;
    int64_t first, last;
  };
  std::vector<Gap> gaps;
  std::vector<std::pair<std::string, std::string>> unknown;  // first seen at seq > 0
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < count; ++i) {
      const kodo_event &e = *events[i];
      const auto it = next_seq_.find(e.fid);
      if (it == next_seq_.end()) {
        if (e.seq > 0) unknown.emplace_back(e.fid, e.username);
        next_seq_.emplace(e.fid, e.seq + 1);
      } else {
        if (e.seq > it->second) gaps.push_back({e.fid, e.username, it->second, e.seq - 1});
        if (e.seq >= it->second) it->second = e.seq + 1;
      }
      const std::string kind(e.kind);
      if (kind == "status" && is_final_status(std::string(e.payload, e.payload_len)))
        next_seq_.erase(e.fid);
    }
  }
  for (const Gap &g : gaps) report(g.fid, g.username, g.first, g.last, g.last - g.first + 1);
  for (const auto &[fid, username] : unknown) {
    try {
      const auto info = storage_.get_execution(fid);
      if (!info || info->event_count >= info->last_seq + 1) continue;  // contiguous
      // Where the gap lies is not known without a scan; the seq just below the first one
      // this process stored is the likeliest, and is used only when it is free.
      EventQuery query;
      query.fid = fid;
      query.limit = 1;
      int64_t first_here = info->last_seq;
      for (size_t i = 0; i < count; ++i)
        if (fid == events[i]->fid) first_here = std::min(first_here, events[i]->seq);
      query.after_seq = first_here - 2;
      const auto below = storage_.read_events(query);
      if (!below.empty() && below.front().seq == first_here - 1) continue;
      report(fid, username, first_here - 1, -1, info->last_seq + 1 - info->event_count);
    } catch (const std::exception &e) {
      log_error("lost events: cannot check execution " + fid + ": " + e.what());
    }
  }
}

void LostEventsWatch::report(const std::string &fid, const std::string &username, int64_t first,
                             int64_t last, int64_t missing) {
  Event error;
  error.fid = fid;
  error.username = username;
  error.seq = first;
  error.timestamp = now_seconds();
  error.kind = "error";
  error.payload = last >= 0
                      ? "events seq " + std::to_string(first) + ".." + std::to_string(last) +
                            " of this execution were lost in the transport before they were stored "
                            "(did Redis lose its data?)"
                      : std::to_string(missing) +
                            " events of this execution were lost in the transport before they were "
                            "stored (did Redis lose its data?)";
  try {
    storage_.append(std::vector<Event>{error});
  } catch (const std::exception &e) {
    log_error("lost events: cannot store the error event of execution " + fid + ": " + e.what());
  }
  metrics_.events_lost.fetch_add(static_cast<uint64_t>(missing), std::memory_order_relaxed);
  log_error("execution " + fid + ": " + error.payload);
}

}  // namespace kodo
