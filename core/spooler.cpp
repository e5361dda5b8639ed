#include "core/spooler.hpp"

#include "core/error.hpp"
#include "core/log.hpp"

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

namespace kodo {

using Clock = std::chrono::steady_clock;

static bool is_final_status_event(const kodo_event &e) {
  return std::strcmp(e.kind, "status") == 0 &&
         is_final_status(std::string(e.payload, e.payload_len));
}

// ---- StoreNotifier -------------------------------------------------------------------

void StoreNotifier::on_stored(const kodo_event *const *events, size_t count, double stored_at) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < count; ++i) {
      const kodo_event &e = *events[i];
      State &state = executions_[e.fid];
      state.last_seq = std::max(state.last_seq, e.seq);
      if (is_final_status_event(e)) {
        state.final = true;
        state.final_at = stored_at;
      }
    }
    forget_old_locked(stored_at);
  }
  changed_.notify_all();
}

// Ended executions are forgotten a while after their end, keeping the map small.
void StoreNotifier::forget_old_locked(double now) {
  if (now - last_sweep_ < 10) return;
  last_sweep_ = now;
  for (auto it = executions_.begin(); it != executions_.end();)
    it = (it->second.final && now - it->second.final_at > 300) ? executions_.erase(it)
                                                               : std::next(it);
}

bool StoreNotifier::wait_for_change(const std::string &fid, int64_t after_seq, double timeout_s) {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] {
    auto it = executions_.find(fid);
    return it != executions_.end() && (it->second.last_seq > after_seq || it->second.final);
  });
}

bool StoreNotifier::wait_for_final(const std::string &fid, double timeout_s) {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] {
    auto it = executions_.find(fid);
    return it != executions_.end() && it->second.final;
  });
}

// ---- Spooler -------------------------------------------------------------------------

Spooler::Spooler(SpoolerConfig config, Transport &transport, Storage &storage, Metrics &metrics,
                 std::vector<StoredObserver *> observers)
    : config_(std::move(config)),
      transport_(transport),
      storage_(storage),
      metrics_(metrics),
      observers_(std::move(observers)) {
  // Unique across machines too: a cross-process transport tells spoolers apart by name.
  if (config_.consumer_name.empty()) {
    char host[256] = "";
    ::gethostname(host, sizeof host - 1);
    config_.consumer_name =
        "spooler-" + std::string(*host ? host : "host") + "-" + std::to_string(::getpid());
  }
  config_.consumers = std::max<size_t>(1, config_.consumers);
  config_.batch_size = std::max<size_t>(1, config_.batch_size);
}

Spooler::~Spooler() {
  if (!threads_.empty()) stop_and_drain();
}

void Spooler::start() {
  // Open every consumer before any thread runs, so a refused group fails start().
  std::vector<std::shared_ptr<Consumer>> consumers;
  for (size_t i = 0; i < config_.consumers; ++i) {
    std::string name = config_.consumers == 1 ? config_.consumer_name
                                              : config_.consumer_name + "-" + std::to_string(i);
    consumers.push_back(transport_.open_consumer(config_.group, name));
  }
  for (auto &consumer : consumers) threads_.emplace_back([this, consumer] { run(*consumer); });
}

void Spooler::stop_and_drain() {
  draining_ = true;
  std::thread watchdog([this] {
    std::unique_lock<std::mutex> lock(wake_mutex_);
    if (!wake_.wait_for(lock, std::chrono::duration<double>(config_.drain_timeout_s),
                        [this] { return abandon_.load(); })) {
      log_warn("spooler: drain did not finish within " + std::to_string(config_.drain_timeout_s) +
               " s; what is left stays unacknowledged in the transport");
      abandon_ = true;
    }
  });
  for (auto &t : threads_) t.join();
  threads_.clear();
  {
    std::lock_guard<std::mutex> lock(wake_mutex_);
    abandon_ = true;
  }
  wake_.notify_all();
  watchdog.join();
}

