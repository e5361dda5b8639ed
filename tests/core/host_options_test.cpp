// The options model: precedence (command line > environment > file > defaults), kodosumi's
// names, config sections, and errors that name what was wrong.
#include "core/host_options.hpp"
#include <kodo/host/error.hpp>

#include <gtest/gtest.h>

#include <unistd.h>
#include <cstdlib>
#include <fstream>

namespace kodo {
namespace {

class HostOptionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/kodo-options-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    for (const char *name :
         {"KODO_EXEC_DIR", "KODO_EVENT_TRANSPORT", "KODO_TRANSPORT", "KODO_FLOW", "KODO_CONFIG",
          "KODO_MAX_RUNNING", "KODO_STORAGE_OPTION", "KODO_EXECUTION_DATABASE"})
      unsetenv(name);
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  std::string write_file(const std::string &text) {
    std::string path = dir_ + "/kodo.ini";
    std::ofstream(path) << text;
    return path;
  }

  HostConfig parse(std::vector<std::string> args) {
    args.insert(args.begin(), "kodo-host");
    std::vector<const char *> argv;
    for (auto &a : args) argv.push_back(a.c_str());
    HostConfig config;
    po::options_description none;
    parse_command_line(static_cast<int>(argv.size()), argv.data(), none, config);
    return config;
  }

  std::string error_of(std::vector<std::string> args) {
    try {
      parse(std::move(args));
    } catch (const Error &e) {
      return e.what();
    }
    return "(no error)";
  }

