// epoll_set.hpp: the executor supervisor's wait. It watches each flow's pipes and pidfd;
// rebuilding a pollfd array and polling every descriptor on each round cost about a third
// of the host's time with 100 flows writing 10,000 events/s (bench/http.sh, perf), so
// descriptors are registered once and the kernel reports only the ready ones.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include <sys/epoll.h>

namespace kodo {

// Not thread-safe: one thread (the supervisor) owns it.
class EpollSet {
 public:
  EpollSet();  // throws kodo::Error(KODO_ERR_IO) when epoll_create1 fails
  ~EpollSet();
  EpollSet(const EpollSet &) = delete;
  EpollSet &operator=(const EpollSet &) = delete;

  // A round states every descriptor wanted now (epoll_ctl only for what changed); those
  // not wanted again by end_round() are removed.
  void begin_round();
  void want(int fd, uint32_t events);
  void end_round();
  // Must be called before fd is closed: a registration outlives close() while a forked
  // child still holds a duplicate, and would then report a descriptor that is not ours.
  void forget(int fd);

  // Waits up to timeout_ms (-1: no limit); the ready descriptors' fds and events are in
  // ready(). False (with errno) when epoll_wait failed other than by EINTR.
  bool wait(int timeout_ms);
  const std::vector<epoll_event> &ready() const { return ready_; }

 private:
  struct Registration {
    uint32_t events = 0;
    uint64_t round = 0;  // the last round that wanted it
  };
  int fd_ = -1;
  uint64_t round_ = 0;
  std::unordered_map<int, Registration> registered_;
  std::vector<epoll_event> ready_;
};

}  // namespace kodo
