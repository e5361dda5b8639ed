// worker_pool.hpp: the helper threads one SQLite append spreads its executions over.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kodo_sqlite {

// Runs the executions of one append on several threads. Each execution has its own database,
// so their transactions are independent; a single thread spends most of its time in SQLite's
// fixed cost per transaction (locks, WAL frame writes), which threads overlap.
class WorkerPool {
 public:
  explicit WorkerPool(size_t helpers) {
    for (size_t i = 0; i < helpers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto &t : threads_) t.join();
  }
  WorkerPool(const WorkerPool &) = delete;
  WorkerPool &operator=(const WorkerPool &) = delete;

  // Calls fn(i) for each i in [0, n) on this thread and the helpers; fn must not throw.
  // While another call runs, this one works alone rather than wait for it.
  void run(size_t n, const std::function<void(size_t)> &fn) {
    std::unique_lock run_lock(run_mu_, std::try_to_lock);
    if (threads_.empty() || n < 2 || !run_lock.owns_lock()) {
      for (size_t i = 0; i < n; ++i) fn(i);
      return;
    }
    {
      std::lock_guard lock(mu_);
      job_ = &fn;
      n_ = n;
      next_ = 0;
      busy_ = threads_.size();
      ++generation_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock lock(mu_);
    done_.wait(lock, [&] { return busy_ == 0; });
    job_ = nullptr;
  }

 private:
  void drain() {
    for (size_t i; (i = next_.fetch_add(1)) < n_;) (*job_)(i);
  }
  void work() {
    uint64_t seen = 0;
    std::unique_lock lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      lock.unlock();
      drain();
      lock.lock();
      if (--busy_ == 0) done_.notify_one();
    }
  }

  std::mutex run_mu_;  // one run at a time uses the helpers
  std::mutex mu_;      // guards the job fields below and the helpers' waits
  std::condition_variable wake_, done_;
  const std::function<void(size_t)> *job_ = nullptr;
  size_t n_ = 0;
  std::atomic<size_t> next_{0};
  size_t busy_ = 0;  // helpers still working on this generation
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace kodo_sqlite