  std::string dir_;
};

TEST_F(HostOptionsTest, DefaultsAreTheEmbeddedStack) {
  HostConfig c = parse({"serve"});
  EXPECT_EQ(c.storage, "sqlite");
  EXPECT_EQ(c.transport, "inproc");
  EXPECT_EQ(c.execution_mode, "direct");
  EXPECT_EQ(c.exec_dir, "./data/execution");
  EXPECT_EQ(c.address, "127.0.0.1:3370");
}

TEST_F(HostOptionsTest, CommandLineBeatsEnvironmentBeatsFile) {
  std::string file = write_file("exec-dir = /from/file\nmax-running = 3\n");
  setenv("KODO_EXEC_DIR", "/from/env", 1);
  EXPECT_EQ(parse({"--config", file, "--exec-dir", "/from/cli"}).exec_dir, "/from/cli");
  EXPECT_EQ(parse({"--config", file}).exec_dir, "/from/env");
  unsetenv("KODO_EXEC_DIR");
  HostConfig c = parse({"--config", file});
  EXPECT_EQ(c.exec_dir, "/from/file");
  EXPECT_EQ(c.executor.max_running, 3u);
}

TEST_F(HostOptionsTest, ConfigFileNamedByEnvironment) {
  setenv("KODO_CONFIG", write_file("address = http://127.0.0.1:4000\n").c_str(), 1);
  EXPECT_EQ(parse({}).address, "http://127.0.0.1:4000");
}

TEST_F(HostOptionsTest, TlsAndAllowedHostsFromEveryPlace) {
  HostConfig c = parse({"--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--allowed-hosts",
                        " kodo.example.com, ,10.0.0.5 "});
  EXPECT_EQ(c.tls_cert, "/c.pem");
  EXPECT_EQ(c.tls_key, "/k.pem");
  EXPECT_EQ(c.allowed_hosts, (std::vector<std::string>{"kodo.example.com", "10.0.0.5"}));
  EXPECT_TRUE(parse({}).allowed_hosts.empty());  // the defaults (see request_guard.hpp)
  setenv("KODO_TLS_CERT", "/env/c.pem", 1);
  setenv("KODO_TLS_KEY", "/env/k.pem", 1);
  setenv("KODO_ALLOWED_HOSTS", "*", 1);
  c = parse({"--config", write_file("tls-cert = /file/c.pem\ntls-key = /file/k.pem\n")});
  EXPECT_EQ(c.tls_cert, "/env/c.pem");
  EXPECT_EQ(c.tls_key, "/env/k.pem");
  EXPECT_EQ(c.allowed_hosts, std::vector<std::string>{"*"});
  for (const char *name : {"KODO_TLS_CERT", "KODO_TLS_KEY", "KODO_ALLOWED_HOSTS"}) unsetenv(name);
  EXPECT_EQ(
      parse({"--config", write_file("tls-cert = /file/c.pem\ntls-key = /file/k.pem\n")}).tls_key,
      "/file/k.pem");
  EXPECT_NE(error_of({"--tls-cert", "/c.pem"}).find("--tls-cert and --tls-key go together"),
            std::string::npos);
  EXPECT_NE(error_of({"--tls-key", "/k.pem"}).find("--tls-cert and --tls-key go together"),
            std::string::npos);
}

TEST_F(HostOptionsTest, KodosumiTransportName) {
  setenv("KODO_EVENT_TRANSPORT", "redis", 1);
  EXPECT_EQ(parse({}).transport, "redis");
}

TEST_F(HostOptionsTest, PostgresExecutionDatabaseSelectsPostgresStorage) {
  setenv("KODO_EXECUTION_DATABASE", "postgresql+asyncpg://u:p@127.0.0.1:5432/kodo", 1);
  HostConfig c = parse({});
  EXPECT_EQ(c.storage, "postgres");
  ASSERT_FALSE(c.storage_options.host_defaults.empty());
  EXPECT_EQ(c.storage_options.host_defaults.front().first, "url");
}

TEST_F(HostOptionsTest, AnUnknownExecutionDatabaseIsNamedWithoutItsPassword) {
  setenv("KODO_EXECUTION_DATABASE", "mysql://u:topsecret@127.0.0.1:3306/kodo", 1);
  try {
    parse({});
    FAIL() << "a mysql URL was accepted";
  } catch (const std::exception &e) {
    std::string message = e.what();
    EXPECT_NE(message.find("mysql://u:***@127.0.0.1:3306/kodo"), std::string::npos) << message;
    EXPECT_EQ(message.find("topsecret"), std::string::npos) << message;
  }
}

// Found by the host_options fuzz target: Boost 1.74's error message loops forever on an
// option name holding one of its placeholders.
TEST_F(HostOptionsTest, AnOptionNameHoldingABoostPlaceholderIsAnErrorNotAHang) {
  for (const char *arg : {"--stora%canonical_option%x=1", "--nope=%value%", "--%option%"}) {
    try {
      parse({arg});
      FAIL() << arg << " was accepted";
    } catch (const std::exception &e) {
      EXPECT_NE(std::string(e.what()).find("'%word%'"), std::string::npos) << e.what();
    }
  }
  std::string file = write_file("stora%canonical_option%x = 1\n");
  EXPECT_THROW(parse({"--config", file}), std::exception);
}

// Found by the host_options fuzz target: a huge --publish-timeout overflowed its conversion
// to int milliseconds (undefined behaviour). Every time in seconds is range-checked by name.
TEST_F(HostOptionsTest, ATimeInSecondsOutOfRangeIsNamed) {
  for (const char *arg : {"--publish-timeout=23333333333333333333333333333.5",
                          "--spooler-interval=-1", "--kill-grace=nan", "--shutdown-grace=inf"}) {
    try {
      parse({arg});
      FAIL() << arg << " was accepted";
    } catch (const std::exception &e) {
      const std::string option(arg, std::string_view(arg).find('='));
      EXPECT_NE(std::string(e.what()).find(option + " must be between 0 and"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(parse({"--publish-timeout=0.5"}).publish_timeout_ms, 500);
}

TEST_F(HostOptionsTest, FlowsFromEveryPlace) {
  std::string file = write_file(
      "[flow.filed]\ncommand = /bin/echo 'two words'\narg = more\nenv = A=1\ntimeout = 2m\n"
      "description = from the file\n");
  setenv("KODO_FLOW", "envflow=/bin/true\nsecond=/bin/false", 1);
  HostConfig c = parse({"--config", file, "--flow", "cli=/bin/sh -c \"echo hi\"", "--flow-timeout",
                        "cli=30s", "--flow-env", "cli=K=V"});
  ASSERT_EQ(c.flows.size(), 4u);
  EXPECT_EQ(c.flows[0].name, "cli");
  EXPECT_EQ(c.flows[0].argv, (std::vector<std::string>{"/bin/sh", "-c", "echo hi"}));
  EXPECT_DOUBLE_EQ(c.flows[0].timeout_s, 30);
  EXPECT_EQ(c.flows[0].env, (std::vector<std::string>{"K=V"}));
  EXPECT_EQ(c.flows[1].name, "envflow");
  EXPECT_EQ(c.flows[2].name, "second");
  EXPECT_EQ(c.flows[3].name, "filed");
  EXPECT_EQ(c.flows[3].argv, (std::vector<std::string>{"/bin/echo", "two words", "more"}));
  EXPECT_DOUBLE_EQ(c.flows[3].timeout_s, 120);
  EXPECT_EQ(c.flows[3].description, "from the file");
}

TEST_F(HostOptionsTest, PluginOptionsKeepTheirSource) {
  std::string file = write_file("[storage]\nbusy_timeout_ms = 7\n");
  HostConfig c = parse({"--config", file, "--storage-option", "busy_timeout_ms=9"});
  ASSERT_EQ(c.storage_options.command_line.size(), 1u);
  EXPECT_EQ(c.storage_options.command_line[0].second, "9");
  ASSERT_EQ(c.storage_options.file.size(), 1u);
  EXPECT_EQ(c.storage_options.file[0].second, "7");
}

TEST_F(HostOptionsTest, ErrorsNameWhatWasWrong) {
  EXPECT_NE(error_of({"--no-such-option"}).find("no-such-option"), std::string::npos);
  EXPECT_NE(error_of({"--max-running", "many"}).find("max-running"), std::string::npos);
  std::string file = write_file("bogus = 1\n");
  std::string message = error_of({"--config", file});
  EXPECT_NE(message.find(file), std::string::npos) << message;
  EXPECT_NE(message.find("bogus"), std::string::npos) << message;
  EXPECT_NE(error_of({"--flow-timeout", "ghost=5"}).find("ghost"), std::string::npos);
  EXPECT_NE(error_of({"--flow", "bad name=/bin/true"}).find("bad name"), std::string::npos);
  EXPECT_NE(error_of({"--flow", "q=/bin/sh 'unclosed"}).find("unclosed quote"), std::string::npos);
  setenv("KODO_MAX_RUNNING", "lots", 1);
  EXPECT_NE(error_of({}).find("KODO_MAX_RUNNING"), std::string::npos);
  unsetenv("KODO_MAX_RUNNING");
  EXPECT_NE(error_of({"--retention", "soon"}).find("--retention"), std::string::npos);
}

TEST_F(HostOptionsTest, ExecutionModeNamesTheDurabilityPlugin) {
  HostConfig c =
      parse({"--execution-mode", "temporal", "--durability-option", "host=h:1", "serve"});
  EXPECT_EQ(c.execution_mode, "temporal");
  ASSERT_EQ(c.durability_options.command_line.size(), 1u);
  EXPECT_EQ(c.durability_options.command_line[0].first, "host");
  setenv("KODO_EXECUTION_MODE", "temporal", 1);
  EXPECT_EQ(parse({"serve"}).execution_mode, "temporal");
  unsetenv("KODO_EXECUTION_MODE");
}

TEST_F(HostOptionsTest, DurabilityIsTheForksNameOfExecutionMode) {
  const std::string file = write_file("durability = temporal\n[durability]\nhost = h:2\n");
  HostConfig c = parse({"--config", file, "serve"});
  EXPECT_EQ(c.execution_mode, "temporal");
  ASSERT_EQ(c.durability_options.file.size(), 1u);
  EXPECT_EQ(c.durability_options.file[0].second, "h:2");
  EXPECT_EQ(parse({"--durability", "temporal", "--execution-mode", "temporal"}).execution_mode,
            "temporal");
  const std::string error = error_of({"--durability", "temporal", "--execution-mode", "direct"});
  EXPECT_NE(error.find("disagree"), std::string::npos) << error;
}

TEST(ParseDuration, Units) {
  EXPECT_DOUBLE_EQ(parse_duration("90", "x"), 90);
  EXPECT_DOUBLE_EQ(parse_duration("1.5m", "x"), 90);
  EXPECT_DOUBLE_EQ(parse_duration("2h", "x"), 7200);
  EXPECT_DOUBLE_EQ(parse_duration("30d", "x"), 30 * 86400.0);
  EXPECT_THROW(parse_duration("-1", "x"), Error);
  EXPECT_THROW(parse_duration("1y", "x"), Error);
}

}  // namespace
}  // namespace kodo
