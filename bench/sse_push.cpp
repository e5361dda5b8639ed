// kodo-sse-push: the physical limit for bench/http.sh's SSE figure. A trivial server on one
// epoll thread that answers GET /outputs/stream/<name> with a chunked event stream and pushes
// RATE stdout frames a second per name, in kodo-host's frame form and in batches every
// BATCH_MS, to every viewer of that name: no storage, no parsing beyond the request line.
// Each frame is stamped with the moment it was due, as a flow stamps its events.
// kodo-sse-load run against it shows what the client and the machine can do at all.
// Prints its port, then serves until killed.
//   kodo-sse-push RATE_PER_NAME BATCH_MS
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Conn {
  std::string in;   // the request so far
  std::string out;  // what the socket did not take yet
  bool streaming = false;
};

// Sends what c holds; false when the viewer is gone.
bool flush(int fd, Conn &c) {
  while (!c.out.empty()) {
    const ssize_t n = send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    c.out.erase(0, static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: kodo-sse-push RATE_PER_NAME BATCH_MS\n");
    return 2;
  }
  const double rate = std::atof(argv[1]);
  const int batch_ms = std::atoi(argv[2]);
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  socklen_t len = sizeof address;
  if (bind(listener, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0 ||
      listen(listener, SOMAXCONN) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr *>(&address), &len) != 0) {
    std::perror("kodo-sse-push: listen");
    return 1;
  }
  std::printf("%d\n", ntohs(address.sin_port));
  std::fflush(stdout);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.fd = listener;
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &e);
  std::map<int, Conn> conns;
  std::map<std::string, std::vector<int>> viewers;  // by name
  std::map<std::string, long> sent;                 // frames made per name
  const double start = now_s();
  std::vector<epoll_event> events(1024);
  char buffer[4096];
  double next_batch = start;
  for (;;) {
    const int wait = static_cast<int>(std::max(0.0, (next_batch - now_s()) * 1000));
    const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), wait);
    for (int k = 0; k < n; ++k) {
      const int fd = events[static_cast<size_t>(k)].data.fd;
      if (fd == listener) {
        for (int c; (c = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          conns[c];
          epoll_event ce{};
          ce.events = EPOLLIN;
          ce.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
        }
        continue;
      }
      Conn &c = conns[fd];
      const ssize_t got = recv(fd, buffer, sizeof buffer, 0);
      if (got <= 0 || c.streaming) {
        if (got > 0) continue;  // nothing more is expected from a viewer
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
        close(fd);
        conns.erase(fd);
        continue;
      }
      c.in.append(buffer, static_cast<size_t>(got));
      if (c.in.find("\r\n\r\n") == std::string::npos) continue;
      const size_t from = c.in.find("/outputs/stream/");
      const size_t to = c.in.find(' ', from == std::string::npos ? 0 : from);
      if (from == std::string::npos || to == std::string::npos) {
        close(fd);
        conns.erase(fd);
        continue;
      }
      viewers[c.in.substr(from + 16, to - from - 16)].push_back(fd);
      c.streaming = true;
      c.out =
          "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
          "Transfer-Encoding: chunked\r\n\r\n";
      flush(fd, c);
    }
    const double now = now_s();
    if (now < next_batch) continue;
    next_batch = now + batch_ms / 1000.0;
    // Each name's frames due by now, made once and sent to each of its viewers.
    for (auto &entry : viewers) {
      long &made = sent[entry.first];
      const long due = static_cast<long>((now - start) * rate);
      if (due <= made) continue;
      std::string frames;
      char frame[128];
      for (; made < due; ++made) {
        const int m =
            std::snprintf(frame, sizeof frame, "event: stdout\nid: %ld\ndata: %.6f:tick %ld\n\n",
                          made + 1, start + static_cast<double>(made) / rate, made);
        frames.append(frame, static_cast<size_t>(m));
      }
      char head[24];
      const int h = std::snprintf(head, sizeof head, "%zx\r\n", frames.size());
      const std::string chunk = std::string(head, static_cast<size_t>(h)) + frames + "\r\n";
      auto &list = entry.second;
      for (size_t i = 0; i < list.size();) {
        auto it = conns.find(list[i]);
        if (it == conns.end()) {
          list[i] = list.back();
          list.pop_back();
          continue;
        }
        it->second.out += chunk;
        flush(list[i], it->second);
        ++i;
      }
    }
  }
}
