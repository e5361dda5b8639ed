// interrupter.hpp: calls a plugin handle's interrupt when a call runs past its deadline, so a
// backend that hangs gives its thread back (kodo_storage_api.interrupt, in the spirit of
// sqlite3_interrupt). One watcher thread per handle, started on the first deadline.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

namespace kodo {

class Interrupter {
 public:
  // `interrupt` empty: the handle cannot be interrupted and arm() does nothing.
  explicit Interrupter(std::function<void()> interrupt);
  ~Interrupter();
  Interrupter(const Interrupter &) = delete;
  Interrupter &operator=(const Interrupter &) = delete;

  // A deadline for one call: disarmed when it goes out of scope.
  class Armed {
   public:
    Armed(Interrupter *owner, uint64_t id) : owner_(owner), id_(id) {}
    ~Armed();
    Armed(const Armed &) = delete;
    Armed &operator=(const Armed &) = delete;

   private:
    Interrupter *owner_;
    uint64_t id_;
  };

  // Interrupts the handle if the call has not returned within `seconds` (<= 0: no deadline).
  Armed arm(double seconds);
  // Interrupts every call now running (shutdown after the drain timeout).
  void interrupt_now();
  bool can_interrupt() const { return static_cast<bool>(interrupt_); }
  // How many times a deadline passed.
  uint64_t deadlines_passed() const;

 private:
  using Clock = std::chrono::steady_clock;
  void watch();

  std::function<void()> interrupt_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<uint64_t, Clock::time_point> deadlines_;
  uint64_t next_id_ = 1;
  uint64_t passed_ = 0;
  bool stopping_ = false;
  std::thread watcher_;
};

}  // namespace kodo
