// flow_env.hpp: the environment a flow process gets, built from an allowlist.
//
// A flow is code written by someone else; the host's environment holds its own settings
// (KODO_*) and secrets (database and Redis URLs with passwords). So a flow gets only:
//   1. from the host, the variables a program needs to run at all: PATH, HOME, USER, LOGNAME,
//      SHELL, TMPDIR, TZ, LANG, LANGUAGE and LC_* (PATH defaults to a system path when the
//      host has none);
//   2. the flow's configured env, in order: "NAME=VALUE" sets NAME; a bare "NAME" passes the
//      host's NAME when the host has it (the one way a host variable outside the allowlist,
//      a secret included, reaches a flow: by a line in that flow's config);
//   3. the protocol, which nothing above can override: KODO_FID, KODO_USERNAME, KODO_FLOW,
//      KODO_EVENTS_FD, KODO_ANSWERS_FD.
#pragma once

#include <string>
#include <vector>

namespace kodo {

// Why `entry` cannot be a flow env entry ("NAME=VALUE" or "NAME", NAME a portable shell
// name: [A-Za-z_][A-Za-z0-9_]*), or empty when it can.
std::string flow_env_entry_problem(const std::string &entry);

struct FlowProtocolEnv {
  std::string fid, username, flow;
  int events_fd = 3;
  int answers_fd = 4;
};

// "K=V" entries, each name once. `host_env` is "K=V" entries as in environ. `token`, when not
// empty, is KODO_JWT: the launching user's token for this run.
std::vector<std::string> flow_environment(const std::vector<std::string> &host_env,
                                          const std::vector<std::string> &flow_env,
                                          const FlowProtocolEnv &protocol,
                                          const std::string &token = "");

}  // namespace kodo
