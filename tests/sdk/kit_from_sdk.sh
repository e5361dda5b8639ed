#!/usr/bin/env bash
# kit_from_sdk.sh MAIN_BUILD_DIR KIT_SOURCE_DIR [CMAKE_GENERATOR] [CXX_COMPILER] [SANITIZE]
#
# The conformance kit depends on nothing that only exists in the host's source tree: installs
# the SDK from kodo's build, builds the kit's sources (sdk/conformance) against that install
# alone, checks that its link line names only SDK libraries (kodo::loader, never kodo_core or
# anything of the main build), and runs the result on a plugin installed with the SDK.
# Run by CTest as sdk.kit_from_installed_sdk.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 MAIN_BUILD_DIR KIT_SOURCE_DIR [CMAKE_GENERATOR] [CXX_COMPILER] [SANITIZE]" >&2
  exit 2
fi
main_build=$(cd "$1" && pwd)
kit_source=$(cd "$2" && pwd)
generator=${3:-}
cxx=${4:-}
# The gates' builds install an instrumented kodo::loader: the kit must be built the same way.
sanitize=${5:-}

work=$(mktemp -d "${TMPDIR:-/tmp}/kodo-kit-from-sdk.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
build=$work/build

step() { printf '\n== %s\n' "$*"; }
fail() {
  printf '\nFAIL: %s\n' "$*" >&2
  exit 1
}

step "installing $main_build into $prefix"
cmake --install "$main_build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "cmake --install $main_build failed (is the main build built?)"; }
for header in plugin_loader plugin_options records error log; do
  [[ -f $prefix/include/kodo/host/$header.hpp ]] ||
    fail "the install has no include/kodo/host/$header.hpp"
done

step "building the kit from $kit_source against the installed SDK only"
cxx_flags=-Werror
[[ -n $sanitize ]] && cxx_flags+=" -fsanitize=$sanitize"
args=(-S "$kit_source" -B "$build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=RelWithDebInfo
      "-DCMAKE_CXX_FLAGS=$cxx_flags")
[[ -n $sanitize ]] && args+=("-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=$sanitize")
[[ -n $generator ]] && args+=(-G "$generator")
[[ -n $cxx ]] && args+=(-DCMAKE_CXX_COMPILER="$cxx")
cmake "${args[@]}" || fail "configuring the kit against the installed SDK failed"
found=$(sed -n 's/^kodo_sdk_DIR:PATH=//p' "$build/CMakeCache.txt")
[[ $found == "$prefix"/* ]] || fail "find_package(kodo_sdk) used $found, not the SDK in $prefix"
cmake --build "$build" --verbose >"$build/build.log" 2>&1 ||
  { cat "$build/build.log" >&2; fail "building the kit against the installed SDK failed"; }
kit=$build/kodo-conformance
[[ -x $kit ]] || fail "the build made no $kit"

# The link line is where a dependency on the host's tree would show.
link=$(grep -E -- "-o kodo-conformance( |$)" "$build/build.log" || true)
[[ -n $link ]] || fail "no link command for kodo-conformance in $build/build.log"
printf 'link: %s\n' "$link"
[[ $link == *"$prefix/lib"*"libkodo_loader.a"* ]] || fail "the kit does not link the installed kodo::loader"
if grep -q -E "kodo_core|$main_build" <<<"$link"; then
  fail "the kit's link line names kodo_core or the main build"
fi
if grep -F -e "$main_build" -e "/core/" "$build/build.log" | grep -v -F "$prefix" >&2; then
  fail "the kit's build reads from the host's tree (lines above)"
fi

plugin=$(find "$prefix" -name kodo-storage-sqlite.so -print -quit)
[[ -n $plugin ]] || fail "the install has no kodo-storage-sqlite.so to run the kit on"
step "$kit --plugin $plugin"
"$kit" --plugin "$plugin" || fail "the kit built from the installed SDK failed on $plugin"

step "OK: the conformance kit builds from the installed SDK alone and passes sqlite"
