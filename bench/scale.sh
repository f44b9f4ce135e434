#!/usr/bin/env bash
# Issue 15: does serving get faster with more expert nodes and more
# coordinators? Each process is pinned to cores of its own (taskset), so a
# node's compute does not steal a coordinator's, and every configuration is
# compared, in the same run, with
#   - one node (the same coordinators): how throughput grows with nodes;
#   - one moe-run process on the same total cores (bench-cluster runs it,
#     interleaved with the cluster, pinned to exactly the cluster's cores).
#
#   bench/scale.sh BIN_DIR [MODEL_DIR]
#
# MODEL_DIR defaults to build/models/mixtral-medium (made if missing). The
# environment picks the layout:
#   SCALE_LAYOUTS   "C:N ..." coordinators:nodes (default "1:1 1:2 1:4 2:4")
#   COORD_CORES     cores per coordinator (default 2)
#   NODE_CORES      cores per expert node (default 3)
#   SCALE_TOKENS    tokens per generation for the aggregate runs (default 64)
#   SCALE_REPEAT    bench-cluster repetitions (default 3)
#   SCALE_EXTRA     extra options for every moe-coordinator (e.g. "--wire bf16")
# A layout that needs more cores than the host has is skipped (said so). On a
# host with fewer cores than a layout needs, SCALE_NO_PIN=1 runs it unpinned
# (every process on every core: the figures then measure contention too).
# Cores left over after the largest layout run the benchmark clients; without
# any, the clients share the coordinators' cores.
set -euo pipefail
bin=$(cd "${1:?usage: bench/scale.sh BIN_DIR [MODEL_DIR]}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
model=${2:-$root/build/models/mixtral-medium}
layouts=${SCALE_LAYOUTS:-1:1 1:2 1:4 2:4}
coord_cores=${COORD_CORES:-2}
node_cores=${NODE_CORES:-3}
tokens=${SCALE_TOKENS:-64}
repeat=${SCALE_REPEAT:-3}
extra=${SCALE_EXTRA:-}
no_pin=${SCALE_NO_PIN:-0}
cores=$(nproc)
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}

die() { echo "scale.sh: $*" >&2; exit 1; }
command -v taskset >/dev/null || [ "$no_pin" = 1 ] || die "taskset (util-linux) is needed"
# shellcheck source=bench/procs.sh
. "$root/bench/procs.sh"
ensure_medium_model "$bin" "$model"

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/moe-scale.XXXXXX")
pids=()
trap 'stop_all; rm -rf "$run_dir"' EXIT

# "a-b" for n cores from first, or "" (no pinning) when SCALE_NO_PIN=1.
span() { [ "$no_pin" = 1 ] && return; echo "$1-$(($1 + $2 - 1))"; }
pinned() { # pinned CPUS CMD...: run CMD on those cores
    local cpus=$1; shift
    if [ -n "$cpus" ]; then taskset -c "$cpus" "$@"; else "$@"; fi
}
# Starts CMD in the background on those cores; $! is CMD itself (exec), so
# that stop_all's signals reach it and not a subshell.
start_pinned() { # start_pinned CPUS CMD...
    local cpus=$1; shift
    if [ -n "$cpus" ]; then exec taskset -c "$cpus" "$@"; else exec "$@"; fi
}

