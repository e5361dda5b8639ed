// flow_env_test.cpp: a flow's environment is an allowlist, its config and the protocol.
#include "core/flow_env.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace {

using kodo::flow_env_entry_problem;
using kodo::flow_environment;

TEST(FlowEnv, HostSettingsAndSecretsStayOutUnlessTheFlowNamesThem) {
  const std::vector<std::string> host = {
      "PATH=/opt/bin:/usr/bin",         "HOME=/home/k",      "LANG=C.UTF-8", "LC_TIME=de_DE.UTF-8",
      "KODO_REDIS_URL=redis://:pw@h/0", "AWS_SECRET=s3cr3t", "API_KEY=key",  "LCX=not a locale"};
  const auto env =
      flow_environment(host, {"API_KEY", "GONE", "MODE=fast"}, {"f1", "u", "hello", 3});
  EXPECT_EQ(env, (std::vector<std::string>{"HOME=/home/k", "LANG=C.UTF-8", "LC_TIME=de_DE.UTF-8",
                                           "PATH=/opt/bin:/usr/bin", "API_KEY=key", "MODE=fast",
                                           "KODO_FID=f1", "KODO_USERNAME=u", "KODO_FLOW=hello",
                                           "KODO_EVENTS_FD=3", "KODO_ANSWERS_FD=4"}));
}

TEST(FlowEnv, TheProtocolCannotBeOverriddenAndPathHasADefault) {
  const auto env = flow_environment({}, {"KODO_FID=x", "HOME=/flow"}, {"f1", "u", "hello", 3});
  EXPECT_EQ(env, (std::vector<std::string>{"PATH=/usr/local/bin:/usr/bin:/bin", "KODO_FID=f1",
                                           "HOME=/flow", "KODO_USERNAME=u", "KODO_FLOW=hello",
                                           "KODO_EVENTS_FD=3", "KODO_ANSWERS_FD=4"}));
}

TEST(FlowEnv, TheLaunchingUsersTokenIsKodoJwtAndCannotBeOverridden) {
  const auto env = flow_environment({"KODO_JWT=from-host"}, {"KODO_JWT=from-config"},
                                    {"f1", "u", "hello", 3}, "the.run.token");
  std::vector<std::string> tokens;
  for (const std::string &kv : env)
    if (kv.rfind("KODO_JWT=", 0) == 0) tokens.push_back(kv);
  EXPECT_EQ(tokens, std::vector<std::string>{"KODO_JWT=the.run.token"});
  EXPECT_EQ(std::count(env.begin(), env.end(), "KODO_JWT=from-host"), 0);
}

TEST(FlowEnv, EntriesAreNameValueOrName) {
  for (const char *good : {"A=1", "A=", "_x1=a=b", "PASS_ME"})
    EXPECT_EQ(flow_env_entry_problem(good), "") << good;
  for (const char *bad : {"", "=1", "1A=x", "A B=1", "A-B", "A.B=1"})
    EXPECT_NE(flow_env_entry_problem(bad).find("neither NAME=VALUE nor NAME"), std::string::npos)
        << bad;
}

}  // namespace
