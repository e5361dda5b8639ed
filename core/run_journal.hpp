// run_journal.hpp: which runs each host has under way, so that a restarted host can end the
// runs a dead one left `running`.
//
// Every host writes a journal in a directory of the machine (by default kodo-hosts beside the
// exec dir): <instance>.runs, one line per run begun ("+fid username") and ended ("-fid"),
// and <instance>.lock, on which it holds flock(LOCK_EX) for its whole life. The kernel drops
// that lock when the process dies, however it dies, so the lock is the lease: a journal whose
// lock can be taken belongs to a dead host. At start (reconcile_dead_hosts) a host takes over
// every such journal, and each run it lists as begun and not ended that storage still shows
// as not finished gets an error event ("the host stopped while this run was running") and
// status "error", which also ends its SSE streams. Both take seqs among the notes
// (kHostNoteSeq): the dead host may have left events of the run in a cross-process transport,
// and those, stored later, keep their own seqs. Live hosts' journals are locked, so hosts
// sharing one PostgreSQL (or one directory) never end each other's live runs.
//
// Limits: hosts on different machines see only their own machine's journals, so a dead
// host's runs are ended when a host starts on its machine with the same directory; flock over
// NFS is not relied on. A run ended so reads `error` even if the dead host's own final status
// arrives later (it has the lower seq), and its summary's last_seq is a note's. Lines are
// written without fsync: a process crash loses nothing, a
// machine crash may lose the last lines.
#pragma once

#include "core/event.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace kodo {

class Storage;

class RunJournal {
 public:
  // Makes `dir` if missing and this host's lock and journal in it. Throws kodo::Error (IO)
  // naming the path on failure.
  explicit RunJournal(const std::string &dir);
  ~RunJournal();  // a clean stop: the journal and lock are removed
  RunJournal(const RunJournal &) = delete;
  RunJournal &operator=(const RunJournal &) = delete;

  const std::string &instance() const { return instance_; }
  void begun(const std::string &fid, const std::string &username);
  void ended(const std::string &fid);

  struct Orphan {
    std::string fid, username, instance;
  };
  // Runs begun and not ended in the journals of hosts that are gone; their journals are
  // removed. Journals of live hosts (their lock held) are left alone.
  std::vector<Orphan> take_dead_hosts_runs();

 private:
  void append(const std::string &line);
  void rewrite_locked();

  std::string dir_, instance_, lock_path_, runs_path_;
  int lock_fd_ = -1;
  std::mutex mu_;
  int runs_fd_ = -1;
  std::map<std::string, std::string> active_;  // fid -> username
  uint64_t lines_ = 0;                         // in the file, to know when to compact it
};

// What a Resumer made of a dead host's unfinished run: it goes on here (`resumed`, and is
// this host's run now), or it is ended, with `end_reason` as its error when one is given.
struct Resumption {
  bool resumed = false;
  std::string end_reason;
};
using Resumer =
    std::function<Resumption(const RunJournal::Orphan &orphan, const ExecutionInfo &info)>;

// Ends, with an error event and status "error" published to `sink`, every run that dead
// hosts left unfinished (see above), unless `resume` (when given) resumes it. Returns how many
// were ended; problems are logged.
size_t reconcile_dead_hosts(RunJournal &journal, Storage &storage, EventSink &sink,
                            const Resumer &resume = nullptr);

// Writes to `journal` the runs whose events pass through it: begun before a status
// "starting" goes out, ended once a final status did.
class JournalingSink : public EventSink {
 public:
  JournalingSink(EventSink &next, RunJournal &journal) : next_(next), journal_(journal) {}
  void publish(const std::vector<Event> &events) override;

 private:
  EventSink &next_;
  RunJournal &journal_;
};

}  // namespace kodo
