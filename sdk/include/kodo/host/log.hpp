// log.hpp: one line per message on stderr, with a level threshold.
#pragma once

#include <kodo/kodo_plugin.h>

#include <string>

namespace kodo {

void set_log_level(int32_t level);                 // KODO_LOG_*
int32_t parse_log_level(const std::string &name);  // debug|info|warn|error; throws
void log_line(int32_t level, const std::string &message);

inline void log_debug(const std::string &m) {
  log_line(KODO_LOG_DEBUG, m);
}
inline void log_info(const std::string &m) {
  log_line(KODO_LOG_INFO, m);
}
inline void log_warn(const std::string &m) {
  log_line(KODO_LOG_WARN, m);
}
inline void log_error(const std::string &m) {
  log_line(KODO_LOG_ERROR, m);
}

}  // namespace kodo
