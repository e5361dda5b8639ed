// Fuzzes the host's options model (core/host_options.cpp): the command line, the KODO_*
// environment and the INI config file, together, as kodo-host parses them at start.
// Input: three sections separated by a line "%%": command-line words (one a line),
// environment entries NAME=VALUE (one a line; KODO_ is prepended when missing), and the
// config file's text. Whatever comes in, the result is a HostConfig or a kodo::Error that
// says what is wrong; any other exception escaping is a finding.
#include <kodo/host/error.hpp>
#include "core/host_options.hpp"
#include "fuzz/fuzz_check.hpp"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

extern char **environ;

namespace {

std::vector<std::string> split(std::string_view text, std::string_view separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t end = text.find(separator, start);
    parts.emplace_back(text.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + separator.size();
  }
}

// The config file is always this one: a fuzzed --config or KODO_CONFIG could otherwise name
// /dev/zero or a FIFO and hang the run.
bool names_config(const std::string &word) {
  if (word.rfind("-c", 0) == 0 && word.rfind("--", 0) != 0) return true;
  if (word.rfind("--c", 0) != 0) return false;
  const std::string name = word.substr(2, word.find('=') - 2);
  return std::string("config").rfind(name, 0) == 0;
}

const std::string &config_path() {
  static const std::string path =
      "/tmp/kodo-host-options-fuzz-" + std::to_string(getpid()) + ".ini";
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string_view input(reinterpret_cast<const char *>(data), size);
  auto sections = split(input, "\n%%\n");
  sections.resize(3);

  std::vector<std::string> words = {"kodo-host"};
  for (auto &word : split(sections[0], "\n"))
    if (!word.empty() && word.find('\0') == std::string::npos && !names_config(word))
      words.push_back(word);

  std::vector<std::string> env_entries;
  for (auto &entry : split(sections[1], "\n")) {
    if (entry.empty() || entry.find('\0') != std::string::npos) continue;
    if (entry.rfind("KODO_", 0) != 0) entry.insert(0, "KODO_");
    if (entry.rfind("KODO_CONFIG=", 0) == 0) continue;
    env_entries.push_back(entry);
  }

  if (!sections[2].empty()) {
    std::ofstream(config_path(), std::ios::binary | std::ios::trunc) << sections[2];
    words.push_back("--config=" + config_path());
  }

  std::vector<const char *> argv;
  argv.reserve(words.size() + 1);
  for (const auto &w : words) argv.push_back(w.c_str());
  argv.push_back(nullptr);
  std::vector<char *> env;
  env.reserve(env_entries.size() + 1);
  for (auto &e : env_entries) env.push_back(e.data());
  env.push_back(nullptr);

  // The parser reads `environ`; give it exactly the fuzzed entries for this call.
  char **saved = environ;
  environ = env.data();
  try {
    kodo::HostConfig config;
    kodo::parse_command_line(static_cast<int>(words.size()), argv.data(),
                             boost::program_options::options_description(), config);
    FUZZ_CHECK(config.executor.max_running >= 1);
    FUZZ_CHECK(config.spooler.consumers >= 1);
    FUZZ_CHECK(config.spooler.batch_size >= 1);
  } catch (const kodo::Error &e) {
    FUZZ_CHECK(*e.what() != '\0');
  } catch (const std::exception &e) {
    environ = saved;
    (void)std::fprintf(stderr, "escaped as %s: %s\n", typeid(e).name(), e.what());
    FUZZ_CHECK(!"only kodo::Error may escape parse_command_line");
  }
  environ = saved;
  return 0;
}
