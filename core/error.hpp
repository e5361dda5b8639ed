// error.hpp: the host's one exception type, carrying a kodo_status and a message that
// names what was wrong.
#pragma once

#include <kodo/kodo_plugin.h>

#include <stdexcept>
#include <string>

namespace kodo {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string &message, kodo_status code = KODO_ERR_UNKNOWN,
                 bool retryable = false)
      : std::runtime_error(message), code_(code), retryable_(retryable) {}
  kodo_status code() const { return code_; }
  bool retryable() const { return retryable_; }

 private:
  kodo_status code_;
  bool retryable_;
};

// Takes a plugin's filled kodo_error (releasing it) and throws it as kodo::Error,
// prefixed with what the host was doing.
[[noreturn]] void throw_plugin_error(const std::string &context, kodo_status status,
                                     kodo_error &error);

}  // namespace kodo
