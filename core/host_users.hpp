// host_users.hpp: kodo-host's side of accounts: whether `serve` requires logins (and refuses
// to listen beyond loopback without them), and the `users` command.
#pragma once

#include "core/auth.hpp"
#include "core/host_options.hpp"

#include <memory>
#include <string>
#include <vector>

namespace kodo {

// True for 127.0.0.0/8, ::1 and localhost.
bool loopback_host(const std::string &host);

// The accounts `serve` checks logins against, or null when every request acts as
// --default-user (auth off, or auto with no admin database, on loopback). Throws
// kodo::Error when the address is not loopback and logins are off, or `admin` still has
// kodosumi's default password there. A password it makes for `admin` is printed once, on
// standard error, never logged.
std::unique_ptr<Auth> open_auth_for_serve(const HostConfig &config);

// `kodo-host users list|add|passwd|disable|enable|operator ...`; passwords are read from
// standard input (first line), never from the command line.
int users_command(const HostConfig &config, const std::vector<std::string> &words);

}  // namespace kodo
