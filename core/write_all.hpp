// write_all.hpp: writes a whole buffer to a descriptor, through short writes and EINTR.
#pragma once

#include <cerrno>
#include <string>

#include <unistd.h>

namespace kodo {

// False (errno set) when the descriptor stopped taking bytes.
inline bool write_all(int fd, const std::string &data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace kodo
