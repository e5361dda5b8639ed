#!/usr/bin/env bash
# out_of_tree_example.sh MAIN_BUILD_DIR EXAMPLE_SOURCE_DIR [CMAKE_GENERATOR] [CXX_COMPILER]
#
# Plays a third-party plugin author: installs the SDK from kodo's build, builds
# sdk/examples/storage-jsonl against that install alone, and has the conformance kit installed
# with the SDK (kodo::conformance, run by the example's own ctest) load the result. It builds
# the plugin twice, the second time with the old libstdc++ string ABI
# (-D_GLIBCXX_USE_CXX11_ABI=0), because a plugin built with other flags must still work with
# the same host. Run by CTest as sdk.out_of_tree_example.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 MAIN_BUILD_DIR EXAMPLE_SOURCE_DIR [CMAKE_GENERATOR] [CXX_COMPILER]" >&2
  exit 2
fi
main_build=$(cd "$1" && pwd)
example=$(cd "$2" && pwd)
generator=${3:-}
cxx=${4:-}
host=$main_build/bin/kodo-host

work=$(mktemp -d "${TMPDIR:-/tmp}/kodo-sdk-example.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

step() { printf '\n== %s\n' "$*"; }
fail() {
  printf '\nFAIL: %s\n' "$*" >&2
  exit 1
}
# shellcheck source=installed_kit.sh
source "$(dirname "${BASH_SOURCE[0]}")/installed_kit.sh"

step "installing $main_build into $prefix"
cmake --install "$main_build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "cmake --install $main_build failed (is the main build built?)"; }
[[ -f $prefix/include/kodo/kodo_plugin.h && -f $prefix/include/kodo/plugin.hpp ]] ||
  fail "the install has no include/kodo/kodo_plugin.h and plugin.hpp"
conformance=$(installed_kit "$prefix" "$main_build")

# build_example DIR EXTRA_CXX_FLAGS: configures and builds the example against $prefix only.
build_example() {
  local dir=$1 flags=$2
  local -a args=(-S "$example" -B "$dir" -DCMAKE_PREFIX_PATH="$prefix"
                 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="-Werror $flags"
                 -DCMAKE_INSTALL_PREFIX="$work/unused-prefix")
  [[ -n $generator ]] && args+=(-G "$generator")
  [[ -n $cxx ]] && args+=(-DCMAKE_CXX_COMPILER="$cxx")
  cmake "${args[@]}" || fail "configuring the example in $dir against the installed SDK failed"
  local found
  found=$(sed -n 's/^kodo_sdk_DIR:PATH=//p' "$dir/CMakeCache.txt")
  [[ $found == "$prefix"/* ]] ||
    fail "find_package(kodo_sdk) used $found, not the SDK installed in $prefix"
  cmake --build "$dir" || fail "building the example in $dir failed (flags: -Werror $flags)"
  [[ -f $dir/kodo-storage-jsonl.so ]] || fail "the build made no $dir/kodo-storage-jsonl.so"
}

# check_exports SO: the one symbol a plugin exports is its entry point.
check_exports() {
  local exported
  exported=$(nm -D --defined-only "$1" | awk '{print $NF}')
  [[ $exported == kodo_plugin_entry ]] ||
    fail "$1 must export only kodo_plugin_entry; it exports: $(tr '\n' ' ' <<<"$exported" | head -c 400)"
}

new_abi=$work/build-cxx11-abi
old_abi=$work/build-old-abi

step "building the example (default flags)"
build_example "$new_abi" ""
check_exports "$new_abi/kodo-storage-jsonl.so"

step "building the example again with -D_GLIBCXX_USE_CXX11_ABI=0"
build_example "$old_abi" "-D_GLIBCXX_USE_CXX11_ABI=0"
check_exports "$old_abi/kodo-storage-jsonl.so"
# The flag only proves something if it took: the old ABI has no std::__cxx11 symbols.
if nm -D --undefined-only "$old_abi/kodo-storage-jsonl.so" | grep -q __cxx11; then
  fail "$old_abi/kodo-storage-jsonl.so still uses std::__cxx11 symbols: the flag did not apply"
fi

# The example's own test runs kodo::conformance, the kit installed with the SDK.
for dir in "$new_abi" "$old_abi"; do
  step "ctest --test-dir $dir (the installed kodo-conformance on the example)"
  run_example_ctest "$dir" "$dir/kodo-storage-jsonl.so" "$conformance"
done

[[ -x $host ]] || fail "$host does not exist: build kodo-host first"
step "kodo-host plugins describe jsonl --plugin-dir $new_abi"
status=0
described=$("$host" plugins describe jsonl --plugin-dir "$new_abi" 2>&1) || status=$?
printf '%s\n' "$described"
[[ $status -eq 0 ]] || fail "kodo-host plugins describe jsonl failed (exit $status)"
grep -q jsonl <<<"$described" || fail "kodo-host plugins describe jsonl did not name the plugin"

# serve_with SO NAME: the user's story. Drop the .so into a plugin directory, name it in a
# config file, run the unchanged kodo-host, launch a flow over HTTP, and read it back.
flow=$example/../flows/hello.sh
serve_with() {
  local so=$1 name=$2
  local dir=$work/serve-$name
  mkdir -p "$dir/plugins"
  cp "$so" "$dir/plugins/"
  ln -s "$main_build/plugins/kodo-transport-inproc.so" "$dir/plugins/"
  cat >"$dir/kodo.ini" <<INI
plugin-dir = $dir/plugins
storage = jsonl
address = 127.0.0.1:0
[storage]
dir = $dir/data
[flow.hello]
command = $flow
env = HELLO_STEP_SECONDS=0.01
INI
  step "kodo-host --config $dir/kodo.ini serve ($name)"
  "$host" --config "$dir/kodo.ini" serve >"$dir/host.log" 2>&1 &
  local pid=$! port=""
  for _ in $(seq 1 500); do
    port=$(sed -n 's/.*serving on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/host.log")
    [[ -n $port ]] && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/host.log" >&2; fail "kodo-host exited at start ($name)"; }
    sleep 0.02
  done
  [[ -n $port ]] || { kill "$pid"; cat "$dir/host.log" >&2; fail "kodo-host did not start ($name)"; }
  local base=http://127.0.0.1:$port fid status=""
  fid=$(curl -sf -X POST "$base/api/v1/executions" -d '{"flow":"hello","inputs":{"steps":2}}' |
        sed -n 's/.*"fid":"\([0-9a-f]*\)".*/\1/p')
  [[ -n $fid ]] || { kill "$pid"; cat "$dir/host.log" >&2; fail "launch failed ($name)"; }
  for _ in $(seq 1 500); do
    status=$(curl -sf "$base/outputs/status/$fid" | sed -n 's/^{"status":"\([a-z]*\)".*/\1/p')
    [[ $status == finished || $status == error ]] && break
    sleep 0.02
  done
  local events
  events=$(curl -sf "$base/api/v1/executions/$fid/events" | grep -o '"seq":' | wc -l)
  kill -TERM "$pid"
  wait "$pid" || { cat "$dir/host.log" >&2; fail "kodo-host did not stop cleanly ($name)"; }
  [[ $status == finished ]] || { cat "$dir/host.log" >&2; fail "the run ended '$status' ($name)"; }
  [[ $events -eq 11 ]] || fail "read back $events events through kodo-host, expected 11 ($name)"
  [[ $(wc -l <"$dir/data/admin/$fid.jsonl") -eq 11 ]] ||
    fail "$dir/data/admin/$fid.jsonl does not hold the 11 events ($name)"
  echo "stored and served 11 events of $fid through the out-of-tree plugin ($name)"
}
serve_with "$new_abi/kodo-storage-jsonl.so" default-abi
serve_with "$old_abi/kodo-storage-jsonl.so" old-abi

# `cmake --install` of the example must put the plugin into the installed SDK's plugin dir,
# under the prefix the SDK was installed to (staged with DESTDIR so nothing leaves $work).
step "installing the example into the SDK's plugin directory"
DESTDIR=$work/stage cmake --install "$new_abi" || fail "cmake --install of the example failed"
installed=$(find "$work/stage" -name kodo-storage-jsonl.so -print -quit)
[[ -n $installed ]] || fail "cmake --install of the example installed no kodo-storage-jsonl.so"
case $installed in
  "$work/stage$prefix"/*/kodo/plugins/kodo-storage-jsonl.so) ;;
  *) fail "the example installed to ${installed#"$work/stage"}, not under $prefix: the SDK's" \
          "KODO_SDK_PLUGIN_DIR ignores the prefix the SDK was installed to" ;;
esac

step "OK: the out-of-tree example builds against the installed SDK and passes conformance"
