#!/usr/bin/env bash
# out_of_tree_c_example.sh MAIN_BUILD_DIR EXAMPLE_SOURCE_DIR [CMAKE_GENERATOR] [C_COMPILER]
#
# Plays a C plugin author: installs the SDK from kodo's build, builds
# sdk/examples/storage-memory-c (C11) against that install alone with warnings as errors,
# checks that it exports only its entry point, and runs the conformance kit installed with
# the SDK on it, through the example's own ctest (kodo::conformance).
# Run by CTest as sdk.out_of_tree_c_example.
set -euo pipefail
main_build=$(cd "$1" && pwd)
example=$(cd "$2" && pwd)
generator=${3:-}
cc=${4:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/kodo-sdk-c-example.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() {
  printf '\nFAIL: %s\n' "$*" >&2
  exit 1
}
# shellcheck source=installed_kit.sh
source "$(dirname "${BASH_SOURCE[0]}")/installed_kit.sh"

cmake --install "$main_build" --prefix "$work/prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "cmake --install $main_build failed"; }
args=(-S "$example" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix"
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS=-Werror)
[[ -n $generator ]] && args+=(-G "$generator")
[[ -n $cc ]] && args+=(-DCMAKE_C_COMPILER="$cc")
cmake "${args[@]}" || fail "configuring the C example against the installed SDK failed"
cmake --build "$work/build" || fail "building the C example failed (-Werror)"
plugin=$work/build/kodo-storage-memory-c.so
[[ -f $plugin ]] || fail "the build made no $plugin"
exported=$(nm -D --defined-only "$plugin" | awk '{print $NF}')
[[ $exported == kodo_plugin_entry ]] || fail "$plugin exports more than kodo_plugin_entry: $exported"
conformance=$(installed_kit "$work/prefix" "$main_build")
run_example_ctest "$work/build" "$plugin" "$conformance"
echo "OK: the C11 example builds against the installed SDK and passes the kit"
