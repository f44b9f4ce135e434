#!/usr/bin/env bash
# Runs each test program given on the command line, each under a time limit,
# and ends with one tally line of cmocka test cases: "tests: N passed, M failed"
# (a program that crashed, timed out or ran no case counts as one failure).
# Exit status: 0 only when every program passed.
set -u
limit=${MOE_TEST_TIMEOUT:-600}
passed=0 failed=0 failed_programs=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
    name=$(basename "$t")
    echo "=== $name"
    timeout --kill-after=10 "$limit" "$t" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    ok=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log" | tail -1)
    bad=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s).*/\1/p' "$log" | tail -1)
    passed=$((passed + ${ok:-0}))
    failed=$((failed + ${bad:-0}))
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "$name: timed out after ${limit}s"
        [ -z "$bad" ] && failed=$((failed + 1))  # crashed before its summary
        failed_programs+=("$name")
    elif [ -z "$ok" ]; then
        echo "$name: ran no test case"
        failed=$((failed + 1))
        failed_programs+=("$name")
    fi
done
[ ${#failed_programs[@]} -gt 0 ] && echo "failed programs: ${failed_programs[*]}"
echo "tests: $passed passed, $failed failed"
[ ${#failed_programs[@]} -eq 0 ]
