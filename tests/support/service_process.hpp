// service_process.hpp: runs a real server (PostgreSQL, Redis, ...) as a foreground child of the
// test, on a loopback port of its own. The child gets PR_SET_PDEATHSIG, so a test that crashes or
// is killed by ctest's timeout never leaves a server running.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace kodo::testing {

// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close).
inline int free_loopback_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = 0;
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0) {
    close(fd);
    throw std::runtime_error("free_loopback_port: bind failed");
  }
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

inline bool port_accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  bool ok = connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) == 0;
  close(fd);
  return ok;
}

inline std::string slurp(const std::string &path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A scratch directory removed with everything in it when the object goes.
class TempDir {
 public:
  explicit TempDir(const std::string &prefix) {
    std::string pattern = "/tmp/" + prefix + "-XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (!mkdtemp(buffer.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = buffer.data();
  }
  ~TempDir() {
    if (!path_.empty()) std::system(("rm -rf '" + path_ + "'").c_str());
  }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  const std::string &path() const { return path_; }

 private:
  std::string path_;
};

// Runs a command to completion as `user` (empty: as we are), stdout+stderr to `log_path`.
inline int run_as(const std::vector<std::string> &args, const std::string &user,
                  const std::string &log_path);

class ServiceProcess {
 public:
  ServiceProcess() = default;
  ServiceProcess(const ServiceProcess &) = delete;
  ServiceProcess &operator=(const ServiceProcess &) = delete;
  ~ServiceProcess() { kill_now(); }

  // Starts `args` in the foreground as `user` (only when we are root; empty keeps our user).
  // Output is appended to `log_path`.
  void start(const std::vector<std::string> &args, const std::string &user,
             const std::string &log_path) {
    kill_now();
    log_path_ = log_path;
    pid_ = spawn(args, user, log_path, /*die_with_parent=*/true);
    if (pid_ < 0) throw std::runtime_error("could not start " + args.front());
  }

  // Waits until the server accepts TCP connections on `port`; false if it exited or timed out.
  bool wait_for_port(int port, int timeout_ms = 30000) {
    for (int waited = 0; waited < timeout_ms; waited += 20) {
      if (port_accepts(port)) return true;
      if (!running()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // Polls `ready` until it holds (true) or the server exited or timed out (false).
  template <class Ready>
  bool wait_until(Ready &&ready, int timeout_ms = 30000) {
    for (int waited = 0; waited < timeout_ms; waited += 50) {
      if (ready()) return true;
      if (!running()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }

  // Sends `signal` and waits up to `timeout_ms` for the exit, then SIGKILLs.
  void stop(int signal = SIGTERM, int timeout_ms = 30000) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    for (int waited = 0; waited < timeout_ms; waited += 20) {
      if (!running()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill_now();
  }

  void kill_now() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  pid_t pid() const { return pid_; }
  std::string log() const { return slurp(log_path_); }

  static pid_t spawn(const std::vector<std::string> &args, const std::string &user,
                     const std::string &log_path, bool die_with_parent) {
    uid_t uid = 0;
    gid_t gid = 0;
    bool switch_user = !user.empty() && geteuid() == 0;
    if (switch_user) {
      passwd *entry = getpwnam(user.c_str());
      if (!entry) throw std::runtime_error("no such user: " + user);
      uid = entry->pw_uid;
      gid = entry->pw_gid;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      if (switch_user) fchown(fd, uid, gid);
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    setpgid(0, 0);  // ctest's signals to the test do not reach the server twice
    if (switch_user) {
      if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(126);
    }
    // Set after the user switch: a change of credentials clears the death signal.
    if (die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(125);
    }
    std::vector<char *> argv;
    for (const auto &a : args) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }

 private:
  pid_t pid_ = -1;
  std::string log_path_;
};

inline int run_as(const std::vector<std::string> &args, const std::string &user,
                  const std::string &log_path) {
  pid_t pid = ServiceProcess::spawn(args, user, log_path, /*die_with_parent=*/true);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace kodo::testing
