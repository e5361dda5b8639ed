// Options are validated against what a plugin declares before the plugin is opened.
#include <kodo/host/error.hpp>
#include <kodo/host/plugin_options.hpp>

#include <gtest/gtest.h>

#include <cstdlib>

namespace kodo {
namespace {

std::shared_ptr<Plugin> flaky() {
  return Plugin::load(FLAKY_STORAGE_PLUGIN, "", 0);
}

std::string error_of(const PluginOptionSources &sources) {
  try {
    resolve_plugin_options(*flaky(), sources);
  } catch (const Error &e) {
    return e.what();
  }
  return "(no error)";
}

TEST(PluginOptions, DefaultsAndPrecedence) {
  PluginOptionSources sources;
  sources.file = {{"token", "file"}, {"fail_first", "5"}};
  sources.command_line = {{"token", "cli"}};
  OptionList values = resolve_plugin_options(*flaky(), sources);
  EXPECT_EQ(values, (OptionList{{"fail_first", "5"}, {"token", "cli"}}));
  setenv("KODO_STORAGE_FAIL_FIRST", "2", 1);
  values = resolve_plugin_options(*flaky(), sources);
  EXPECT_EQ(values, (OptionList{{"fail_first", "2"}, {"token", "cli"}}));
  unsetenv("KODO_STORAGE_FAIL_FIRST");
}

TEST(PluginOptions, ErrorsNameThePluginAndOption) {
  PluginOptionSources unknown;
  unknown.command_line = {{"token", "x"}, {"colour", "red"}};
  std::string message = error_of(unknown);
  EXPECT_NE(message.find("unknown option 'colour'"), std::string::npos) << message;
  EXPECT_NE(message.find("flaky-memory"), std::string::npos) << message;
  EXPECT_NE(message.find("fail_first, token"), std::string::npos) << message;

  PluginOptionSources bad_type;
  bad_type.command_line = {{"token", "x"}, {"fail_first", "often"}};
  message = error_of(bad_type);
  EXPECT_NE(message.find("'fail_first'"), std::string::npos) << message;
  EXPECT_NE(message.find("must be an integer, got 'often'"), std::string::npos) << message;

  message = error_of(PluginOptionSources{});
  EXPECT_NE(message.find("needs option 'token'"), std::string::npos) << message;
  EXPECT_NE(message.find("KODO_STORAGE_TOKEN"), std::string::npos) << message;
}

TEST(PluginOptions, SecretsAreNeverPrinted) {
  PluginOptionSources sources;
  sources.command_line = {{"token", "hunter2"}};
  auto plugin = flaky();
  OptionList values = resolve_plugin_options(*plugin, sources);
  EXPECT_EQ(format_options(*plugin, values).find("hunter2"), std::string::npos);
  std::string text = describe_plugin(*plugin);
  EXPECT_NE(text.find("token (string, required, secret)"), std::string::npos) << text;
  EXPECT_NE(text.find("fail_first (int) default: 0"), std::string::npos) << text;
}

}  // namespace
}  // namespace kodo
