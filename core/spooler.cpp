#include "core/spooler.hpp"
#include "core/thread_name.hpp"

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>

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
  for (auto &consumer : consumers)
    threads_.emplace_back([this, consumer] {
      name_this_thread("kodo-spooler");
      run(*consumer);
    });
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
      lock.unlock();
      wake_.notify_all();
      // A call hanging in a backend gives its thread back (when the plugin can be interrupted).
      storage_.interrupt();
      transport_.interrupt();
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

bool Spooler::wait_abandoned(double seconds) {
  std::unique_lock<std::mutex> lock(wake_mutex_);
  return wake_.wait_for(lock, std::chrono::duration<double>(seconds),
                        [this] { return abandon_.load(); });
}

Spooler::Attempt Spooler::append_retrying(const kodo_event *const *events, size_t count,
                                          std::string *why) {
  double backoff = 0.05;
  for (;;) {
    std::string failure;
    try {
      storage_.append(events, count);
      if (metrics_.storage_up.exchange(1) == 0) log_info("spooler: storage is back");
      return Attempt::stored;
    } catch (const Error &e) {
      if (!e.retryable()) {
        *why = e.what();
        return Attempt::refused;
      }
      failure = e.what();
    } catch (const std::exception &e) {  // not the plugin's verdict: retried like an outage
      failure = std::string("unexpected exception: ") + e.what();
    }
    metrics_.store_failures.fetch_add(1, std::memory_order_relaxed);
    if (metrics_.storage_up.exchange(0) == 1)
      log_error("spooler: storing " + std::to_string(count) +
                " events failed, retrying with backoff: " + failure);
    if (wait_abandoned(backoff)) return Attempt::abandoned;
    backoff = std::min(backoff * 2, config_.max_backoff_s);
  }
}

bool Spooler::store(const kodo_event *const *events, size_t count) {
  std::string why;
  switch (append_retrying(events, count, &why)) {
    case Attempt::stored: return true;
    case Attempt::abandoned: return false;
    case Attempt::refused: break;
  }
  if (count == 1) return record_refused(*events[0], why);
  // Halves until the refused events are alone: every other event is stored, in order.
  const size_t half = count / 2;
  return store(events, half) && store(events + half, count - half);
}

bool Spooler::record_refused(const kodo_event &refused, const std::string &why) {
  metrics_.events_refused.fetch_add(1, std::memory_order_relaxed);
  const std::string what = "event seq " + std::to_string(refused.seq) + " (kind '" +
                           (refused.kind ? refused.kind : "") + "', " +
                           std::to_string(refused.payload_len) + " bytes) of execution " +
                           (refused.fid ? refused.fid : "(none)");
  log_error("spooler: storage refused " + what + " for good: " + why);
  Event error = Event::copy(refused);
  error.kind = "error";
  error.payload = "kodo: storage refused " + what + ": " + why;
  const kodo_event view = error.view();
  const kodo_event *pointer = &view;
  std::string again;
  switch (append_retrying(&pointer, 1, &again)) {
    case Attempt::stored: return true;
    case Attempt::abandoned: return false;
    case Attempt::refused: break;
  }
  // Its fid or username is what storage refuses: nothing of it can be stored.
  log_error("spooler: the error event recording it was refused too, " + what +
            " is dropped: " + again);
  return true;
}

struct Spooler::Buffers {
  std::vector<DeliveryBatch> batches;
  std::vector<const kodo_event *> events;
  std::vector<uint64_t> ids;
  std::vector<std::string> finished;
  bool read_failing = false;
};

void Spooler::run(Consumer &consumer) {
  Buffers buffers;
  for (;;) {
    // A thread ends only when told to: any exception costs this round (its deliveries stay
    // unacked and come back), never the thread.
    try {
      if (!spool_once(consumer, buffers)) break;
    } catch (const std::exception &e) {
      log_error("spooler: consumer '" + consumer.name() + "': " + e.what() + " (continuing)");
      if (wait_abandoned(0.2)) break;
    } catch (...) {
      log_error("spooler: consumer '" + consumer.name() +
                "': unexpected non-standard exception (continuing)");
      if (wait_abandoned(0.2)) break;
    }
  }
}

bool Spooler::spool_once(Consumer &consumer, Buffers &b) {
  if (abandon_) return false;
  const bool draining = draining_;
  if (draining && config_.stop_at_once) return false;
  b.batches.clear();
  b.events.clear();
  b.ids.clear();
  b.finished.clear();
  const int32_t idle_block_ms = static_cast<int32_t>(config_.interval_s * 1000);
  // The first read waits for work; once something came, keep reading for at most
  // batch_timeout_s so that a busy transport yields full batches and a quiet one low
  // latency.
  const auto fill_deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(config_.batch_timeout_s));
  try {
    while (b.events.size() < config_.batch_size) {
      int32_t block_ms = 0;
      if (b.events.empty()) {
        block_ms = draining ? 0 : idle_block_ms;
      } else {
        auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(fill_deadline - Clock::now());
        if (left.count() <= 0) break;
        block_ms = static_cast<int32_t>(left.count());
      }
      DeliveryBatch batch;
      consumer.read(config_.batch_size - b.events.size(), block_ms, batch);
      if (batch.empty()) break;
      for (size_t i = 0; i < batch.size(); ++i) {
        b.events.push_back(batch[i].event);
        b.ids.push_back(batch[i].delivery_id);
        if (batch[i].delivery_count > 1)
          metrics_.redeliveries.fetch_add(1, std::memory_order_relaxed);
      }
      b.batches.push_back(std::move(batch));
    }
    if (b.read_failing) log_info("spooler: consumer '" + consumer.name() + "' reads again");
    b.read_failing = false;
  } catch (const Error &e) {
    // Logged when it starts failing, not on every retry while a server is away.
    if (!b.read_failing) log_error("spooler: " + std::string(e.what()) + " (retrying)");
    b.read_failing = true;
    if (wait_abandoned(0.2)) return false;
  }
  if (b.events.empty()) return !draining;  // draining and the transport is empty: drained
  if (!store(b.events.data(), b.events.size())) return false;
  const double stored_at = now_seconds();
  try {
    consumer.ack(b.ids.data(), b.ids.size());
  } catch (const Error &e) {
    // Stored but not acked: the transport redelivers and idempotent storage absorbs it.
    metrics_.ack_failures.fetch_add(1, std::memory_order_relaxed);
    log_warn("spooler: " + std::string(e.what()));
  }
  double newest = 0;
  for (const kodo_event *e : b.events) {
    metrics_.stored_latency.observe(stored_at - e->timestamp);
    newest = std::max(newest, e->timestamp);
    if (is_final_status_event(*e)) b.finished.emplace_back(e->fid);
  }
  metrics_.spool_lag_ms.store(static_cast<int64_t>(std::llround((stored_at - newest) * 1000)),
                              std::memory_order_relaxed);
  metrics_.events_stored.fetch_add(b.events.size(), std::memory_order_relaxed);
  metrics_.batches_stored.fetch_add(1, std::memory_order_relaxed);
  metrics_.batch_size.observe(static_cast<double>(b.events.size()));
  for (StoredObserver *observer : observers_)
    observer->on_stored(b.events.data(), b.events.size(), stored_at);
  for (const std::string &fid : b.finished) {
    metrics_.executions_finished.fetch_add(1, std::memory_order_relaxed);
    try {
      transport_.finish_execution(fid);
    } catch (const Error &e) {
      log_warn("spooler: " + std::string(e.what()));
    }
  }
  return true;
}

}  // namespace kodo
