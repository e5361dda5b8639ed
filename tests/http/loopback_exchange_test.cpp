// The api fuzz target's client (fuzz/loopback_exchange.hpp) under the signals libFuzzer
// sends it: SIGALRM, handled without SA_RESTART. Before the client retried on EINTR, an
// alarm landing in its connect, send, poll or recv was reported as a server that never
// finished its answer.
#include "fuzz/loopback_exchange.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<int> alarms{0};

void on_alarm(int) {
  alarms.fetch_add(1);
}

// SIGALRM every millisecond to this process, handled as libFuzzer does (no SA_RESTART),
// for the life of the object.
class Alarms {
 public:
  Alarms() {
    struct sigaction action {};
    action.sa_handler = on_alarm;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    sigaction(SIGALRM, &action, &old_);
    itimerval every{{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &every, nullptr);
  }
  ~Alarms() {
    itimerval off{};
    setitimer(ITIMER_REAL, &off, nullptr);
    sigaction(SIGALRM, &old_, nullptr);
  }
  Alarms(const Alarms &) = delete;
  Alarms &operator=(const Alarms &) = delete;

 private:
  struct sigaction old_ {};
};

}  // namespace

TEST(LoopbackExchange, AlarmsWithoutRestartNeitherCutTheRequestNorTheWaitForTheAnswer) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof address;
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr *>(&address), sizeof address), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr *>(&address), &len), 0);

  // 8 MiB is more than the socket buffers hold, so the client's send blocks until the
  // server reads; the server reads nothing and answers nothing until the client has been
  // interrupted many times, so the alarms land in its send and in its wait for the answer.
  const std::string request(size_t{8} << 20, 'r');
  const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  size_t received = 0;
  std::atomic<bool> client_done{false};  // a client that gives up early must not hang the test
  auto alarms_past = [&](int n) {
    while (alarms.load() < n && !client_done.load()) usleep(1000);
  };
  std::thread server([&] {
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &block, nullptr);  // the alarms go to the client's thread
    const int c = accept(listener, nullptr, nullptr);
    if (c < 0) return;
    alarms_past(50);
    std::vector<char> buffer(65536);
    for (ssize_t n; (n = recv(c, buffer.data(), buffer.size(), 0)) > 0;)
      received += static_cast<size_t>(n);
    alarms_past(alarms.load() + 50);
    (void)send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
    close(c);
  });

  kodo::fuzz::ExchangeResult r;
  {
    Alarms interrupting;
    r = kodo::fuzz::loopback_exchange(ntohs(address.sin_port),
                                      reinterpret_cast<const uint8_t *>(request.data()),
                                      request.size(), 120000);
  }
  client_done.store(true);
  server.join();
  close(listener);
  EXPECT_TRUE(r.complete) << r.error << " after " << r.waited_s << " s";
  EXPECT_EQ(received, request.size());
  EXPECT_EQ(r.answer, answer);
  EXPECT_GE(alarms.load(), 100);
}
