// sse_hub.cpp: see sse_hub.hpp.
//
// Ordering: one reader at a time per execution (Watched::busy), so a viewer's position
// (Viewer::after) only moves forward. A new viewer is caught up from storage first; its
// position then jumps to the live cursor known before that read, and from then on the
// live read's frames are given only to viewers whose position is below the event.
#include "core/sse_hub.hpp"

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>
#include "core/event.hpp"
#include "core/kodosumi_format.hpp"
#include "core/kodosumi_payload.hpp"
#include "core/thread_name.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <tuple>

namespace kodo {

void append_sse_frame(std::string &out, const std::string &kind, int64_t id,
                      std::string_view data) {
  out.append("event: ").append(kind).append("\nid: ").append(std::to_string(id));
  out.append("\ndata: ");
  for (char c : data) {
    if (c == '\n')
      out += "\ndata: ";
    else if (c != '\r')
      out += c;
  }
  out += "\n\n";
}

std::string sse_event_data(double timestamp, std::string_view message) {
  std::string data = python_float_repr(timestamp);
  data += ':';
  data.append(message);
  return data;
}

namespace {

bool is_final_status_event(const Event &e) {
  return e.kind == "status" && is_final_status(e.payload);
}

// kodosumi's keep-alive and end frames, with its data, held once for every viewer.
std::shared_ptr<const std::string> alive_frame() {
  std::string out;
  append_sse_frame(out, "alive", 0, sse_event_data(now_seconds(), "service alive"));
  return std::make_shared<const std::string>(std::move(out));
}

std::shared_ptr<const std::string> eof_frame() {
  std::string out;
  append_sse_frame(out, "eof", 0, "end of stream");
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
    : storage_(storage), executor_(executor), config_(config) {}

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
    threads_.emplace_back([this] {
      name_this_thread("kodo-sse");
      run();
    });
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
  deferred_.clear();
  viewers_ = 0;
}

size_t SseHub::viewers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return viewers_;
}

void SseHub::subscribe(const std::string &fid, std::vector<std::string> kinds, int64_t after_seq,
                       bool formatted, std::shared_ptr<HttpStream> stream) {
  auto viewer = std::make_shared<Viewer>();
  viewer->stream = std::move(stream);
  viewer->kinds = std::move(kinds);
  viewer->formatted = formatted;
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

void SseHub::on_stored(const kodo_event *const *events, size_t count, double stored_at) {
  // Far behind (a storage that fails reads), the oldest notices are let go: they only time.
  constexpr size_t kMaxCommits = 256;
  std::lock_guard<std::mutex> lock(mu_);
  const char *last = nullptr;
  Watched *w = nullptr;
  for (size_t i = 0; i < count; ++i) {
    const char *fid = events[i]->fid;
    if (last == nullptr || std::strcmp(last, fid) != 0) {  // batches come in runs
      last = fid;
      auto it = watched_.find(fid);
      w = it == watched_.end() ? nullptr : &it->second;
      if (w == nullptr) continue;
      w->dirty = true;
      queue_locked(it->first, *w);
      if (w->commits.size() >= kMaxCommits) w->commits.erase(w->commits.begin());
      if (w->commits.empty() || w->commits.back().second != stored_at)
        w->commits.emplace_back(events[i]->seq, stored_at);
    }
    if (w != nullptr) w->commits.back().first = std::max(w->commits.back().first, events[i]->seq);
  }
}

void SseHub::queue_locked(const std::string &fid, Watched &w) {
  if (w.queued || w.busy) return;  // a busy one is queued again when its read ends
  w.queued = true;
  ready_.push_back(fid);
  wake_.notify_one();
}

// Marks every watched execution for a read (events stored by other processes send no
// notice) and gathers the viewers due a keep-alive frame, written after the lock is let go:
// a write is a system call now (HttpStream writes straight to the socket), and ten thousand
// of them under mu_ held up the spooler's notices.
void SseHub::tick_locked(double now, std::vector<std::shared_ptr<HttpStream>> &alive_to) {
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
    for (auto &entry : watched_)
      for (auto &v : entry.second.viewers)
        if (v->caught_up.load(std::memory_order_acquire)) alive_to.push_back(v->stream);
  }
}

void SseHub::undefer_locked(double now) {
  for (auto it = deferred_.begin(); it != deferred_.end();) {
    if (it->first > now) {
      ++it;
      continue;
    }
    ready_.push_back(std::move(it->second));
    it = deferred_.erase(it);
  }
}

void SseHub::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    double due = std::min(next_poll_, next_alive_);
    for (const auto &d : deferred_) due = std::min(due, d.first);
    wake_.wait_for(lock, std::chrono::duration<double>(std::max(0.0, due - now_seconds())),
                   [&] { return stopping_ || !ready_.empty(); });
    if (stopping_) break;
    const double now = now_seconds();
    std::vector<std::shared_ptr<HttpStream>> alive_to;
    tick_locked(now, alive_to);
    if (!alive_to.empty()) {
      lock.unlock();
      const auto frame = alive_frame();
      for (auto &stream : alive_to) stream->write(frame);
      alive_to.clear();
      lock.lock();
      if (stopping_) break;
    }
    undefer_locked(now);
    if (ready_.empty()) continue;
    std::string fid = std::move(ready_.front());
    ready_.pop_front();
    auto it = watched_.find(fid);
    if (it == watched_.end()) continue;
    if (it->second.busy) {
      it->second.queued = false;
      continue;
    }
    if (now < it->second.not_before) {  // stays queued: nothing adds it twice
      deferred_.emplace_back(it->second.not_before, std::move(fid));
      continue;
    }
    it->second.queued = false;
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
    it->second.not_before = now_seconds() + config_.batch_s;
    if (it->second.viewers.empty())
      watched_.erase(it);
    else if (it->second.dirty)
      queue_locked(fid, it->second);
  }
}

