// sse_hub.hpp: the fan-out behind /outputs/stream|main|stdio. Each watched execution has
// one list of viewers; a committed batch (the spooler's notification, or one shared poll
// per watched execution when events are stored by other processes) is read from storage
// once and written to every viewer. Storage is read per viewer only to catch it up (first
// connect, Last-Event-ID). Viewers are HttpStreams, so a slow one is cut off behind its
// bounded buffer and never holds up the others, the spooler or a thread.
#pragma once

#include "core/executor.hpp"
#include "core/http_server.hpp"
#include "core/metrics.hpp"
#include "core/spooler.hpp"
#include "core/storage.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kodo {

// One SSE frame in kodosumi's form: event: <kind>, id: <row id>, data: <data>. Data with line
// breaks continues on further data: lines, as SSE requires.
void append_sse_frame(std::string &out, const std::string &kind, int64_t id, std::string_view data);
// An event's data as kodosumi writes it: <timestamp as Python's repr>:<message>.
std::string sse_event_data(double timestamp, std::string_view message);

// Executions are read by fid, whichever user owns them.
struct SseHubConfig {
  double keepalive_s = 3;      // kodosumi's `alive` frame
  double poll_s = 0.25;        // how often a watched execution is read again without a notice
  size_t threads = 2;          // readers; each execution is read by one at a time
  size_t json_max_depth = 64;  // formatted payloads nested deeper are sent as stored
  // Least time between two live reads of one execution: events committed meanwhile go out
  // together, in one write per viewer. The spooler commits every few ms; a read and a write
  // to every viewer per commit was most of the cost per frame with 10,000 viewers.
  double batch_s = 0.02;
  // When set: for each commit whose events a live send carries, the time from the commit
  // (the spooler's notice) to the send, once per viewer sent to.
  Histogram *sent_latency = nullptr;
};

// Thread-safe. on_stored runs on spooler threads and only marks work.
class SseHub : public StoredObserver {
 public:
  SseHub(Storage &storage, const Executor &executor, SseHubConfig config);
  ~SseHub() override;  // stop()
  SseHub(const SseHub &) = delete;
  SseHub &operator=(const SseHub &) = delete;

  void start();
  // Ends every stream (the clients reconnect with Last-Event-ID) and joins the threads.
  void stop();

  // Adds a viewer of fid from after_seq on (-1: from the start), of kinds (empty: all),
  // formatted as kodosumi's formatter does (kodosumi_format.hpp) or raw. The stream ends
  // with an eof frame once the execution's final status has been sent.
  void subscribe(const std::string &fid, std::vector<std::string> kinds, int64_t after_seq,
                 bool formatted, std::shared_ptr<HttpStream> stream);

  void on_stored(const kodo_event *const *events, size_t count, double stored_at) override;

  size_t viewers() const;

 private:
  struct Viewer {
    std::shared_ptr<HttpStream> stream;
    std::vector<std::string> kinds;
    bool formatted = false;
    int64_t after = -1;  // every matching event up to here has been sent
    // Set by the reader once the history is queued; read by the keep-alive tick too.
    std::atomic<bool> caught_up{false};
    std::string out;  // frames gathered for one write
    bool wants(const std::string &kind) const;
  };
  struct Watched {
    std::vector<std::shared_ptr<Viewer>> viewers;
    int64_t cursor = -1;  // the live read's position
    bool cursor_known = false;
    bool queued = false;
    bool busy = false;
    bool dirty = false;     // new events may be stored
    double not_before = 0;  // the next live read waits until then (batch_s)
    // The spooler's notices not yet sent: (the last seq it committed, when), oldest first.
    std::vector<std::pair<int64_t, double>> commits;
  };

  void run();
  void pump(const std::string &fid);
  // Reads fid's events after `after` (of kinds) page by page, giving each to `sink`.
  // False when storage failed.
  template <typename Sink>
  bool read_all(const std::string &fid, const std::vector<std::string> &kinds, int64_t after,
                Sink &&sink);
  void queue_locked(const std::string &fid, Watched &w);
  void tick_locked(double now, std::vector<std::shared_ptr<HttpStream>> &alive_to);
  void undefer_locked(double now);  // due deferred_ entries go back to ready_
  void append_event(std::string &out, const Event &e, bool formatted) const;

  Storage &storage_;
  const Executor &executor_;
  SseHubConfig config_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::map<std::string, Watched> watched_;
  std::deque<std::string> ready_;
  // Queued executions read too recently (not_before): back into ready_ when due.
  std::vector<std::pair<double, std::string>> deferred_;
  size_t viewers_ = 0;
  double next_poll_ = 0;
  double next_alive_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace kodo