max_need=0
for l in $layouts; do
    need=$(( ${l%%:*} * coord_cores + ${l##*:} * node_cores ))
    [ "$need" -gt "$max_need" ] && [ "$need" -le "$cores" ] && max_need=$need
done
client_cpus=""
if [ "$no_pin" != 1 ]; then
    if [ "$max_need" -lt "$cores" ]; then client_cpus="$max_need-$((cores - 1))"
    else client_cpus="0-$((coord_cores - 1))"; fi
fi

echo "scale.sh: $model on $(uname -n), $cores cores ($(lscpu 2>/dev/null |
    sed -n 's/^Model name: *//p' | head -n 1)); coordinator $coord_cores cores, node" \
     "$node_cores cores; load average $(cut -d' ' -f1 /proc/loadavg);" \
     "clients on ${client_cpus:-every core}; extra: ${extra:-none}"

# One bench-serving run at concurrency n against endpoint ep: tokens/s.
serving_rate() {
    pinned "$client_cpus" "$bin/bench-serving" --endpoint "$1" --concurrency "$2" \
        --tokens "$tokens" | sed -n "s/^ *$2 sequences: *\([0-9.]*\) tokens\/s.*/\1/p"
}
# Aggregate tokens/s of n sequences spread evenly over the coordinators.
aggregate() { # aggregate N EP...
    local n=$1; shift
    local per=$(( n / $# )) i=0 f
    for ep in "$@"; do
        serving_rate "$ep" "$per" >"$run_dir/rate.$i" &
        i=$((i + 1))
    done
    wait
    for f in "$run_dir"/rate.*; do cat "$f"; done |
        awk '{s += $1} END {printf "%.1f", s}'
    rm -f "$run_dir"/rate.*
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a > 0 && b > 0) printf "%.2f", a / b; else print "-"}'; }
rows=()
declare -A r64_of # "C:N" -> 64-sequence tokens/s
declare -A one_node # C -> "r16 r64" of the 1-node layout with C coordinators
for l in $layouts; do
    c=${l%%:*} n=${l##*:}
    need=$((c * coord_cores + n * node_cores))
    if [ "$need" -gt "$cores" ] && [ "$no_pin" != 1 ]; then
        echo "scale.sh: skipping $c coordinator(s) x $n node(s): needs $need cores, host has $cores"
        continue
    fi
    # Nodes after the coordinators' cores. No endpoint file of the last
    # layout may pass for this one's.
    rm -f "$run_dir"/*.ep
    eps=()
    for i in $(seq 1 "$n"); do
        cpus=$(span $((c * coord_cores + (i - 1) * node_cores)) "$node_cores")
        start_pinned "$cpus" "$bin/moe-expert" --model "$model" --node-id "$i" --nodes "$n" \
            --threads "$node_cores" --preload --endpoint-file "$run_dir/node$i.ep" \
            >/dev/null 2>"$run_dir/node$i.log" &
        pids+=($!)
        wait_file "$run_dir/node$i.ep" "$!" "node $i"
        eps+=(--node "$(cat "$run_dir/node$i.ep")")
    done
    ceps=()
    for j in $(seq 1 "$c"); do
        cpus=$(span $(((j - 1) * coord_cores)) "$coord_cores")
        # shellcheck disable=SC2086 # SCALE_EXTRA is a list of options
        start_pinned "$cpus" "$bin/moe-coordinator" --model "$model" "${eps[@]}" \
            --threads "$coord_cores" --preload --max-seqs 64 --queue-limit 256 \
            --kv-memory 4096 --endpoint-file "$run_dir/coord$j.ep" $extra \
            >/dev/null 2>"$run_dir/coord$j.log" &
        pids+=($!)
        wait_file "$run_dir/coord$j.ep" "$!" "coordinator $j"
        ceps+=("$(cat "$run_dir/coord$j.ep")")
    done
    # Single sequence and prefill through coordinator 1, against one process
    # on the same total cores.
    bc=$(pinned "$(span 0 "$need")" "$bin/bench-cluster" --model "$model" \
        --endpoint "${ceps[0]}" --threads "$need" --repeat "$repeat")
    echo "$bc" | sed "s/^/  [$c:$n] /"
    sp_dec=$(echo "$bc" | sed -n 's/^single process.*decode \([0-9.]*\).*/\1/p')
    sp_pre=$(echo "$bc" | sed -n 's/^single process.*prefill \([0-9.]*\).*/\1/p')
    cl_dec=$(echo "$bc" | sed -n 's/^cluster: .*decode \([0-9.]*\).*/\1/p')
    cl_pre=$(echo "$bc" | sed -n 's/^cluster: .*prefill \([0-9.]*\).*/\1/p')
    r16=$(aggregate 16 "${ceps[@]}")
    r64=$(aggregate 64 "${ceps[@]}")
    echo "  [$c:$n] 16 sequences $r16 tokens/s, 64 sequences $r64 tokens/s"
    stop_all
    [ "$n" = 1 ] && one_node[$c]="$r16 $r64"
    r64_of[$l]=$r64
    base=${one_node[$c]:-${one_node[1]:-}}
    b16=${base%% *} b64=${base##* }
    rows+=("$(printf '| %d x %d | %d | %s (%s) | %s (%s, %s) | %s (%s, %s) | %s (%s) | %s / %s |' \
        "$c" "$n" "$need" "$cl_dec" "$(ratio "$cl_dec" "$sp_dec")" \
        "$r16" "$(ratio "$r16" "${b16:-0}")" "$(ratio "$r16" "$sp_dec")" \
        "$r64" "$(ratio "$r64" "${b64:-0}")" "$(ratio "$r64" "$sp_dec")" \
        "$cl_pre" "$(ratio "$cl_pre" "$sp_pre")" "$sp_dec" "$sp_pre")")
done

echo
echo "Tokens/s; in brackets: 1 sequence and prefill as a ratio to one moe-run process on the"
echo "same cores; 16 and 64 sequences as ratios to the 1-node layout (same coordinators) and"
echo "to that moe-run's one-sequence decode."
echo
echo "| coordinators x nodes | cores | 1 sequence decode | 16 sequences | 64 sequences |" \
     "prefill, 128-token prompt | moe-run decode / prefill |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
for n in $(printf '%s\n' $layouts | sed -n 's/^2:\(.*\)/\1/p'); do
    echo
    echo "64 sequences, 2 coordinators / 1 coordinator over $n node(s):" \
         "$(ratio "${r64_of[2:$n]:-0}" "${r64_of[1:$n]:-0}") (goal >= 1.6)"
done
