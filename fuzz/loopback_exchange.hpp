// loopback_exchange.hpp: the api fuzz target's client, apart so that a test can hold it to
// what it must survive inside libFuzzer.
//
// libFuzzer (-timeout=N) arms an interval timer that sends SIGALRM every N/2+1 seconds and
// handles it without SA_RESTART, so a connect, send, poll or recv waiting at that moment
// returns EINTR. The client used to take that for "no answer" and reported a 60 s stall,
// with its timeout in the message rather than the time it had waited. Every call here is
// retried on EINTR, and a stall reports how long it waited. (The real stall it then showed,
// a connection kept to the idle timeout after the client's end of input, was the server's:
// see HttpServer.EndOfInputReadDuringAStreamEndsTheConnection.)
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace kodo {
namespace fuzz {

struct ExchangeResult {
  std::string answer;
  bool complete = false;  // the server closed the connection after its answer
  double waited_s = 0;    // from the request sent to the end (or the give-up)
  std::string error;      // why it is not complete
};

// Waits up to deadline for events on fd; 0 on timeout, -1 with errno on failure.
inline int poll_until(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return 0;
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

// Connects to 127.0.0.1:port, sends data, closes the sending side and reads until the
// server closes, for at most timeout_ms in all.
inline ExchangeResult loopback_exchange(uint16_t port, const uint8_t *data, size_t size,
                                        int timeout_ms) {
  ExchangeResult r;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::milliseconds(timeout_ms);
  auto waited = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    r.error = "socket: " + std::to_string(errno);
    return r;
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0) {
    // An interrupted connect goes on in the background: wait for it, then ask how it ended.
    int err = errno;
    if (err == EINTR && poll_until(fd, POLLOUT, deadline) > 0) {
      socklen_t len = sizeof err;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
    if (err != 0 && err != EISCONN) {
      r.error = "connect: " + std::to_string(err);
      close(fd);
      return r;
    }
  }
  size_t sent = 0;
  while (sent < size) {
    const ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the server may answer 4xx and close before reading everything
    sent += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_WR);
  char buffer[65536];
  for (;;) {
    const int ready = poll_until(fd, POLLIN, deadline);
    if (ready <= 0) {
      r.error = ready == 0 ? "no end of the answer" : "poll: " + std::to_string(errno);
      break;
    }
    const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (n < 0 && errno == ECONNRESET)) {
      r.complete = true;
      break;
    }
    if (n < 0) {
      r.error = "recv: " + std::to_string(errno);
      break;
    }
    r.answer.append(buffer, static_cast<size_t>(n));
  }
  r.waited_s = waited();
  close(fd);
  return r;
}

}  // namespace fuzz
}  // namespace kodo
