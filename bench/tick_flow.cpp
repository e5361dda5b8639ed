// kodo-tick-flow: a flow for bench/http.sh that prints RATE stdout lines a second for
// SECONDS, then its final event: a live execution without a process per line. Given
// GO_FILE, it starts ticking only once that file exists (up to a minute), so that viewers
// can all be connected first and measure live events, not a backlog.
//   kodo-tick-flow RATE SECONDS [GO_FILE]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <unistd.h>

int main(int argc, char **argv) {
  const double rate = argc > 1 ? std::atof(argv[1]) : 100;
  const double seconds = argc > 2 ? std::atof(argv[2]) : 10;
  const auto step = std::chrono::duration<double>(1.0 / (rate > 0 ? rate : 1));
  if (argc > 3)
    for (int i = 0; i < 12000 && access(argv[3], F_OK) != 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto start = std::chrono::steady_clock::now();
  const long total = static_cast<long>(rate * seconds);
  for (long i = 0; i < total; ++i) {
    std::this_thread::sleep_until(start +
                                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                      step * static_cast<double>(i)));
    std::printf("tick %ld\n", i);
    std::fflush(stdout);
  }
  if (const char *fd = std::getenv("KODO_EVENTS_FD")) {
    if (FILE *events = fdopen(std::atoi(fd), "w")) {
      std::fprintf(events, "{\"kind\":\"final\",\"payload\":{\"ticks\":%ld}}\n", total);
      std::fclose(events);
    }
  }
  return 0;
}
