// error.hpp: the host's one exception type, carrying a kodo_status and a message that
// names what was wrong.
#pragma once

#include <kodo/plugin.hpp>

#include <stdexcept>
#include <string>

namespace kodo {

// One error type on both sides of the SDK: kodo::sdk::Error (kodo/plugin.hpp).
using sdk::Error;

// Takes a plugin's filled kodo_error (releasing it) and throws it as kodo::Error,
// prefixed with what the host was doing.
[[noreturn]] void throw_plugin_error(const std::string &context, kodo_status status,
                                     kodo_error &error);

}  // namespace kodo
