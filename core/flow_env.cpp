// flow_env.cpp: see flow_env.hpp.
#include "core/flow_env.hpp"

#include <map>

namespace kodo {

namespace {

constexpr const char *kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

bool allowed_from_host(const std::string &name) {
  static const char *const kNames[] = {"PATH",   "HOME", "USER", "LOGNAME", "SHELL",
                                       "TMPDIR", "TZ",   "LANG", "LANGUAGE"};
  for (const char *allowed : kNames)
    if (name == allowed) return true;
  return name.rfind("LC_", 0) == 0;
}

bool is_name(const std::string &s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9')) return false;
  for (const char c : s)
    if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
      return false;
  return true;
}

// Keeps the first position of each name and the last value given for it.
class EnvBuilder {
 public:
  void set(const std::string &name, const std::string &kv) {
    const auto [it, added] = index_.emplace(name, entries_.size());
    if (added)
      entries_.push_back(kv);
    else
      entries_[it->second] = kv;
  }
  bool has(const std::string &name) const { return index_.count(name) > 0; }
  std::vector<std::string> take() { return std::move(entries_); }

 private:
  std::vector<std::string> entries_;
  std::map<std::string, size_t> index_;
};

}  // namespace

std::string flow_env_entry_problem(const std::string &entry) {
  const std::string name = entry.substr(0, entry.find('='));
  if (!is_name(name))
    return "env entry \"" + entry.substr(0, 80) +
           "\" is neither NAME=VALUE nor NAME (a name is letters, digits and _, not starting "
           "with a digit)";
  return {};
}

std::vector<std::string> flow_environment(const std::vector<std::string> &host_env,
                                          const std::vector<std::string> &flow_env,
                                          const FlowProtocolEnv &protocol,
                                          const std::string &token) {
  std::map<std::string, std::string> host;  // name -> "K=V"
  for (const std::string &kv : host_env) {
    const size_t eq = kv.find('=');
    if (eq != std::string::npos && eq > 0) host.emplace(kv.substr(0, eq), kv);
  }
  EnvBuilder env;
  for (const auto &[name, kv] : host)
    if (allowed_from_host(name)) env.set(name, kv);
  if (!env.has("PATH")) env.set("PATH", std::string("PATH=") + kDefaultPath);
  for (const std::string &entry : flow_env) {
    const size_t eq = entry.find('=');
    if (eq != std::string::npos) {
      env.set(entry.substr(0, eq), entry);
    } else if (const auto it = host.find(entry); it != host.end()) {
      env.set(entry, it->second);
    }
  }
  env.set("KODO_FID", "KODO_FID=" + protocol.fid);
  env.set("KODO_USERNAME", "KODO_USERNAME=" + protocol.username);
  env.set("KODO_FLOW", "KODO_FLOW=" + protocol.flow);
  env.set("KODO_EVENTS_FD", "KODO_EVENTS_FD=" + std::to_string(protocol.events_fd));
  env.set("KODO_ANSWERS_FD", "KODO_ANSWERS_FD=" + std::to_string(protocol.answers_fd));
  if (!token.empty()) env.set("KODO_JWT", "KODO_JWT=" + token);
  return env.take();
}

}  // namespace kodo
