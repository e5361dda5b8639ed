// sse_hub.cpp: see sse_hub.hpp.
//
// Ordering: one reader at a time per execution (Watched::busy), so a viewer's position
// (Viewer::after) only moves forward. A new viewer is caught up from storage first; its
// position then jumps to the live cursor known before that read, and from then on the
// live read's frames are given only to viewers whose position is below the event.
#include "core/sse_hub.hpp"

#include "core/error.hpp"
#include "core/event.hpp"
#include "core/log.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace kodo {

void append_sse_frame(std::string &out, const std::string &kind, int64_t id, double timestamp,
                      const std::string &payload) {
  char stamp[40];
  const int n = std::snprintf(stamp, sizeof stamp, "%.6f", timestamp);
  out.append("event: ").append(kind).append("\nid: ").append(std::to_string(id));
  out.append("\ndata: ")
      .append(stamp, n > 0 ? std::min(static_cast<size_t>(n), sizeof stamp - 1) : 0);
  out += ':';
  for (char c : payload) {
    if (c == '\n')
      out += "\ndata: ";
    else if (c != '\r')
      out += c;
  }
  out += "\n\n";
}

namespace {

bool is_final_status_event(const Event &e) {
  return e.kind == "status" && is_final_status(e.payload);
}

std::shared_ptr<const std::string> marker_frame(const char *kind) {
  std::string out;
  append_sse_frame(out, kind, 0, now_seconds(), "");
  return std::make_shared<const std::string>(std::move(out));
}

std::shared_ptr<const std::string> shared(std::string &bytes) {
  return std::make_shared<const std::string>(std::move(bytes));
}

}  // namespace

bool SseHub::Viewer::wants(const std::string &kind) const {
  return kinds.empty() || std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}

SseHub::SseHub(Storage &storage, const Executor &executor, SseHubConfig config)
    : storage_(storage), executor_(executor), config_(std::move(config)) {}

SseHub::~SseHub() {
  stop();
}

void SseHub::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!threads_.empty()) return;
  const double now = now_seconds();
  next_poll_ = now + config_.poll_s;
  next_alive_ = now + config_.keepalive_s;
  for (size_t i = 0; i < std::max<size_t>(1, config_.threads); ++i)
    threads_.emplace_back([this] { run(); });
}

void SseHub::stop() {
  std::vector<std::shared_ptr<Viewer>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto &entry : watched_)
      for (auto &v : entry.second.viewers) all.push_back(v);
  }
  wake_.notify_all();
  for (auto &t : threads_) t.join();
  threads_.clear();
  for (auto &v : all) v->stream->end();
  std::lock_guard<std::mutex> lock(mu_);
  watched_.clear();
  ready_.clear();
  viewers_ = 0;
}

size_t SseHub::viewers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return viewers_;
}

void SseHub::subscribe(const std::string &fid, std::vector<std::string> kinds, int64_t after_seq,
                       std::shared_ptr<HttpStream> stream) {
  auto viewer = std::make_shared<Viewer>();
  viewer->stream = std::move(stream);
  viewer->kinds = std::move(kinds);
  viewer->after = after_seq;
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) {
    viewer->stream->end();
    return;
  }
  Watched &w = watched_[fid];
  w.viewers.push_back(std::move(viewer));
  ++viewers_;
  w.dirty = true;
  queue_locked(fid, w);
}

void SseHub::on_stored(const kodo_event *const *events, size_t count, double) {
  std::lock_guard<std::mutex> lock(mu_);
  const char *last = nullptr;
  for (size_t i = 0; i < count; ++i) {
    const char *fid = events[i]->fid;
    if (last != nullptr && std::strcmp(last, fid) == 0) continue;  // batches come in runs
    last = fid;
    auto it = watched_.find(fid);
    if (it == watched_.end()) continue;
    it->second.dirty = true;
    queue_locked(it->first, it->second);
  }
}

void SseHub::queue_locked(const std::string &fid, Watched &w) {
  if (w.queued || w.busy) return;  // a busy one is queued again when its read ends
  w.queued = true;
  ready_.push_back(fid);
  wake_.notify_one();
}

// Marks every watched execution for a read (events stored by other processes send no
// notice) and sends the keep-alive frames when due.
void SseHub::tick_locked(double now) {
  if (now >= next_poll_) {
    next_poll_ = now + config_.poll_s;
    for (auto &entry : watched_) {
      entry.second.dirty = true;
      queue_locked(entry.first, entry.second);
    }
  }
  if (now >= next_alive_) {
    next_alive_ = now + config_.keepalive_s;
    // Only to viewers caught up: one arriving gets its history first, then its alive.
    const auto frame = marker_frame("alive");
    for (auto &entry : watched_)
      for (auto &v : entry.second.viewers)
        if (v->caught_up.load(std::memory_order_acquire)) v->stream->write(frame);
  }
}

void SseHub::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    const double due = std::min(next_poll_, next_alive_);
    wake_.wait_for(lock, std::chrono::duration<double>(std::max(0.0, due - now_seconds())),
                   [&] { return stopping_ || !ready_.empty(); });
    if (stopping_) break;
    tick_locked(now_seconds());
    if (ready_.empty()) continue;
    const std::string fid = ready_.front();
    ready_.pop_front();
    auto it = watched_.find(fid);
    if (it == watched_.end()) continue;
    it->second.queued = false;
    if (it->second.busy) continue;
    it->second.busy = true;
    lock.unlock();
    try {
      pump(fid);
    } catch (const std::exception &e) {
      log_warn("SSE " + fid + ": " + e.what());
    }
    lock.lock();
    it = watched_.find(fid);  // busy kept it in the map
    it->second.busy = false;
    if (it->second.viewers.empty())
      watched_.erase(it);
    else if (it->second.dirty)
      queue_locked(fid, it->second);
  }
}