void SseHub::append_event(std::string &out, const Event &e, bool formatted) const {
  append_sse_frame(out, e.kind, e.seq + 1,
                   sse_event_data(e.timestamp, formatted ? kodosumi_format(e.kind, e.payload,
                                                                           config_.json_max_depth)
                                                         : e.payload));
}

template <typename Sink>
bool SseHub::read_all(const std::string &fid, const std::vector<std::string> &kinds, int64_t after,
                      Sink &&sink) {
  EventQuery query;
  query.fid = fid;
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
  std::vector<std::pair<int64_t, double>> commits;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Watched &w = watched_.at(fid);
    viewers = w.viewers;
    cursor = w.cursor;
    cursor_known = w.cursor_known;
    commits.swap(w.commits);
    w.dirty = false;
  }
  if (!cursor_known) {
    // Viewers are caught up to here from storage; the live read goes on from here.
    auto info = storage_.get_execution(fid);
    cursor = info ? info->last_seq : -1;
  }
  std::vector<std::shared_ptr<Viewer>> gone;
  bool final_seen = false;
  // Viewers that arrive together and ask for the same thing (most often: everything from
  // the start, in one form) are caught up by one storage read and one buffer of frames.
  std::map<std::tuple<std::vector<std::string>, int64_t, bool>,
           std::vector<std::shared_ptr<Viewer>>>
      arriving;
  for (auto &v : viewers)
    if (!v->caught_up.load(std::memory_order_relaxed))
      arriving[{v->kinds, v->after, v->formatted}].push_back(v);
  for (auto &group : arriving) {
    std::string history;
    int64_t last = std::get<1>(group.first);
    const bool formatted = std::get<2>(group.first);
    const bool ok = read_all(fid, std::get<0>(group.first), last, [&](const Event &e) {
      append_event(history, e, formatted);
      last = e.seq;
    });
    const auto out = shared(history);
    const auto alive = alive_frame();
    for (auto &v : group.second) {
      v->after = std::max(last, cursor);
      if (!ok || (!out->empty() && !v->stream->write(out)) || !v->stream->write(alive)) {
        v->stream->end();  // the client reconnects with Last-Event-ID
        gone.push_back(v);
      }
      v->caught_up.store(true, std::memory_order_release);
    }
  }

  bool any = false;
  // Every caught-up viewer of all kinds that was at or before the cursor gets the very same
  // frames, gathered once per form (raw, formatted); the rest (filtered kinds, or caught up
  // past the cursor) are given theirs one by one. Run again before an eof (below).
  auto read_live = [&] {
    const int64_t from = cursor;
    auto shares = [from](const Viewer &v) { return v.kinds.empty() && v.after <= from; };
    bool wanted[2] = {false, false};  // raw, formatted: is any viewer of that form here?
    for (auto &v : viewers) wanted[v->formatted ? 1 : 0] = true;
    std::string batch[2];
    std::string frame[2];
    read_all(fid, {}, cursor, [&](const Event &e) {
      any = true;
      cursor = e.seq;
      for (int form = 0; form < 2; ++form) {
        frame[form].clear();
        if (!wanted[form]) continue;
        append_event(frame[form], e, form == 1);
        batch[form] += frame[form];
      }
      for (auto &v : viewers)
        if (v->caught_up && !shares(*v) && e.seq > v->after) {
          v->after = e.seq;
          if (v->wants(e.kind)) v->out += frame[v->formatted ? 1 : 0];
        }
      if (is_final_status_event(e)) final_seen = true;
    });
    const std::shared_ptr<const std::string> batch_frames[2] = {shared(batch[0]), shared(batch[1])};
    uint64_t sent = 0;
    for (auto &v : viewers) {
      if (!v->caught_up) continue;
      if (shares(*v)) {
        v->after = cursor;
        const auto &frames = batch_frames[v->formatted ? 1 : 0];
        if (frames->empty()) continue;
        if (v->stream->write(frames))
          ++sent;
        else
          gone.push_back(v);
        continue;
      }
      if (!v->out.empty()) {
        if (v->stream->write(v->out))
          ++sent;
        else
          gone.push_back(v);
      }
      v->out.clear();
    }
    // Each commit this read sent, once per viewer; the last viewer's wait bounds the others'.
    // Commits read before (a notice that came during an earlier read) are not timed again.
    if (config_.sent_latency != nullptr && sent > 0) {
      const double now = now_seconds();
      for (const auto &[seq, stored_at] : commits)
        if (seq > from && seq <= cursor)
          config_.sent_latency->observe(std::max(0.0, now - stored_at), sent);
    }
    commits.erase(commits.begin(), std::find_if(commits.begin(), commits.end(),
                                                [&](const std::pair<int64_t, double> &c) {
                                                  return c.first > cursor;
                                                }));
  };
  read_live();

  // The final status is the last event of a run: once it is sent, so is everything.
  bool ended = final_seen;
  if (!ended && !any) {
    auto info = storage_.get_execution(fid);
    ended = info && is_final_status(info->status) && !executor_.is_active(fid);
    // The run's last events may have been committed between the read above and this look
    // at its status: they are sent before the eof (a stream once ended with them missing).
    if (ended) read_live();
  }
  if (ended) {
    const auto eof = eof_frame();
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
  // Notices of commits this read did not reach wait for the next one, before newer ones.
  if (!commits.empty()) w.commits.insert(w.commits.begin(), commits.begin(), commits.end());
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
