#include "core/host_users.hpp"

#include <kodo/host/error.hpp>
#include <kodo/host/log.hpp>
#include <kodo/url.hpp>
#include "core/http_server.hpp"

#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

namespace kodo {

namespace {

// The SQLite file of a sqlite:/// URL, or "" for other databases.
std::string sqlite_file(const std::string &url) {
  if (url.rfind("sqlite", 0) != 0) return "";
  const size_t at = url.find(":///");
  return at == std::string::npos ? "" : url.substr(at + 4);
}

std::string shown_url(const std::string &url) {
  if (!sqlite_file(url).empty()) return url;  // a file: no password in it
  try {
    return sdk::parse_url(url).redacted();
  } catch (const Error &) {
    return "(the admin database URL)";
  }
}

std::unique_ptr<AccountStore> open_accounts(const HostConfig &config) {
  auto store = AccountStore::open(config.auth.admin_database);
  store->create_schema();
  return store;
}

// A password from standard input: its first line, not echoed when it is a terminal.
std::string read_password(const std::string &prompt) {
  const bool tty = ::isatty(STDIN_FILENO) != 0;
  termios before{};
  if (tty) {
    std::cerr << prompt << std::flush;
    ::tcgetattr(STDIN_FILENO, &before);
    termios quiet = before;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string password;
  std::getline(std::cin, password);
  if (tty) {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &before);
    std::cerr << "\n";
  }
  if (!password.empty() && password.back() == '\r') password.pop_back();
  if (password.empty())
    throw Error(KODO_ERR_INVALID_ARGUMENT, "no password on standard input (its first line)");
  return password;
}

Account named(AccountStore &store, const std::string &name) {
  auto found = store.by_name(name);
  if (!found) throw Error(KODO_ERR_NOT_FOUND, "no account named '" + name + "'");
  return *found;
}

}  // namespace

bool loopback_host(const std::string &host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::unique_ptr<Auth> open_auth_for_serve(const HostConfig &config) {
  const std::string host = parse_listen_address(config.address).host;
  const bool loopback = loopback_host(host);
  const std::string file = sqlite_file(config.auth.admin_database);
  const bool database_exists = file.empty() || std::filesystem::exists(file);
  const bool on =
      config.auth.mode == "on" || (config.auth.mode == "auto" && (database_exists || !loopback));
  if (!on) {
    if (!loopback)
      throw Error(KODO_ERR_INVALID_ARGUMENT,
                  "refusing to listen on " + config.address +
                      " without logins: --auth off is for loopback addresses only");
    return nullptr;
  }
  const std::string key =
      load_or_create_signing_key(config.auth.secret_key, config.auth.secret_key_file);
  auto auth = std::make_unique<Auth>(open_accounts(config), key, config.auth);
  // Beyond loopback, kodosumi's well-known default password must not open the host.
  const bool generate = !loopback && !config.auth.admin_password_given;
  const std::string made = auth->ensure_admin(generate);
  if (!made.empty() && generate)
    (void)std::fprintf(stderr,
                       "kodo-host: made account admin with password %s (shown once; change it "
                       "with `kodo-host users passwd admin`)\n",
                       made.c_str());
  if (!loopback && auth->admin_has_default_password())
    throw Error(KODO_ERR_INVALID_ARGUMENT,
                "refusing to listen on " + config.address +
                    ": account admin still has the default password; change it with "
                    "`kodo-host users passwd admin`");
  log_info("logins required: accounts in " + shown_url(config.auth.admin_database) +
           (config.auth.secret_key.empty()
                ? ", tokens signed with the key in " + config.auth.secret_key_file
                : ", tokens signed with the configured key"));
  return auth;
}

int users_command(const HostConfig &config, const std::vector<std::string> &words) {
  auto need = [&](size_t n, const char *usage) {
    if (words.size() != n)
      throw Error(KODO_ERR_INVALID_ARGUMENT, std::string("usage: kodo-host users ") + usage);
  };
  const std::string sub = words.size() > 1 ? words[1] : "";
  auto store = open_accounts(config);
  if (sub == "list") {
    need(2, "list");
    for (const Account &a : store->list())
      (void)std::printf("%s  %-20s %-30s%s%s\n", a.id.c_str(), a.name.c_str(), a.email.c_str(),
                        a.is_operator ? "  operator" : "", a.active ? "" : "  disabled");
    return 0;
  }
  if (sub == "add") {
    need(4, "add NAME EMAIL (the password on standard input)");
    if (words[3].find('@') == std::string::npos)
      throw Error(KODO_ERR_INVALID_ARGUMENT, "'" + words[3] + "' is not an email address");
    Account a;
    a.id = new_account_id();
    a.name = words[2];
    a.email = words[3];
    a.password_hash = hash_password(read_password("password for " + a.name + ": "));
    store->insert(a);
    (void)std::printf("added %s (%s)\n", a.name.c_str(), a.id.c_str());
    return 0;
  }
  if (sub == "passwd") {
    need(3, "passwd NAME (the new password on standard input)");
    Account a = named(*store, words[2]);
    a.password_hash = hash_password(read_password("new password for " + a.name + ": "));
    store->update(a);
    (void)std::printf("password of %s changed\n", a.name.c_str());
    return 0;
  }
  if (sub == "disable" || sub == "enable") {
    need(3, "disable|enable NAME");
    Account a = named(*store, words[2]);
    a.active = sub == "enable";
    store->update(a);
    (void)std::printf("%s %s\n", a.name.c_str(), a.active ? "enabled" : "disabled");
    return 0;
  }
  if (sub == "operator") {
    need(4, "operator NAME on|off");
    if (words[3] != "on" && words[3] != "off")
      throw Error(KODO_ERR_INVALID_ARGUMENT, "users operator NAME takes on or off");
    Account a = named(*store, words[2]);
    a.is_operator = words[3] == "on";
    store->update(a);
    (void)std::printf("%s is %san operator\n", a.name.c_str(), a.is_operator ? "" : "not ");
    return 0;
  }
  throw Error(KODO_ERR_INVALID_ARGUMENT,
              "usage: kodo-host users list|add|passwd|disable|enable|operator ...");
}

}  // namespace kodo
