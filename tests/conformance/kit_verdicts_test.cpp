// kit_verdicts_test.cpp: kodo-conformance, run as a user runs it, against the test plugins.
// Correct plugins pass (exit 0); each contract-breaking plugin fails (exit 1) with output
// naming the contract it breaks; a plugin the kit cannot even run gets exit 2 and the
// loader's or the plugin's own message.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

struct Verdict {
  int exit_code = -1;  // 128 + signal when it died of one
  std::string output;  // stdout and stderr together
};

std::string plugin_path(const std::string &name) {
  return std::string(KODO_TEST_PLUGIN_DIR) + "/" + name + ".so";
}

// `environment`: shell assignments put before the kit's command.
Verdict run_kit(const std::string &plugin, const std::string &extra_arguments = "",
                const std::string &environment = "") {
  const std::string command = environment + " '" + KODO_CONFORMANCE_EXE + "' --plugin '" +
                              plugin_path(plugin) + "' " + extra_arguments + " 2>&1";
  Verdict verdict;
  FILE *pipe = popen(command.c_str(), "r");
  if (!pipe) return verdict;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) verdict.output.append(buffer, n);
  const int status = pclose(pipe);
  if (WIFEXITED(status)) verdict.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) verdict.exit_code = 128 + WTERMSIG(status);
  // ctest reports a test whose output shows gtest's skip marker as skipped; the kit's own
  // skips, echoed in a failure message, must not turn a failure into a skip.
  for (size_t at; (at = verdict.output.find("[  SKIPPED ]")) != std::string::npos;)
    verdict.output.replace(at, 12, "[  skipped ]");
  return verdict;
}

// ---- Correct plugins pass --------------------------------------------------------------

TEST(KitPasses, GoodMemoryStorage) {
  const Verdict v = run_kit("good_memory_storage");
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_THAT(v.output,
              AllOf(HasSubstr("capabilities: LIST, ARCHIVE, PURGE"), HasSubstr("[  PASSED  ]")));
  EXPECT_THAT(v.output, ::testing::Not(HasSubstr("[ RUN      ] Transport")))
      << "only storage cases run";
}

TEST(KitPasses, GoodMinimalStorageWithoutCapabilities) {
  const Verdict v = run_kit("good_minimal_storage");
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_THAT(v.output, AllOf(HasSubstr("capabilities: none"), HasSubstr("LIST not claimed"),
                              HasSubstr("[  skipped ]")));
}

// An opened handle may narrow what its plugin declares; the kit holds it to the narrower
// claim, both ways.
TEST(KitPasses, AHandleNarrowedByItsOptions) {
  const Verdict v = run_kit("narrows_by_option", "--option archive=false");
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_THAT(v.output, AllOf(HasSubstr("capabilities: LIST, PURGE (narrowed by the options from "
                                        "LIST, ARCHIVE, PURGE)"),
                              HasSubstr("ARCHIVE not claimed")));
  EXPECT_EQ(run_kit("narrows_by_option").exit_code, 0) << "not narrowed, it archives";
}

// A plugin that crashes or hangs costs the kit one case: it names the case and how it
// ended, runs every other case and prints a summary of all of them.
TEST(KitFails, ACrashIsReportedByCaseAndTheOtherCasesRun) {
  // Under AddressSanitizer the crash would end in ASan's report and exit 1; without its SEGV
  // handler the case's child dies by the signal, as it does in a plain build.
  const Verdict v = run_kit("faults_in_purge", "--option fault=crash",
                            "ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_segv=0\"");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_THAT(v.output,
              AllOf(HasSubstr("case StoragePurge.PurgesOnlyExecutionsOlderThanTheCutoff: killed "
                              "by SIGSEGV"),
                    HasSubstr("[       OK ] StorageArchive."), HasSubstr("22 passed"),
                    HasSubstr("1 did not pass")));
}

TEST(KitFails, AHangIsReportedByCaseAndTheOtherCasesRun) {
  const Verdict v = run_kit("faults_in_purge", "--option fault=hang --case-timeout 2");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_THAT(v.output, AllOf(HasSubstr("case StoragePurge.PurgesOnlyExecutionsOlderThanTheCutoff: "
                                        "no answer in 2 s"),
                              HasSubstr("22 passed"), HasSubstr("1 did not pass")));
}

TEST(KitFails, AHandleThatDoesMoreThanItClaims) {
  const Verdict v = run_kit("narrows_by_option", "--option archive=false --option honest=false");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_THAT(v.output, HasSubstr("ARCHIVE"));
}

TEST(KitPasses, GoodMemoryTransport) {
  const Verdict v = run_kit("good_memory_transport");
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_THAT(v.output, AllOf(HasSubstr("capabilities: GROUPS, REDELIVERY, FINISH"),
                              HasSubstr("claim_idle_ms=200"), HasSubstr("[  PASSED  ]")));
  EXPECT_THAT(v.output, ::testing::Not(HasSubstr("[ RUN      ] Storage")))
      << "only transport cases run";
}

