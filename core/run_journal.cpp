// run_journal.cpp: see run_journal.hpp.
#include "core/run_journal.hpp"

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>
#include "core/ids.hpp"
#include "core/storage.hpp"
#include "core/write_all.hpp"

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <system_error>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace kodo {

namespace {

namespace fs = std::filesystem;

constexpr uint64_t kCompactAfterLines = 1024;

std::string errno_text(int e) {
  return std::generic_category().message(e);
}

int open_runs(const std::string &path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

// The runs a journal lists as begun and not ended, in the order they began.
std::vector<RunJournal::Orphan> unended_runs(const std::string &path, const std::string &instance) {
  std::ifstream in(path);
  std::map<std::string, std::pair<uint64_t, std::string>> open;  // fid -> (line, username)
  std::string line;
  uint64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const size_t space = line.find(' ');
    const std::string fid = line.substr(1, space == std::string::npos ? space : space - 1);
    if (line.empty() || !fid_problem(fid).empty()) continue;  // a torn last line
    if (line[0] == '+' && space != std::string::npos)
      open[fid] = {line_no, line.substr(space + 1)};
    else if (line[0] == '-')
      open.erase(fid);
  }
  std::map<uint64_t, RunJournal::Orphan> ordered;
  for (auto &[fid, at] : open) ordered[at.first] = {fid, at.second, instance};
  std::vector<RunJournal::Orphan> out;
  out.reserve(ordered.size());
  for (auto &[line_at, orphan] : ordered) out.push_back(std::move(orphan));
  return out;
}

}  // namespace

RunJournal::RunJournal(const std::string &dir) : dir_(dir) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw Error(KODO_ERR_IO, "run journal: cannot make " + dir_ + ": " + ec.message());
  instance_ = "host-" + std::to_string(::getpid()) + "-" + new_fid();
  lock_path_ = dir_ + "/" + instance_ + ".lock";
  runs_path_ = dir_ + "/" + instance_ + ".runs";
  // Locked before it gets the name other hosts look for, so none can take it for a dead one.
  const std::string fresh = lock_path_ + ".new";
  lock_fd_ = ::open(fresh.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0 ||
      ::rename(fresh.c_str(), lock_path_.c_str()) != 0) {
    const int e = errno;
    if (lock_fd_ >= 0) ::close(lock_fd_);
    ::unlink(fresh.c_str());
    throw Error(KODO_ERR_IO,
                "run journal: cannot make and lock " + lock_path_ + ": " + errno_text(e));
  }
  runs_fd_ = open_runs(runs_path_);
  if (runs_fd_ < 0) {
    const int e = errno;
    ::unlink(lock_path_.c_str());
    ::close(lock_fd_);
    throw Error(KODO_ERR_IO, "run journal: cannot open " + runs_path_ + ": " + errno_text(e));
  }
}

RunJournal::~RunJournal() {
  // Runs still listed (a shutdown that gave up on their last events) stay for the next host.
  if (active_.empty()) ::unlink(runs_path_.c_str());
  if (runs_fd_ >= 0) ::close(runs_fd_);
  if (active_.empty()) ::unlink(lock_path_.c_str());
  ::close(lock_fd_);
}

void RunJournal::append(const std::string &line) {
  if (runs_fd_ < 0 || !write_all(runs_fd_, line))
    log_error("run journal: cannot append to " + runs_path_ + ": " + errno_text(errno) +
              "; after a crash this run may read `running` until ended by hand");
  ++lines_;
}

void RunJournal::begun(const std::string &fid, const std::string &username) {
  std::lock_guard<std::mutex> lock(mu_);
  active_[fid] = username;
  append("+" + fid + " " + username + "\n");
}

void RunJournal::ended(const std::string &fid) {
  std::lock_guard<std::mutex> lock(mu_);
  if (active_.erase(fid) == 0) return;
  append("-" + fid + "\n");
  if (lines_ > kCompactAfterLines && lines_ > 4 * active_.size()) rewrite_locked();
}

