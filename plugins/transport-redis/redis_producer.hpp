// redis_producer.hpp: the producer side of the Redis transport (see redis_transport.cpp for
// the design): publish() formats and queues, one writer thread pipelines the queue to Redis,
// and a Redis that lost its data has the executions under way announced again.
#pragma once

#include "redis_connection.hpp"
#include "redis_settings.hpp"

#include <kodo/plugin.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kodo::redis {

// Commands of one publish call, formatted, waiting for the writer.
struct Chunk {
  std::string resp;
  std::vector<size_t> ends;       // offset just past each command
  std::vector<uint8_t> is_event;  // per command: an XADD of one event (else an announcement)
  size_t first = 0;               // commands before this one are confirmed
  size_t events = 0;              // events not yet confirmed
  std::vector<std::pair<std::string, std::string>> executions;  // (fid, username), once each
};

class Producer {
 public:
  Producer(const Producer &) = delete;  // owns a thread and a connection
  Producer &operator=(const Producer &) = delete;
  Producer(const Settings &settings, kodo::sdk::HostLog log);
  // Writes what is queued for up to 10 s more, then reports loudly what could not be written.
  ~Producer();

  void publish(const kodo_event *const *events, size_t count, int32_t timeout_ms);
  std::vector<Metric> metrics();

 private:
  static std::string seconds_since(Clock::time_point t);
  Chunk format(const kodo_event *const *events, size_t count) const;
  void track(const kodo_event *const *events, size_t count);
  void requeue_finals();
  void check_epoch();
  size_t reannouncements(const std::vector<Chunk *> &batch, std::string &resp,
                         std::vector<std::pair<std::string, std::string>> &sent);
  void set_up(bool up);
  void write_loop();

  const Settings &settings_;
  kodo::sdk::HostLog log_;
  Connection connection_;  // used by the writer thread only
  std::mutex mutex_;
  std::condition_variable wake_;   // work for the writer, or stop
  std::condition_variable space_;  // the buffer has room
  std::deque<Chunk> queue_;
  size_t buffered_events_ = 0, buffered_bytes_ = 0;
  bool stopping_ = false;
  Clock::time_point stop_by_{};
  bool up_ = true;
  Clock::time_point down_since_{};
  std::string down_error_;
  std::atomic<uint64_t> written_{0}, refused_{0}, dropped_{0}, reconnects_{0}, data_lost_{0};
  struct SavedEvent {
    std::string fid, username;
    int64_t seq;
    double timestamp;
    std::string status;
  };
  static constexpr size_t kKeepFinals = 10000;
  static constexpr milliseconds kIdleEpochCheck{1000};
  std::mutex live_mutex_;
  std::unordered_map<std::string, std::string> live_;  // fid -> username, under way
  std::deque<SavedEvent> finals_;                      // the newest final statuses
  // The writer thread's alone.
  std::string epoch_;  // the data epoch Redis had at the last check
  uint64_t epoch_reconnects_ = 0;
  std::map<std::string, std::string> reannounce_;  // fid -> username, to announce again
  std::thread writer_;                             // last: starts once everything above exists
};

}  // namespace kodo::redis
