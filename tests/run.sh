#!/usr/bin/env bash
# Runs each test program given on the command line, each under a time limit,
# and ends with one tally line of cmocka test cases:
#   "tests: N passed, M failed, K skipped"
# (a program that crashed, timed out or ran no case counts as one failure).
# A skipped case is a failure where every case must run: CI=true as root (as
# CI runs), or MOE_NO_SKIP=1 (tests/testutil.h, "skips").
# Exit status: 0 only when every program passed.
set -u
limit=${MOE_TEST_TIMEOUT:-600}
no_skip=0
if [ "${MOE_NO_SKIP:-}" = 1 ] || { [ "${CI:-}" = true ] && [ "$(id -u)" -eq 0 ]; }; then
    no_skip=1
fi
passed=0 failed=0 skipped=0 failed_programs=() timings=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
    name=$(basename "$t")
    echo "=== $name"
    started=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$t" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    timings+=("$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') $name")
    ok=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log" | tail -1)
    bad=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s).*/\1/p' "$log" | tail -1)
    skip=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test(s).*/\1/p' "$log" | tail -1)
    passed=$((passed + ${ok:-0}))
    failed=$((failed + ${bad:-0}))
    skipped=$((skipped + ${skip:-0}))
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "$name: timed out after ${limit}s"
        [ -z "$bad" ] && failed=$((failed + 1))  # crashed before its summary
        failed_programs+=("$name")
    elif [ -z "$ok" ] || [ $((${ok:-0} + ${skip:-0})) -eq 0 ]; then
        echo "$name: ran no test case"
        failed=$((failed + 1))
        failed_programs+=("$name")
    elif [ "${skip:-0}" -gt 0 ] && [ "$no_skip" -eq 1 ]; then
        echo "$name: ${skip} case(s) skipped where every case must run (CI as root)"
        failed=$((failed + skip))
        failed_programs+=("$name")
    elif [ "${skip:-0}" -gt 0 ]; then
        echo "$name: ${skip} case(s) skipped (listed above)"
    fi
done
[ ${#failed_programs[@]} -gt 0 ] && echo "failed programs: ${failed_programs[*]}"
# The slowest programs, to keep the suite's time in view (DEVELOPERS.md: CI's limit).
echo "slowest test programs (s): $(printf '%s\n' "${timings[@]}" | sort -rn | head -n 8 |
    awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1 }')"
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ ${#failed_programs[@]} -eq 0 ]
