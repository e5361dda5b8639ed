// fuzz_check.hpp: what a fuzz target does when a property it checks does not hold. Unlike
// assert() it stays on in release builds; abort() makes libFuzzer save the input.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition)                                                             \
  do {                                                                                    \
    if (!(condition)) {                                                                   \
      (void)std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n", __FILE__, __LINE__, \
                         #condition);                                                     \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)