template <typename Sink>
bool SseHub::read_all(const std::string &fid, const std::vector<std::string> &kinds, int64_t after,
                      Sink &&sink) {
  EventQuery query;
  query.fid = fid;
  query.username = config_.username;
  query.after_seq = after;
  query.kinds = kinds;
  query.limit = 1000;
  for (;;) {
    bool more = false;
    std::vector<Event> events;
    try {
      events = storage_.read_events(query, &more);
    } catch (const Error &e) {
      if (e.code() == KODO_ERR_NOT_FOUND) return true;  // launched, nothing stored yet
      log_warn("SSE " + fid + ": " + e.what());
      return false;
    }
    for (const Event &e : events) sink(e);
    if (!more || events.empty()) return true;
    query.after_seq = events.back().seq;
  }
}

void SseHub::pump(const std::string &fid) {
  std::vector<std::shared_ptr<Viewer>> viewers;
  int64_t cursor = -1;
  bool cursor_known = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Watched &w = watched_.at(fid);
    viewers = w.viewers;
    cursor = w.cursor;
    cursor_known = w.cursor_known;
    w.dirty = false;
  }
  if (!cursor_known) {
    // Viewers are caught up to here from storage; the live read goes on from here.
    auto info = storage_.get_execution(fid, config_.username);
    cursor = info ? info->last_seq : -1;
  }
  std::vector<std::shared_ptr<Viewer>> gone;
  bool final_seen = false;
  // Viewers that arrive together and ask for the same thing (most often: everything from
  // the start) are caught up by one storage read and one buffer of frames.
  std::map<std::pair<std::vector<std::string>, int64_t>, std::vector<std::shared_ptr<Viewer>>>
      arriving;
  for (auto &v : viewers)
    if (!v->caught_up.load(std::memory_order_relaxed)) arriving[{v->kinds, v->after}].push_back(v);
  for (auto &group : arriving) {
    std::string history;
    int64_t last = group.first.second;
    const bool ok = read_all(fid, group.first.first, last, [&](const Event &e) {
      append_sse_frame(history, e.kind, e.seq + 1, e.timestamp, e.payload);
      last = e.seq;
    });
    const auto out = shared(history);
    const auto alive = marker_frame("alive");
    for (auto &v : group.second) {
      v->after = std::max(last, cursor);
      if (!ok || (!out->empty() && !v->stream->write(out)) || !v->stream->write(alive)) {
        v->stream->end();  // the client reconnects with Last-Event-ID
        gone.push_back(v);
      }
      v->caught_up.store(true, std::memory_order_release);
    }
  }

  // The live read: every caught-up viewer of all kinds that was at or before the cursor
  // gets the very same frames, gathered once; the rest (filtered kinds, or caught up past
  // the cursor) are given theirs one by one.
  const int64_t from = cursor;
  auto shares = [from](const Viewer &v) { return v.kinds.empty() && v.after <= from; };
  bool any = false;
  std::string batch;
  std::string frame;
  read_all(fid, {}, cursor, [&](const Event &e) {
    any = true;
    cursor = e.seq;
    frame.clear();
    append_sse_frame(frame, e.kind, e.seq + 1, e.timestamp, e.payload);
    batch += frame;
    for (auto &v : viewers)
      if (v->caught_up && !shares(*v) && e.seq > v->after) {
        v->after = e.seq;
        if (v->wants(e.kind)) v->out += frame;
      }
    if (is_final_status_event(e)) final_seen = true;
  });
  const auto batch_frames = shared(batch);  // held once, however many viewers it goes to
  for (auto &v : viewers) {
    if (!v->caught_up) continue;
    if (shares(*v)) {
      v->after = cursor;
      if (!batch_frames->empty() && !v->stream->write(batch_frames)) gone.push_back(v);
      continue;
    }
    if (!v->out.empty() && !v->stream->write(v->out)) gone.push_back(v);
    v->out.clear();
  }

  // The final status is the last event of a run: once it is sent, so is everything.
  bool ended = final_seen;
  if (!ended && !any) {
    auto info = storage_.get_execution(fid, config_.username);
    ended = info && is_final_status(info->status) && !executor_.is_active(fid);
  }
  if (ended) {
    const auto eof = marker_frame("eof");
    for (auto &v : viewers) {
      if (!v->caught_up) continue;
      v->stream->write(eof);
      v->stream->end();
      gone.push_back(v);
    }
  }
  for (auto &v : viewers)
    if (!v->stream->open()) gone.push_back(v);

  std::lock_guard<std::mutex> lock(mu_);
  Watched &w = watched_.at(fid);
  w.cursor = cursor;
  w.cursor_known = true;
  if (gone.empty()) return;
  std::sort(gone.begin(), gone.end());
  gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
  const size_t before = w.viewers.size();
  w.viewers.erase(std::remove_if(w.viewers.begin(), w.viewers.end(),
                                 [&](const std::shared_ptr<Viewer> &v) {
                                   return std::binary_search(gone.begin(), gone.end(), v);
                                 }),
                  w.viewers.end());
  viewers_ -= before - w.viewers.size();
}

}  // namespace kodo
