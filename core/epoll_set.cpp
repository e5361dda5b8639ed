// epoll_set.cpp: see epoll_set.hpp.
#include "core/epoll_set.hpp"

#include <kodo/host/error.hpp>

#include <cerrno>
#include <string>
#include <system_error>

#include <unistd.h>

namespace kodo {

namespace {
constexpr int kMaxReady = 256;
}

EpollSet::EpollSet() : fd_(::epoll_create1(EPOLL_CLOEXEC)) {
  if (fd_ < 0) throw Error(KODO_ERR_IO, "epoll_create1: " + std::generic_category().message(errno));
}

EpollSet::~EpollSet() {
  ::close(fd_);
}

void EpollSet::begin_round() {
  ++round_;
}

void EpollSet::want(int fd, uint32_t events) {
  auto [it, added] = registered_.try_emplace(fd);
  Registration &r = it->second;
  r.round = round_;
  if (!added && r.events == events) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(fd_, added ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) != 0) {
    // A descriptor epoll cannot watch (never one of a flow's pipes) is simply not waited on.
    registered_.erase(it);
    return;
  }
  r.events = events;
}

void EpollSet::end_round() {
  for (auto it = registered_.begin(); it != registered_.end();) {
    if (it->second.round == round_) {
      ++it;
      continue;
    }
    ::epoll_ctl(fd_, EPOLL_CTL_DEL, it->first, nullptr);
    it = registered_.erase(it);
  }
}

void EpollSet::forget(int fd) {
  if (registered_.erase(fd) > 0) ::epoll_ctl(fd_, EPOLL_CTL_DEL, fd, nullptr);
}

bool EpollSet::wait(int timeout_ms) {
  ready_.resize(kMaxReady);
  const int n = ::epoll_wait(fd_, ready_.data(), kMaxReady, timeout_ms);
  ready_.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return n >= 0 || errno == EINTR;
}

}  // namespace kodo
