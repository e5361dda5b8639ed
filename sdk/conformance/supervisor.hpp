// supervisor.hpp: kodo-conformance runs the cases in child processes, so a plugin that
// crashes or hangs costs one case ("case X: killed by SIGSEGV", "case X: no answer in N s")
// and every other case still runs and is reported.
#pragma once

#include <string>
#include <vector>

namespace kodo::conformance {

// In a child: reports each case's start and end on `fd` (one line each, written at once, so
// the parent knows which case was running when the child died).
void report_cases_to(int fd);

// In the parent: runs `self` (this executable) with `arguments` plus a gtest filter and the
// report pipe, again after each crash or hang with the cases done left out, until every
// case selected by `filter` ran. Prints a summary naming every case that did not pass.
// Returns the exit status: 0 when every case passed or was skipped, 1 otherwise.
int supervise_cases(const std::string &self, const std::vector<std::string> &arguments,
                    const std::string &filter, double case_timeout_s,
                    const std::string &scratch_root);

}  // namespace kodo::conformance
