// Tests of EpollSet, the executor supervisor's wait: registrations follow each round's
// wants, and a forgotten descriptor is never reported, even while a duplicate of it lives on
// (as in a child between fork and exec).
#include "core/epoll_set.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

namespace kodo {
namespace {

struct PipeFds {
  int r = -1, w = -1;
  PipeFds() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    r = fds[0];
    w = fds[1];
  }
  ~PipeFds() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
};

bool reported(const EpollSet &set, int fd) {
  const auto &ready = set.ready();
  return std::any_of(ready.begin(), ready.end(),
                     [fd](const epoll_event &e) { return e.data.fd == fd; });
}

TEST(EpollSet, ReportsWhatEachRoundWants) {
  EpollSet set;
  PipeFds a, b;
  ASSERT_EQ(::write(a.w, "x", 1), 1);
  ASSERT_EQ(::write(b.w, "y", 1), 1);
  set.begin_round();
  set.want(a.r, EPOLLIN);
  set.want(b.r, EPOLLIN);
  set.end_round();
  ASSERT_TRUE(set.wait(1000));
  EXPECT_TRUE(reported(set, a.r));
  EXPECT_TRUE(reported(set, b.r));

  // Not wanted again: no longer watched, though still readable.
  set.begin_round();
  set.want(a.r, EPOLLIN);
  set.end_round();
  ASSERT_TRUE(set.wait(0));
  EXPECT_TRUE(reported(set, a.r));
  EXPECT_FALSE(reported(set, b.r));

  // A changed interest: the write end is writable at once.
  set.begin_round();
  set.want(a.w, EPOLLOUT);
  set.end_round();
  ASSERT_TRUE(set.wait(1000));
  EXPECT_TRUE(reported(set, a.w));
  EXPECT_FALSE(reported(set, a.r));
}

TEST(EpollSet, ForgottenDescriptorIsNotReportedThroughADuplicate) {
  EpollSet set;
  PipeFds p;
  set.begin_round();
  set.want(p.r, EPOLLIN);
  set.end_round();
  const int dup = ::fcntl(p.r, F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(dup, 0);
  set.forget(p.r);
  ::close(p.r);
  const int old = p.r;
  p.r = -1;
  ASSERT_EQ(::write(p.w, "x", 1), 1);  // the file behind the duplicate is readable
  ASSERT_TRUE(set.wait(0));
  EXPECT_FALSE(reported(set, old));
  ::close(dup);
  set.forget(-1);  // a closed run's -1 is ignored
}

}  // namespace
}  // namespace kodo
