// host_process.hpp: runs kodo-host as a child for end-to-end tests, and a minimal HTTP
// client to talk to it. The host binds port 0; its log line tells the port.
#pragma once

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace kodo::e2e {

struct HttpResult {
  int status = 0;
  std::string headers;
  std::string body;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// Polls `condition` every 20 ms until it holds or `timeout_s` passed; then its last answer.
inline bool eventually(const std::function<bool()> &condition, int timeout_s = 30) {
  for (int i = 0; i < timeout_s * 50; ++i) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

inline std::string read_file(const std::string &path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs a command to completion, capturing stdout and stderr together.
inline CommandResult run_command(const std::vector<std::string> &args,
                                 const std::vector<std::string> &env = {}) {
  char out_path[] = "/tmp/kodo-cmd-XXXXXX";
  int fd = mkstemp(out_path);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    for (const auto &kv : env) putenv(const_cast<char *>(kv.c_str()));
    std::vector<char *> argv;
    for (const auto &a : args) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fd);
  int status = 0;
  waitpid(pid, &status, 0);
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.output = read_file(out_path);
  unlink(out_path);
  return result;
}

class HostProcess {
 public:
  // Starts `kodo-host ARGS... COMMAND` with --address 127.0.0.1:0 and waits until it serves
  // (`spool` serves only /health and /metrics).
  bool start(const std::vector<std::string> &args, const std::vector<std::string> &env = {},
             const std::string &command = "serve") {
    // A spooler and a worker serve only /health and /metrics (a worker once it takes jobs);
    // http:// or https:// (--tls-cert), then 127.0.0.1:PORT.
    const std::string ready =
        command == "spool" || command == "worker" || command == "temporal-worker"
            ? "metrics on http"
            : "serving on http";
    if (!log_path_.empty()) unlink(log_path_.c_str());  // a restart: the old log goes
    char log_path[] = "/tmp/kodo-host-log-XXXXXX";
    int fd = mkstemp(log_path);
    log_path_ = log_path;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      for (const auto &kv : env) putenv(const_cast<char *>(kv.c_str()));
      if (open_files_limit > 0) {  // soft and hard: the host cannot raise it
        rlimit lim{open_files_limit, open_files_limit};
        if (setrlimit(RLIMIT_NOFILE, &lim) != 0) _exit(126);
      }
      std::vector<std::string> all = {KODO_HOST_BINARY, "--address", "127.0.0.1:0"};
      all.insert(all.end(), args.begin(), args.end());
      all.push_back(command);
      std::vector<char *> argv;
      for (const auto &a : all) argv.push_back(const_cast<char *>(a.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fd);
    for (int i = 0; i < start_timeout_s * 50; ++i) {
      std::string log = read_file(log_path_);
      const auto at = log.find(ready);
      const std::string bound = "127.0.0.1:";
      const size_t port_at = at == std::string::npos ? at : log.find(bound, at);
      if (port_at != std::string::npos) {
        port_ = std::stoi(log.substr(port_at + bound.size()));
        return true;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // SIGTERM, then the exit code (or -1 if it had to be killed).
  int stop(int timeout_s = 60) {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    for (int i = 0; i < timeout_s * 50; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return -1;
  }

  // Ends it at once with `signal` (SIGKILL: no drain, no goodbye), as a crash would.
  void kill_now(int signal = SIGKILL) {
    if (pid_ <= 0) return;
    kill(pid_, signal);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  ~HostProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (!log_path_.empty()) unlink(log_path_.c_str());
  }

  std::string log() const { return read_file(log_path_); }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }

  // When set before start(): the host's open-files limit (soft = hard).
  rlim_t open_files_limit = 0;
  // How long start() waits for the host to serve (its plugins' open included) on a loaded
  // machine.
  int start_timeout_s = 20;

  // One request on a fresh connection (HTTP/1.0: the response ends at close). `headers`:
  // more header lines, each ending in CRLF (a Content-Type there replaces the JSON one).
  HttpResult request(const std::string &method, const std::string &target,
                     const std::string &body = "", int timeout_s = 30,
                     const std::string &stop_at = "", const std::string &headers = "") const {
    std::string text = method + " " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n" + headers;
    if (!body.empty() && headers.find("Content-Type:") == std::string::npos)
      text += "Content-Type: application/json\r\n";
    if (!body.empty()) text += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    text += "\r\n" + body;
    return exchange(text, timeout_s, stop_at);
  }

  // Sends `text` as it is on a fresh connection and reads the answer until the host closes
  // (or stop_at appears).
  HttpResult exchange(const std::string &text, int timeout_s = 30,
                      const std::string &stop_at = "") const {
    HttpResult result;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port_));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0) {
      close(fd);
      return result;
    }
    timeval tv{timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    std::string response;
    char buffer[65536];
    for (;;) {
      ssize_t n = recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      response.append(buffer, static_cast<size_t>(n));
      if (!stop_at.empty() && response.find(stop_at) != std::string::npos) break;
    }
    close(fd);
    auto head_end = response.find("\r\n\r\n");
    if (response.size() < 12 || head_end == std::string::npos) return result;
    result.status = std::stoi(response.substr(9, 3));
    result.headers = response.substr(0, head_end);
    result.body = response.substr(head_end + 4);
    return result;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_path_;
};

}  // namespace kodo::e2e