// Keeps the file in proportion to the runs under way: the active ones, renamed into place.
void RunJournal::rewrite_locked() {
  const std::string fresh = runs_path_ + ".new";
  const int fd = ::open(fresh.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  std::string text;
  for (const auto &[fid, username] : active_)
    text.append("+").append(fid).append(" ").append(username).append("\n");
  if (fd < 0 || !write_all(fd, text) || ::rename(fresh.c_str(), runs_path_.c_str()) != 0) {
    log_error("run journal: cannot compact " + runs_path_ + ": " + errno_text(errno));
    if (fd >= 0) ::close(fd);
    ::unlink(fresh.c_str());
    return;
  }
  ::close(fd);
  const int reopened = open_runs(runs_path_);
  if (reopened < 0) {
    log_error("run journal: cannot reopen " + runs_path_ + ": " + errno_text(errno));
    return;
  }
  ::close(runs_fd_);
  runs_fd_ = reopened;
  lines_ = active_.size();
}

std::vector<RunJournal::Orphan> RunJournal::take_dead_hosts_runs() {
  std::vector<Orphan> out;
  std::error_code ec;
  for (const auto &entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    const std::string suffix = ".lock";
    if (name.size() <= suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string instance = name.substr(0, name.size() - suffix.size());
    if (instance == instance_) continue;
    const std::string lock_path = entry.path().string();
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;  // another host took it over first
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);  // alive
      continue;
    }
    const std::string runs_path = dir_ + "/" + instance + ".runs";
    for (Orphan &o : unended_runs(runs_path, instance)) out.push_back(std::move(o));
    ::unlink(runs_path.c_str());
    ::unlink(lock_path.c_str());
    ::close(fd);
  }
  if (ec) log_error("run journal: cannot read " + dir_ + ": " + ec.message());
  return out;
}

size_t reconcile_dead_hosts(RunJournal &journal, Storage &storage, EventSink &sink,
                            const Resumer &resume) {
  size_t ended = 0, resumed = 0;
  for (const RunJournal::Orphan &orphan : journal.take_dead_hosts_runs()) {
    try {
      const auto info = storage.get_execution(orphan.fid);
      if (!info || is_final_status(info->status)) continue;
      Resumption next;
      if (resume) {
        // Journaled first: the resumed run may end before resume returns.
        journal.begun(orphan.fid, info->username);
        next = resume(orphan, *info);
        if (next.resumed) {
          ++resumed;
          continue;
        }
        journal.ended(orphan.fid);
      }
      std::vector<Event> events(2);
      for (size_t i = 0; i < events.size(); ++i) {
        events[i].fid = orphan.fid;
        events[i].username = info->username;
        // Among the notes: the dead host's events still in the transport need the seqs
        // after last_seq, and are stored there when they arrive.
        events[i].seq = std::max(kHostNoteSeq, info->last_seq + 1) + static_cast<int64_t>(i);
        events[i].timestamp = now_seconds();
      }
      events[0].kind = "error";
      events[0].payload = !next.end_reason.empty()
                              ? next.end_reason
                              : "the host stopped while this run was running (host " +
                                    orphan.instance + " is gone)";
      events[1].kind = "status";
      events[1].payload = "error";
      sink.publish(events);
      ++ended;
    } catch (const std::exception &e) {
      // Kept in this host's journal, so that the next start tries again.
      journal.begun(orphan.fid, orphan.username);
      log_error("run journal: cannot end run " + orphan.fid + " of the dead host " +
                orphan.instance + ": " + e.what());
    }
  }
  if (ended > 0) log_info("ended " + std::to_string(ended) + " runs that dead hosts left running");
  if (resumed > 0)
    log_info("resumed " + std::to_string(resumed) + " runs that dead hosts left awaiting a lock");
  return ended;
}

void JournalingSink::publish(const std::vector<Event> &events) {
  for (const Event &e : events)
    if (e.kind == "status" && e.payload == "starting") journal_.begun(e.fid, e.username);
  try {
    next_.publish(events);
  } catch (...) {
    // A run whose first events were refused never started.
    for (const Event &e : events)
      if (e.kind == "status" && e.payload == "starting") journal_.ended(e.fid);
    throw;
  }
  for (const Event &e : events)
    if (e.kind == "status" && is_final_status(e.payload)) journal_.ended(e.fid);
}

}  // namespace kodo
