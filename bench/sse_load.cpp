// kodo-sse-load: many SSE viewers on one host, for bench/http.sh. Opens VIEWERS
// connections to /outputs/stream/{fid}, spread round-robin over the fids given, on two
// epoll threads (each with half the viewers, reading in large chunks), and for SECONDS measures the
// delay from each event's timestamp (set where the event is made, just before it is published and
// committed, so an upper bound of commit-to-viewer) to its arrival, then prints the figures. Only
// events made after their viewer connected count as live: the backlog a viewer is caught up with at
// connect is reported apart (its frames, and how long the catch-up took), since an event stamped
// before the viewer asked for it says nothing about commit-to-viewer latency.
// With KODO_SSE_LOAD_READY set, creates that file once every viewer has sent its request
// (bench/http.sh's flows start ticking then).
//   kodo-sse-load PORT SECONDS VIEWERS FID...
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Viewer {
  int fd = -1;
  std::string pending;
  bool in_stdout = false;  // the frame being read is a stdout event
  double connected = 0;    // when the request was sent
  double caught_up = 0;    // arrival of its first live frame
};

bool starts_with(const char *line, size_t len, const char *prefix) {
  const size_t n = std::strlen(prefix);
  return len >= n && std::memcmp(line, prefix, n) == 0;
}

constexpr size_t kThreads = 2;

// What one thread measured over its viewers.
struct Tally {
  std::vector<double> delays;
  uint64_t frames = 0, backlog = 0, closed = 0;
};

// Reads the viewers on ep (all of them `viewers`, by index) until `until`, parsing frames.
void read_viewers(int ep, std::vector<Viewer> &viewers, double until, Tally &tally) {
  tally.delays.reserve(1 << 22);
  std::vector<epoll_event> events(1024);
  std::vector<char> buffer(size_t{1} << 20);
  while (now_s() < until) {
    const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
    for (int k = 0; k < n; ++k) {
      Viewer &v = viewers[events[static_cast<size_t>(k)].data.u32];
      const ssize_t got = recv(v.fd, buffer.data(), buffer.size(), 0);
      if (got <= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, v.fd, nullptr);
        ++tally.closed;
        continue;
      }
      const double arrived = now_s();
      v.pending.append(buffer.data(), static_cast<size_t>(got));
      size_t pos = 0;
      for (size_t eol; (eol = v.pending.find('\n', pos)) != std::string::npos; pos = eol + 1) {
        const char *line = v.pending.data() + pos;
        const size_t len = eol - pos;
        if (starts_with(line, len, "event: ")) {
          v.in_stdout = len == 13 && starts_with(line, len, "event: stdout");
        } else if (v.in_stdout && starts_with(line, len, "data: ")) {
          const double stamp = std::strtod(line + 6, nullptr);
          if (stamp >= v.connected) {
            ++tally.frames;
            tally.delays.push_back(arrived - stamp);
            if (v.caught_up == 0) v.caught_up = arrived;
          } else {
            ++tally.backlog;
          }
          v.in_stdout = false;
        }
      }
      v.pending.erase(0, pos);
    }
  }
}

double percentile(const std::vector<double> &sorted, double p) {
  return sorted.empty()
             ? 0.0
             : sorted[std::min(sorted.size() - 1,
                               static_cast<size_t>(p * static_cast<double>(sorted.size())))];
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: kodo-sse-load PORT SECONDS VIEWERS FID...\n");
    return 2;
  }
  const int port = std::atoi(argv[1]);
  const double seconds = std::atof(argv[2]);
  const int count = std::atoi(argv[3]);
  std::vector<std::string> fids(argv + 4, argv + argc);
  int eps[kThreads];
  for (int &ep : eps) ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<Viewer> viewers(static_cast<size_t>(count));
  int refused = 0;
  for (int i = 0; i < count; ++i) {
    Viewer &v = viewers[static_cast<size_t>(i)];
    v.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (v.fd < 0 || connect(v.fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0) {
      ++refused;
      continue;
    }
    const std::string request = "GET /outputs/stream/" +
                                fids[static_cast<size_t>(i) % fids.size()] +
                                " HTTP/1.1\r\nHost: localhost\r\n\r\n";
    if (send(v.fd, request.data(), request.size(), MSG_NOSIGNAL) < 0) ++refused;
    v.connected = now_s();
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u32 = static_cast<uint32_t>(i);
    epoll_ctl(eps[static_cast<size_t>(i) % kThreads], EPOLL_CTL_ADD, v.fd, &e);
  }
  if (const char *ready = std::getenv("KODO_SSE_LOAD_READY"))
    if (FILE *f = std::fopen(ready, "w")) std::fclose(f);
  const double start = now_s();
  Tally tallies[kThreads];
  std::vector<std::thread> threads;
  for (size_t t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] { read_viewers(eps[t], viewers, start + seconds, tallies[t]); });
  for (auto &t : threads) t.join();
  std::vector<double> delays;
  uint64_t frames = 0, backlog = 0, closed = 0;
  for (Tally &t : tallies) {
    delays.insert(delays.end(), t.delays.begin(), t.delays.end());
    frames += t.frames;
    backlog += t.backlog;
    closed += t.closed;
  }
  std::sort(delays.begin(), delays.end());
  std::vector<double> catch_up;  // connect to first live frame, per viewer that got one
  for (const Viewer &v : viewers)
    if (v.caught_up > 0) catch_up.push_back(v.caught_up - v.connected);
  std::sort(catch_up.begin(), catch_up.end());
  std::printf(
      "viewers %d (refused %d, closed by the host %llu), live stdout frames %llu (%.0f/s), "
      "backlog frames %llu\n",
      count, refused, static_cast<unsigned long long>(closed),
      static_cast<unsigned long long>(frames), static_cast<double>(frames) / seconds,
      static_cast<unsigned long long>(backlog));
  std::printf("event-to-viewer latency: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%zu samples)\n",
              percentile(delays, 0.50) * 1000, percentile(delays, 0.99) * 1000,
              delays.empty() ? 0.0 : delays.back() * 1000, delays.size());
  std::printf("connect to first live frame: p50 %.1f ms, p99 %.1f ms (%zu viewers)\n",
              percentile(catch_up, 0.50) * 1000, percentile(catch_up, 0.99) * 1000,
              catch_up.size());
  for (auto &v : viewers)
    if (v.fd >= 0) close(v.fd);
  return 0;
}