bool Spooler::store(const std::vector<const kodo_event *> &events) {
  double backoff = 0.05;
  for (;;) {
    try {
      storage_.append(events.data(), events.size());
      if (metrics_.storage_up.exchange(1) == 0) log_info("spooler: storage is back");
      return true;
    } catch (const Error &e) {
      metrics_.store_failures.fetch_add(1, std::memory_order_relaxed);
      if (metrics_.storage_up.exchange(0) == 1)
        log_error("spooler: storing " + std::to_string(events.size()) +
                  " events failed, retrying with backoff: " + e.what());
    }
    std::unique_lock<std::mutex> lock(wake_mutex_);
    if (wake_.wait_for(lock, std::chrono::duration<double>(backoff),
                       [this] { return abandon_.load(); }))
      return false;
    backoff = std::min(backoff * 2, config_.max_backoff_s);
  }
}

void Spooler::run(Consumer &consumer) {
  std::vector<DeliveryBatch> batches;
  std::vector<const kodo_event *> events;
  std::vector<uint64_t> ids;
  std::vector<std::string> finished;
  bool read_failing = false;
  const int32_t idle_block_ms = static_cast<int32_t>(config_.interval_s * 1000);
  for (;;) {
    if (abandon_) break;
    const bool draining = draining_;
    if (draining && config_.stop_at_once) break;
    batches.clear();
    events.clear();
    ids.clear();
    finished.clear();
    // The first read waits for work; once something came, keep reading for at most
    // batch_timeout_s so that a busy transport yields full batches and a quiet one low
    // latency.
    const auto fill_deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(config_.batch_timeout_s));
    try {
      while (events.size() < config_.batch_size) {
        int32_t block_ms = 0;
        if (events.empty()) {
          block_ms = draining ? 0 : idle_block_ms;
        } else {
          auto left =
              std::chrono::duration_cast<std::chrono::milliseconds>(fill_deadline - Clock::now());
          if (left.count() <= 0) break;
          block_ms = static_cast<int32_t>(left.count());
        }
        DeliveryBatch batch;
        consumer.read(config_.batch_size - events.size(), block_ms, batch);
        if (batch.empty()) break;
        for (size_t i = 0; i < batch.size(); ++i) {
          events.push_back(batch[i].event);
          ids.push_back(batch[i].delivery_id);
          if (batch[i].delivery_count > 1)
            metrics_.redeliveries.fetch_add(1, std::memory_order_relaxed);
        }
        batches.push_back(std::move(batch));
      }
      if (read_failing) log_info("spooler: consumer '" + consumer.name() + "' reads again");
      read_failing = false;
    } catch (const Error &e) {
      // Logged when it starts failing, not on every retry while a server is away.
      if (!read_failing) log_error("spooler: " + std::string(e.what()) + " (retrying)");
      read_failing = true;
      std::unique_lock<std::mutex> lock(wake_mutex_);
      wake_.wait_for(lock, std::chrono::milliseconds(200), [this] { return abandon_.load(); });
    }
    if (events.empty()) {
      if (draining) break;  // the transport is empty: drained
      continue;
    }
    if (!store(events)) break;
    const double stored_at = now_seconds();
    try {
      consumer.ack(ids.data(), ids.size());
    } catch (const Error &e) {
      // Stored but not acked: the transport redelivers and idempotent storage absorbs it.
      metrics_.ack_failures.fetch_add(1, std::memory_order_relaxed);
      log_warn("spooler: " + std::string(e.what()));
    }
    double newest = 0;
    for (const kodo_event *e : events) {
      metrics_.stored_latency.observe(stored_at - e->timestamp);
      newest = std::max(newest, e->timestamp);
      if (is_final_status_event(*e)) finished.emplace_back(e->fid);
    }
    metrics_.spool_lag_ms.store(static_cast<int64_t>(std::llround((stored_at - newest) * 1000)),
                                std::memory_order_relaxed);
    metrics_.events_stored.fetch_add(events.size(), std::memory_order_relaxed);
    metrics_.batches_stored.fetch_add(1, std::memory_order_relaxed);
    metrics_.batch_size.observe(static_cast<double>(events.size()));
    for (StoredObserver *observer : observers_)
      observer->on_stored(events.data(), events.size(), stored_at);
    for (const std::string &fid : finished) {
      metrics_.executions_finished.fetch_add(1, std::memory_order_relaxed);
      try {
        transport_.finish_execution(fid);
      } catch (const Error &e) {
        log_warn("spooler: " + std::string(e.what()));
      }
    }
  }
}

}  // namespace kodo
