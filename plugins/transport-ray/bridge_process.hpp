// bridge_process.hpp: the bridge as a child process, and the frames it speaks.
//
// The bridge's stdin and stdout are one end of a socketpair; the plugin keeps the other. A frame
// is a 4-byte big-endian length and that many bytes of JSON. A socket (not a pipe) so that a
// write to a bridge that died fails with EPIPE under MSG_NOSIGNAL instead of raising SIGPIPE in
// the host.
#pragma once

#include <kodo/plugin.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace kodo::ray {

using kodo::sdk::Error;

// strerror, thread-safe (the GNU strerror_r, which returns the text).
inline std::string error_text(int code) {
  char buffer[256];
  return ::strerror_r(code, buffer, sizeof buffer);
}

constexpr size_t kMaxFrame = 256u << 20;  // a runaway length is a broken bridge, not a batch

class BridgeProcess {
 public:
  BridgeProcess() = default;
  BridgeProcess(const BridgeProcess &) = delete;
  BridgeProcess &operator=(const BridgeProcess &) = delete;
  ~BridgeProcess() { kill_and_reap(); }

  // Starts argv[0] with argv; stderr is the host's. The child dies with the thread that
  // started it (PR_SET_PDEATHSIG), so a host killed outright leaves no bridge behind.
  void start(const std::vector<std::string> &argv) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
      throw Error(KODO_ERR_IO, std::string("ray: socketpair failed: ") + error_text(errno));
    std::vector<char *> args;
    args.reserve(argv.size() + 1);
    for (const auto &a : argv) args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
      close(fds[0]);
      close(fds[1]);
      throw Error(KODO_ERR_IO, std::string("ray: fork failed: ") + error_text(errno));
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      dup2(fds[1], 0);
      dup2(fds[1], 1);
      execvp(args[0], args.data());
      const std::string message =
          "ray: cannot run the bridge's python " + argv[0] + ": " + error_text(errno) + "\n";
      (void)!write(2, message.data(), message.size());
      _exit(127);
    }
    close(fds[1]);
    fd_ = fds[0];
    pid_ = pid;
  }

  pid_t pid() const { return pid_; }
  bool started() const { return fd_ >= 0; }

  // Writes a whole frame; false when the bridge is gone.
  bool send(const std::string &body) {
    if (fd_ < 0) return false;
    const uint32_t n = static_cast<uint32_t>(body.size());
    const unsigned char head[4] = {
        static_cast<unsigned char>(n >> 24), static_cast<unsigned char>(n >> 16),
        static_cast<unsigned char>(n >> 8), static_cast<unsigned char>(n)};
    return write_all(reinterpret_cast<const char *>(head), 4) &&
           write_all(body.data(), body.size());
  }

  // Reads the next frame into `body`; false at end of stream (the bridge exited or was killed).
  bool receive(std::string &body) {
    unsigned char head[4];
    if (!read_all(reinterpret_cast<char *>(head), 4)) return false;
    const size_t n = (size_t{head[0]} << 24) | (size_t{head[1]} << 16) | (size_t{head[2]} << 8) |
                     size_t{head[3]};
    if (n > kMaxFrame) return false;
    body.resize(n);
    return read_all(body.data(), n);
  }

  // Waits up to `ms` for the bridge to exit by itself; true if it did.
  bool wait_exit(int ms) {
    for (int waited = 0; pid_ > 0 && waited <= ms; waited += 10) {
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = -1;
        return true;
      }
      usleep(10000);
    }
    return pid_ <= 0;
  }

  // Unblocks a reader in another thread (it sees end of stream).
  void interrupt() {
    if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
  }

  // How the last bridge ended, for an error message.
  std::string exit_description() const {
    if (WIFEXITED(status_)) return "exited with status " + std::to_string(WEXITSTATUS(status_));
    if (WIFSIGNALED(status_)) return "was killed by signal " + std::to_string(WTERMSIG(status_));
    return "ended";
  }

  void kill_and_reap() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
      pid_ = -1;
    }
    if (fd_ >= 0) {
      close(fd_);
      fd_ = -1;
    }
  }

 private:
  bool write_all(const char *data, size_t n) {
    while (n > 0) {
      const ssize_t w = ::send(fd_, data, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      data += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }
  bool read_all(char *data, size_t n) {
    while (n > 0) {
      const ssize_t r = ::read(fd_, data, n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      data += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }

  int fd_ = -1;
  pid_t pid_ = -1;
  int status_ = 0;
};

}  // namespace kodo::ray