TEST(KitPasses, GoodSingleConsumerTransportWithoutGroups) {
  const Verdict v = run_kit("good_single_consumer_transport");
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_THAT(v.output,
              AllOf(HasSubstr("capabilities: REDELIVERY, FINISH"), HasSubstr("GROUPS not claimed"),
                    HasSubstr("[       OK ] TransportWithoutGroups."
                              "SecondConsumerOfAGroupIsRefused")));
}

TEST(KitPasses, GtestFlagsStillSelectCases) {
  const Verdict v = run_kit("good_memory_storage", "--gtest_filter=StorageRead.*");
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_THAT(v.output, HasSubstr("StorageRead.UnknownFidIsNotFound"));
  EXPECT_THAT(v.output, ::testing::Not(HasSubstr("[ RUN      ] StorageAppend")));
}

// ---- Contract-breaking plugins fail, naming the contract -----------------------------

TEST(KitCatches, BreaksIdempotence) {
  const Verdict v = run_kit("breaks_idempotence");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_THAT(v.output, AllOf(HasSubstr("storage contract: append is idempotent on (fid, seq)"),
                              HasSubstr("stored twice")));
}

TEST(KitCatches, LosesOrder) {
  const Verdict v = run_kit("loses_order");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_THAT(v.output,
              AllOf(HasSubstr("storage contract: read_events returns an execution's events in "
                              "seq order"),
                    HasSubstr("events out of seq order")));
}

TEST(KitCatches, OverclaimsCapability) {
  const Verdict v = run_kit("overclaims_capability");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_THAT(v.output, HasSubstr("storage contract: PURGE is claimed, so purge works: got "
                                  "KODO_ERR_NOT_SUPPORTED"));
}

TEST(KitCatches, UnderclaimsCapability) {
  const Verdict v = run_kit("underclaims_capability");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_THAT(v.output, HasSubstr("PURGE is not claimed, but purge returned KODO_OK"));
}

TEST(KitCatches, ThrowsExceptionWithoutCrashing) {
  const Verdict v = run_kit("throws_exception");
  EXPECT_EQ(v.exit_code, 1) << "a failed run, not a crash:\n" << v.output;
  EXPECT_THAT(v.output,
              AllOf(HasSubstr("KODO_ERR_INTERNAL"), HasSubstr("simulated failure in append")));
}

TEST(KitCatches, DropsOnBackpressure) {
  const Verdict v = run_kit("drops_on_backpressure");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_THAT(v.output, AllOf(HasSubstr("transport contract: a full transport fails publish "
                                        "with a retryable KODO_ERR_TIMEOUT and takes none of "
                                        "the batch"),
                              HasSubstr("belongs to the refused batch")));
}

TEST(KitCatches, InterleavesConsumers) {
  const Verdict v = run_kit("interleaves_consumers");
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_THAT(v.output, AllOf(HasSubstr("transport contract: while one consumer holds unacked "
                                        "deliveries of an execution, no other consumer is "
                                        "given its later events"),
                              HasSubstr("while consumer a held unacked deliveries of it")));
}

// ---- Plugins the kit cannot run: exit 2 and one clear line ----------------------------

TEST(KitCannotRun, UnloadablePluginsGetTheLoadersMessage) {
  const std::pair<const char *, const char *> cases[] = {
      {"missing_entry_symbol", "does not export the entry symbol kodo_plugin_entry"},
      {"abi_too_old", "implements ABI version 0"},
      {"abi_too_new", "implements ABI version 99"},
      {"entry_fails", "license server license.invalid is unreachable"},
      {"missing_required_function", "lacks the required function append"}};
  for (const auto &[plugin, message] : cases) {
    const Verdict v = run_kit(plugin);
    EXPECT_EQ(v.exit_code, 2) << plugin << ":\n" << v.output;
    EXPECT_THAT(v.output, AllOf(HasSubstr("kodo-conformance: "), HasSubstr(plugin_path(plugin)),
                                HasSubstr(message)));
    EXPECT_THAT(v.output, ::testing::Not(HasSubstr("[ RUN      ]"))) << plugin;
  }
}

TEST(KitCannotRun, PluginThatCannotOpenGetsItsMessage) {
  const Verdict v = run_kit("open_fails");
  EXPECT_EQ(v.exit_code, 2) << v.output;
  EXPECT_THAT(v.output, AllOf(HasSubstr("cannot open storage plugin 'open_fails'"),
                              HasSubstr("database server db.invalid:5432 refused")));
}

TEST(KitCannotRun, UnknownOptionIsNamed) {
  const Verdict v = run_kit("good_memory_transport", "--option nonsense=1");
  EXPECT_EQ(v.exit_code, 2) << v.output;
  EXPECT_THAT(v.output, HasSubstr("unknown option 'nonsense'"));
}

TEST(KitCannotRun, MissingPluginArgumentShowsUsage) {
  FILE *pipe = popen((std::string("'") + KODO_CONFORMANCE_EXE + "' 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[1024];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << output;
  EXPECT_THAT(output, AllOf(HasSubstr("--plugin PATH is required"), HasSubstr("usage:")));
}

}  // namespace
