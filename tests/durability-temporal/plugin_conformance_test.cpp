// plugin_conformance_test.cpp: kodo-durability-temporal.so as the host meets it: loaded by
// kodo-host's loader and described by `plugins describe`, and held to the durability contract
// by kodo-conformance, against a real dev server on loopback ports of its own.
#include <gtest/gtest.h>

#include "temporal_server.hpp"

namespace kodo::testing {
namespace {

TEST(TemporalPlugin, PluginsDescribeShowsTheDurabilityKind) {
  TempDir dir("kodo-temporal-describe");
  const std::string out = dir.path() + "/describe.out";
  ASSERT_EQ(run_as({KODO_HOST, "--plugin-dir", KODO_PLUGIN_DIR, "plugins", "describe", "temporal"},
                   "", out),
            0)
      << slurp(out);
  const std::string text = slurp(out);
  EXPECT_NE(text.find("temporal (durability plugin)"), std::string::npos) << text;
  EXPECT_NE(text.find("ABI version:  2"), std::string::npos) << text;
  EXPECT_NE(text.find("retry, pause, cancel, query, cross-process"), std::string::npos) << text;
  EXPECT_NE(text.find("KODO_TEMPORAL_HOST"), std::string::npos) << text;
}

TEST(TemporalPlugin, OpeningWithTheServerDownNamesTheAddress) {
  TempDir dir("kodo-temporal-down");
  const std::string out = dir.path() + "/kit.out";
  const std::string address = "127.0.0.1:" + std::to_string(free_loopback_port());
  // Nothing listens there: open fails, and says where it looked.
  EXPECT_EQ(run_as({KODO_CONFORMANCE, "--plugin", KODO_PLUGIN_DIR "/kodo-durability-temporal.so",
                    "--option", "host=" + address, "--option", "connect_timeout_s=1"},
                   "", out),
            2);
  EXPECT_NE(slurp(out).find(address), std::string::npos) << slurp(out);
}

TEST(TemporalPlugin, PassesTheDurabilityConformanceKit) {
  TemporalServer server;
  server.start();
  TempDir dir("kodo-temporal-kit");
  const std::string out = dir.path() + "/kit.out";
  const int status =
      run_as({KODO_CONFORMANCE, "--plugin", KODO_PLUGIN_DIR "/kodo-durability-temporal.so",
              "--option", "host=" + server.address(), "--case-timeout", "240"},
             "", out);
  const std::string report = slurp(out);
  EXPECT_EQ(status, 0) << report;
  EXPECT_NE(report.find("DurabilityCase.AJobHandedBackRunsAgainAsTheNextAttempt"),
            std::string::npos)
      << report;
  std::cout << report;
}

}  // namespace
}  // namespace kodo::testing
