#!/usr/bin/env bash
# Run every check CI runs and end with "N passed, N failed".
#
# Stages: format check; gcc build + unit tests + fuzz corpus replay; clang
# -Werror build; ASan+UBSan build running the unit tests and fuzz replay;
# integration tests (tests/integration/test_*.sh) against the real binary.
# Each meson test and each integration test counts as one test.
set -uo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
passed=0
failed=0
failures=()

pass() { passed=$((passed + 1)); echo "PASS: $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); echo "FAIL: $1"; }

step() { echo; echo "=== $* ==="; }

# Count a meson test run from its JSON log: one entry per test.
meson_tests() {
  local dir=$1 label=$2
  shift 2
  meson test -C "$dir" --num-processes "$JOBS" --print-errorlogs "$@" >"$dir/test-output.txt" 2>&1
  local log="$dir/meson-logs/testlog.json"
  if [ ! -s "$log" ]; then
    cat "$dir/test-output.txt"
    fail "$label: meson test produced no log"
    return
  fi
  while IFS=$'\t' read -r name result; do
    if [ "$result" = OK ] || [ "$result" = EXPECTEDFAIL ]; then pass "$label/$name"; else fail "$label/$name ($result)"; fi
  done < <(jq -r '[.name, .result] | @tsv' "$log")
  grep -E '^(Ok|Fail|Timeout):' "$dir/test-output.txt" || true
  if grep -qE '^(Fail|Timeout): +[1-9]' "$dir/test-output.txt"; then
    sed -n '/stdout:/,/^==========/p' "$dir/test-output.txt" | tail -80
  fi
}

step "format check"
files=$(git ls-files '*.c' '*.h')
if out=$(clang-format --dry-run --Werror $files 2>&1); then pass "format"; else echo "$out" | head -40; fail "format (run: make format)"; fi

step "gcc build"
if { [ -f build/build.ninja ] || meson setup build >/dev/null; } && ninja -C build -j "$JOBS" >build-gcc.log 2>&1; then
  pass "build/gcc"
  step "unit tests and fuzz corpus replay (gcc)"
  meson_tests build gcc
else
  tail -40 build-gcc.log; fail "build/gcc"
fi

step "clang build (-Werror)"
if { [ -f build-clang/build.ninja ] || CC=clang meson setup build-clang >/dev/null; } && ninja -C build-clang -j "$JOBS" >build-clang.log 2>&1; then
  pass "build/clang"
else
  tail -40 build-clang.log; fail "build/clang"
fi

step "ASan+UBSan build: unit tests and fuzz corpus replay"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if { [ -f build-asan/build.ninja ] || meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug >/dev/null; } && ninja -C build-asan -j "$JOBS" >build-asan.log 2>&1; then
  pass "build/asan"
  meson_tests build-asan asan
else
  tail -40 build-asan.log; fail "build/asan"
fi

step "integration tests"
if [ -x build/src/cli/cista ]; then
  for t in tests/integration/test_*.sh; do
    [ -e "$t" ] || continue
    name=$(basename "$t" .sh)
    if bash "$t" build/src/cli/cista >"build/$name.log" 2>&1; then
      grep -E '^(ok|not ok|#)' "build/$name.log" | tail -3
      pass "integration/$name"
    else
      tail -40 "build/$name.log"
      fail "integration/$name"
    fi
  done
else
  fail "integration (no cista binary)"
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "Failed:"
  printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
