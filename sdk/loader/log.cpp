#include <kodo/host/log.hpp>

#include <kodo/host/error.hpp>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace kodo {

static std::atomic<int32_t> g_level{KODO_LOG_INFO};
static std::mutex g_log_mutex;

void set_log_level(int32_t level) {
  g_level = level;
}

int32_t parse_log_level(const std::string &name) {
  if (name == "debug") return KODO_LOG_DEBUG;
  if (name == "info") return KODO_LOG_INFO;
  if (name == "warn" || name == "warning") return KODO_LOG_WARN;
  if (name == "error") return KODO_LOG_ERROR;
  throw Error(KODO_ERR_INVALID_ARGUMENT,
              "invalid log level '" + name + "': use debug, info, warn or error");
}

void log_line(int32_t level, const std::string &message) {
  if (level < g_level.load(std::memory_order_relaxed)) return;
  static const char *const names[] = {"debug", "info", "warn", "error"};
  const char *name = (level >= 0 && level <= 3) ? names[level] : "log";
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  if (std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) stamp[0] = '\0';
  std::lock_guard<std::mutex> lock(g_log_mutex);
  // A log line that cannot be written has nowhere else to go.
  (void)std::fprintf(stderr, "%s kodo %s: %s\n", stamp, name, message.c_str());
}

}  // namespace kodo
