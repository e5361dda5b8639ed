// lock_resume.hpp: a run whose host died while it awaited a lock goes on under the next host.
//
// The flow's process died with its host, so the new host runs the flow again, with the same
// fid and the inputs and entry point stored in its inputs and meta events, as a Continuation
// with `replay` (executor.hpp): nothing stored before is stored again, the locks answered
// before are answered again from their stored leases, and the open one waits for its POST
// /lock as if nothing had happened. A debug event at the first new seq says the run was
// resumed and why.
//
// Resuming assumes the flow is deterministic up to its open lock: it asks for the same locks
// (by name) in the same order; what it does before (side effects included) happens again. A
// flow that asks otherwise is stopped with an error that says so.
//
// Runs the dead host left with no open lock are ended by the journal as before; so is a run
// whose open lock expired while no host ran it (kodosumi's TimeoutError), and one whose flow
// this host does not have.
#pragma once

#include "core/run_journal.hpp"

namespace kodo {

class Executor;
class Storage;

// The run_journal Resumer: resumes `orphan` in `executor` when it awaited a lock.
Resumption resume_awaiting_run(Executor &executor, Storage &storage,
                               const RunJournal::Orphan &orphan, const ExecutionInfo &info);

}  // namespace kodo
