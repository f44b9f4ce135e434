#!/usr/bin/env bash
# Runs each test program given on the command line, each under a time limit, and
# prints one closing tally line. Exit status: 0 only when every program passed.
set -u
limit=${MOE_TEST_TIMEOUT:-600}
passed=0 failed=0 failed_names=()
for t in "$@"; do
    echo "=== $(basename "$t")"
    if timeout --kill-after=10 "$limit" "$t"; then
        passed=$((passed + 1))
    else
        rc=$?
        [ "$rc" -eq 124 ] && echo "$(basename "$t"): timed out after ${limit}s"
        failed=$((failed + 1))
        failed_names+=("$(basename "$t")")
    fi
done
[ "$failed" -gt 0 ] && echo "failed programs: ${failed_names[*]}"
echo "test programs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
