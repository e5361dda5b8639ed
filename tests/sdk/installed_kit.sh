# installed_kit.sh: sourced by the out-of-tree example scripts, which define fail().
# The conformance kit as an author meets it: installed with the SDK, exported by its CMake
# package as kodo::conformance, and run by the example's own ctest.

# installed_kit PREFIX MAIN_BUILD_DIR: prints the kit installed in PREFIX, after checking
# that it exists and loads nothing from the build it was installed from.
installed_kit() {
  local kit=$1/bin/kodo-conformance
  [[ -x $kit ]] || fail "the install has no bin/kodo-conformance (is the kit built?)"
  if ldd "$kit" | grep -F "$2" >&2; then
    fail "the installed $kit loads libraries from $2"
  fi
  printf '%s\n' "$kit"
}

# run_example_ctest BUILD_DIR PLUGIN KIT: runs the example's ctest, which must pass and must
# have run KIT (the installed kit, not build/bin's) on PLUGIN.
run_example_ctest() {
  local dir=$1 plugin=$2 kit=$3 status=0 ran
  ctest --test-dir "$dir" -V >"$dir/ctest.log" 2>&1 || status=$?
  cat "$dir/ctest.log"
  [[ $status -eq 0 ]] || fail "the installed kodo-conformance failed on $plugin"
  ran=$(grep -F "Test command: $kit " "$dir/ctest.log" || true)
  [[ $ran == *"$plugin"* ]] || fail "the example's test did not run the installed $kit on $plugin"
  grep -q '100% tests passed' "$dir/ctest.log" || fail "the example's ctest in $dir ran no test"
}
