// lost_events.cpp: see lost_events.hpp.
#include "core/lost_events.hpp"

#include <kodo/host/log.hpp>

#include <vector>

namespace kodo {

namespace {

constexpr const char *kLossWords = "lost in the transport before they were stored";

int64_t total(const LostEventsWatch::Gaps &gaps) {
  int64_t n = 0;
  for (const auto &[first, last] : gaps) n += last - first + 1;
  return n;
}

// Takes seq out of the gap holding it; false when no gap holds it (a redelivery).
bool fill(LostEventsWatch::Gaps &gaps, int64_t seq) {
  auto it = gaps.upper_bound(seq);
  if (it == gaps.begin()) return false;
  --it;
  const int64_t first = it->first, last = it->second;
  if (last < seq) return false;
  gaps.erase(it);
  if (first < seq) gaps.emplace(first, seq - 1);
  if (seq < last) gaps.emplace(seq + 1, last);
  return true;
}

std::string seqs_text(const LostEventsWatch::Gaps &gaps) {
  constexpr size_t kNamed = 10;  // a message, not a listing
  std::string out;
  size_t named = 0;
  for (const auto &[first, last] : gaps) {
    if (named++ == kNamed) return out + ", ...";
    if (!out.empty()) out += ", ";
    out += std::to_string(first);
    if (last > first) out += ".." + std::to_string(last);
  }
  return out;
}

}  // namespace

void LostEventsWatch::on_stored(const kodo_event *const *events, size_t count, double) {
  struct Ended {
    std::string fid, username;
    int64_t final_seq;
    Gaps gaps;
  };
  std::vector<Ended> ended;
  std::vector<std::pair<std::string, std::string>> notices;  // fid, what happened
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < count; ++i) {
      const kodo_event &e = *events[i];
      const bool final =
          std::string(e.kind) == "status" && is_final_status(std::string(e.payload, e.payload_len));
      if (e.seq >= kHostNoteSeq) {  // a note ended it: nothing of it is checked further
        if (!final) continue;
        const auto it = watched_.find(e.fid);
        if (it == watched_.end()) continue;
        metrics_.events_missing.fetch_sub(total(it->second.gaps), std::memory_order_relaxed);
        watched_.erase(it);
        continue;
      }
      // First seen here: what came before is storage's to know, asked at the end.
      auto [it, fresh] = watched_.try_emplace(e.fid);
      Watched &w = it->second;
      if (fresh) {
        w.next_seq = e.seq + 1;
      } else if (e.seq > w.next_seq) {
        w.gaps.emplace(w.next_seq, e.seq - 1);
        metrics_.events_missing.fetch_add(e.seq - w.next_seq, std::memory_order_relaxed);
        notices.emplace_back(e.fid, "events seq " + std::to_string(w.next_seq) + ".." +
                                        std::to_string(e.seq - 1) + " are missing (stored seq " +
                                        std::to_string(e.seq) +
                                        "); the run goes on, and they are stored if they arrive");
        w.next_seq = e.seq + 1;
      } else if (e.seq == w.next_seq) {
        ++w.next_seq;
      } else if (fill(w.gaps, e.seq)) {
        metrics_.events_missing.fetch_sub(1, std::memory_order_relaxed);
        notices.emplace_back(e.fid, "event seq " + std::to_string(e.seq) + " arrived late");
      }
      if (final) {
        metrics_.events_missing.fetch_sub(total(w.gaps), std::memory_order_relaxed);
        ended.push_back({e.fid, e.username, e.seq, std::move(w.gaps)});
        watched_.erase(it);
      }
    }
  }
  for (const auto &[fid, what] : notices)
    log_warn(std::string("execution ").append(fid).append(": ").append(what));
  for (const Ended &x : ended) settle(x.fid, x.username, x.final_seq, x.gaps);
}

void LostEventsWatch::settle(const std::string &fid, const std::string &username, int64_t final_seq,
                             const Gaps &gaps) {
  try {
    const auto info = storage_.get_execution(fid);
    if (!info) return;
    if (info->last_seq == final_seq && info->event_count == final_seq + 1) return;  // all there
    // Whatever lies past the final status is a note: this report made before (the final status
    // redelivered), or the run journal's.
    EventQuery query;
    query.fid = fid;
    query.after_seq = final_seq;
    query.limit = 100;
    const auto after = storage_.read_events(query);
    for (const Event &e : after)
      if (e.kind == "error" && e.payload.find(kLossWords) != std::string::npos) return;
    const int64_t missing =
        final_seq + 1 - (info->event_count - static_cast<int64_t>(after.size()));
    if (missing <= 0) return;
    Event error;
    error.fid = fid;
    error.username = username;
    error.seq = info->last_seq + 1;  // after the final status: no producer seq is left
    error.timestamp = now_seconds();
    error.kind = "error";
    error.payload = (total(gaps) == missing ? "events seq " + seqs_text(gaps)
                                            : std::to_string(missing) + " events") +
                    " of this execution were " + kLossWords +
                    " (did Redis lose its data?); any that arrive later are stored in their place";
    storage_.append(std::vector<Event>{error});
    metrics_.events_lost.fetch_add(static_cast<uint64_t>(missing), std::memory_order_relaxed);
    log_error("execution " + fid + ": " + error.payload);
  } catch (const std::exception &e) {
    log_error("lost events: cannot check execution " + fid + " at its end: " + e.what());
  }
}

}  // namespace kodo
