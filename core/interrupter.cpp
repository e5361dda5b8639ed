#include "core/interrupter.hpp"

#include "core/log.hpp"

#include <algorithm>

namespace kodo {

Interrupter::Interrupter(std::function<void()> interrupt) : interrupt_(std::move(interrupt)) {}

Interrupter::~Interrupter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

Interrupter::Armed::~Armed() {
  if (!owner_ || id_ == 0) return;
  std::lock_guard<std::mutex> lock(owner_->mutex_);
  owner_->deadlines_.erase(id_);
}

Interrupter::Armed Interrupter::arm(double seconds) {
  if (!interrupt_ || !(seconds > 0)) return Armed(nullptr, 0);
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t id = next_id_++;
  deadlines_[id] = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  if (!watcher_.joinable()) watcher_ = std::thread([this] { watch(); });
  changed_.notify_all();
  return Armed(this, id);
}

void Interrupter::interrupt_now() {
  if (interrupt_) interrupt_();
}

uint64_t Interrupter::deadlines_passed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return passed_;
}

void Interrupter::watch() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    if (deadlines_.empty()) {
      changed_.wait(lock);
      continue;
    }
    auto first = std::min_element(deadlines_.begin(), deadlines_.end(),
                                  [](const auto &a, const auto &b) { return a.second < b.second; });
    // A copy: the wait lets go of the lock, and the deadline's owner may erase it meanwhile.
    const Clock::time_point due = first->second;
    if (Clock::now() < due) {
      changed_.wait_until(lock, due);
      continue;
    }
    // Each passed deadline interrupts once; the call then returns and disarms itself.
    deadlines_.erase(first);
    ++passed_;
    lock.unlock();
    log_warn("a plugin call ran past its deadline: interrupting it");
    interrupt_();
    lock.lock();
  }
}

}  // namespace kodo
