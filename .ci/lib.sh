# Shared by the gate scripts (.ci/gates, .ci/asan, .ci/tsan, .ci/fuzz, .ci/tidy,
# .ci/format-check): sourced, not run.

# The Debian 12 packages the gates need on top of what .ci/setup installs: clang 14 with its
# sanitizer and libFuzzer runtimes, clang-tidy, clang-format, and llvm-symbolizer for
# readable sanitizer reports.
KODO_GATE_PACKAGES=(clang clang-tidy clang-format libclang-rt-14-dev llvm)

ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "kodo gates: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# Sanitizer settings for every gate: fail on the first report, with symbolized stacks.
export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
export ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:strict_init_order=1:check_initialization_order=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:external_symbolizer_path=$ASAN_SYMBOLIZER_PATH
