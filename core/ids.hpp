// ids.hpp: execution ids and user names. Both become file paths and stream keys, so
// both are checked at every boundary before they are used.
#pragma once

#include <string>

namespace kodo {

// A new fid: a 24-hex-character ObjectId (time, random, counter), as kodosumi makes them.
// Ids made later sort after ids made earlier (to the second).
std::string new_fid();

// Empty string when valid, otherwise why not. Allowed: [A-Za-z0-9_.@-], 1..64 bytes,
// not starting with '.'.
std::string fid_problem(const std::string &fid);
std::string username_problem(const std::string &username);

// Throws kodo::Error(KODO_ERR_INVALID_ARGUMENT) naming the value when invalid.
void check_fid(const std::string &fid);
void check_username(const std::string &username);

// `n` bytes from the kernel's CSPRNG (getrandom(2)); throws kodo::Error(KODO_ERR_IO).
std::string random_bytes(size_t n);

}  // namespace kodo
