// spooler.hpp: moves events from the transport into storage in batches, and acknowledges
// only what storage has committed. Several consumers (threads here, processes elsewhere)
// share one group; the transport keeps each execution with one consumer at a time.
#pragma once

#include "core/metrics.hpp"
#include "core/storage.hpp"
#include "core/transport.hpp"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kodo {

// Told about every committed batch (called on a spooler thread, after the ack).
class StoredObserver {
 public:
  virtual ~StoredObserver() = default;
  virtual void on_stored(const kodo_event *const *events, size_t count, double stored_at) = 0;
};

// Remembers, per execution, the highest seq stored by this process and whether its final
// status is stored, so SSE streams wake on new events and DELETE can wait for the end.
class StoreNotifier : public StoredObserver {
 public:
  void on_stored(const kodo_event *const *events, size_t count, double stored_at) override;
  // Waits until fid has a stored seq > after_seq or its end is stored, up to timeout_s.
  // True when something changed (the caller reads storage either way).
  bool wait_for_change(const std::string &fid, int64_t after_seq, double timeout_s);
  // Waits until fid's final status is stored by this process; false on timeout.
  bool wait_for_final(const std::string &fid, double timeout_s);

 private:
  struct State {
    int64_t last_seq = -1;
    bool final = false;
    double final_at = 0;
  };
  void forget_old_locked(double now);
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, State> executions_;
  double last_sweep_ = 0;
};

struct SpoolerConfig {
  std::string group = "kodo-spooler";
  std::string consumer_name;       // threads add "-<n>"; default spooler-<host>-<pid>
  size_t consumers = 1;            // threads in this process
  size_t batch_size = 1000;        // most events per storage append
  double batch_timeout_s = 0.005;  // how long to wait for a batch to fill after its first event
  double interval_s = 0.25;     // how long one read blocks when idle (kodosumi's SPOOLER_INTERVAL)
  double max_backoff_s = 5;     // retry ceiling while storage fails
  double drain_timeout_s = 60;  // on stop, how long to keep draining the transport
  // On stop, end after the batch in hand instead of draining: a standalone spooler beside
  // others, whose producers keep running, would otherwise take new work until the timeout;
  // closing its consumers hands what it leaves to the others.
  bool stop_at_once = false;
};

class Spooler {
 public:
  Spooler(SpoolerConfig config, Transport &transport, Storage &storage, Metrics &metrics,
          std::vector<StoredObserver *> observers);
  ~Spooler();
  Spooler(const Spooler &) = delete;
  Spooler &operator=(const Spooler &) = delete;

  void start();
  // Stops reading new work once the transport is empty (or drain_timeout_s passed; with
  // stop_at_once, at once), stores and acks everything read, and joins the threads.
  void stop_and_drain();

 private:
  struct Buffers;  // what one consumer thread reuses from batch to batch
  void run(Consumer &consumer);
  // One read-store-ack round; false when the thread should end.
  bool spool_once(Consumer &consumer, Buffers &buffers);
  // Stores a batch; false if stopping made us give up (the batch stays unacked and the
  // transport redelivers it). A retryable failure is retried with backoff; a batch refused
  // for good is split down to the events that cause it, which are recorded as error events.
  bool store(const kodo_event *const *events, size_t count);
  enum class Attempt { stored, refused, abandoned };
  // Appends with backoff while failures are retryable; *why says why it was refused.
  Attempt append_retrying(const kodo_event *const *events, size_t count, std::string *why);
  // Stores, in place of an event storage refuses for good, an error event at its seq.
  bool record_refused(const kodo_event &refused, const std::string &why);
  // Waits up to `seconds` unless the drain is abandoned; true when it is.
  bool wait_abandoned(double seconds);

  SpoolerConfig config_;
  Transport &transport_;
  Storage &storage_;
  Metrics &metrics_;
  std::vector<StoredObserver *> observers_;
  std::vector<std::thread> threads_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> abandon_{false};
  std::mutex wake_mutex_;
  std::condition_variable wake_;
};

}  // namespace kodo
