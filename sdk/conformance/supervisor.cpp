// supervisor.cpp: one child process per run of cases, restarted past a case that crashed or
// hung. The protocol on the report pipe: "start <suite>.<name>" and
// "end <suite>.<name> passed|failed|skipped", one line each.
#include "supervisor.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

namespace kodo::conformance {

namespace {

class ReportListener : public testing::EmptyTestEventListener {
 public:
  explicit ReportListener(int fd) : fd_(fd) {}
  void OnTestStart(const testing::TestInfo &test) override { send("start", test, ""); }
  void OnTestEnd(const testing::TestInfo &test) override {
    const testing::TestResult &result = *test.result();
    send("end", test, result.Skipped() ? " skipped" : result.Passed() ? " passed" : " failed");
  }

 private:
  void send(const char *what, const testing::TestInfo &test, const char *verdict) {
    const std::string line =
        std::string(what) + " " + test.test_suite_name() + "." + test.name() + verdict + "\n";
    // One write per line: the parent must see "start" before the case can crash.
    ssize_t ignored = ::write(fd_, line.data(), line.size());
    (void)ignored;
  }
  int fd_;
};

std::string signal_name(int signal_number) {
  const char *abbreviation = sigabbrev_np(signal_number);
  return abbreviation ? std::string("SIG") + abbreviation
                      : "signal " + std::to_string(signal_number);
}

struct Child {
  pid_t pid = -1;
  int report = -1;  // read end of the report pipe
};

Child spawn(const std::string &self, std::vector<std::string> arguments) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  arguments.push_back("--kit-report-fd=" + std::to_string(fds[1]));
  std::cout.flush();
  (void)std::fflush(nullptr);  // nothing buffered is written twice, by parent and child
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    (void)fcntl(fds[1], F_SETFD, 0);  // the write end survives exec
    std::vector<char *> argv;
    argv.push_back(const_cast<char *>(self.c_str()));
    for (auto &a : arguments) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(self.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  return Child{pid, fds[0]};
}

// What became of one case.
struct Verdict {
  std::string outcome;  // passed, failed, skipped, or what ended it
  bool bad() const { return outcome != "passed" && outcome != "skipped"; }
};

}  // namespace

void report_cases_to(int fd) {
  testing::UnitTest::GetInstance()->listeners().Append(new ReportListener(fd));
}

int supervise_cases(const std::string &self, const std::vector<std::string> &arguments,
                    const std::string &filter, double case_timeout_s,
                    const std::string &scratch_root) {
  using Clock = std::chrono::steady_clock;
  std::vector<std::string> order;  // cases in the order they started
  std::map<std::string, Verdict> verdicts;
  std::string trouble_outside_cases;
  for (;;) {
    // The cases already decided are left out of the next child's filter.
    std::string child_filter = filter;
    for (const auto &name : order)
      child_filter += (child_filter.find('-') == std::string::npos ? "-" : ":") + name;
    std::vector<std::string> child_arguments = arguments;
    child_arguments.push_back("--gtest_filter=" + child_filter);
    child_arguments.push_back("--kit-scratch=" + scratch_root);
    Child child = spawn(self, child_arguments);

    std::string current, buffer;
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(case_timeout_s));
    bool hung = false;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        hung = true;
        break;
      }
      pollfd p{child.report, POLLIN, 0};
      const int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
      if (ready <= 0) continue;
      char chunk[4096];
      const ssize_t n = read(child.report, chunk, sizeof chunk);
      if (n <= 0) break;  // the child ended (or died)
      buffer.append(chunk, static_cast<size_t>(n));
      for (size_t end; (end = buffer.find('\n')) != std::string::npos; buffer.erase(0, end + 1)) {
        std::istringstream line(buffer.substr(0, end));
        std::string what, name, outcome;
        line >> what >> name >> outcome;
        if (what == "start") {
          current = name;
          order.push_back(name);
          deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(case_timeout_s));
        } else if (what == "end") {
          verdicts[name].outcome = outcome;
          current.clear();
        }
      }
    }
    if (hung) kill(child.pid, SIGKILL);
    close(child.report);
    int status = 0;
    while (waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::ostringstream why;
    if (hung) {
      why << "no answer in " << case_timeout_s << " s";
    } else if (WIFSIGNALED(status)) {
      why << "killed by " << signal_name(WTERMSIG(status));
    } else {
      break;  // the child ran its cases to the end
    }
    if (current.empty()) {  // not inside a case: a restart would meet it again
      trouble_outside_cases = why.str();
      break;
    }
    verdicts[current].outcome = why.str();
    std::cout << "kodo-conformance: case " << current << ": " << why.str()
              << "; going on with the cases after it\n";
  }

  size_t passed = 0, skipped = 0, bad = 0;
  std::ostringstream problems;
  for (const auto &name : order) {
    const Verdict &v = verdicts[name];
    if (v.outcome == "passed") ++passed;
    if (v.outcome == "skipped") ++skipped;
    if (v.bad()) {
      ++bad;
      problems << "  case " << name << ": " << (v.outcome.empty() ? "no verdict" : v.outcome)
               << "\n";
    }
  }
  std::cout << "\nkodo-conformance: " << order.size() << " cases: " << passed << " passed, "
            << skipped << " skipped, " << bad << " did not pass\n"
            << problems.str();
  if (!trouble_outside_cases.empty())
    std::cout << "  outside any case: " << trouble_outside_cases << "\n";
  return bad == 0 && trouble_outside_cases.empty() ? 0 : 1;
}

}  // namespace kodo::conformance
