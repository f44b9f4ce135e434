#!/usr/bin/env bash
# Issue 15: what the link's bandwidth costs a cluster, and what the wire
# format and the overlap buy back. The coordinator runs on test host 1 and
# N expert nodes on hosts 2..N+1 (network namespaces, cluster/netns.sh),
# every cable limited in turn to each rate (tc tbf); bench-cluster (one
# sequence: prefill of a 128-token prompt, decode) and bench-serving (16
# sequences) run on host 1 against the coordinator.
#
#   bench/links.sh BIN_DIR [MODEL_DIR]
#
# MODEL_DIR defaults to build/models/mixtral-medium (made if missing).
#   LINK_RATES     rates to try (default "off 10gbit 1gbit"; off: unlimited)
#   LINK_VARIANTS  "label=coordinator options" entries separated by ';'
#                  (default "f32=--micro-batches 1": the processes share
#                  this machine's cores, as with cluster/local.sh; e.g.
#                  "f32=--micro-batches 1;bf16=--wire bf16 --micro-batches 1")
#   LINK_NODES     expert nodes (default 2)
# Needs root (network namespaces). Each process uses every core: on a small
# host the figures include the processes' contention for cores.
set -euo pipefail
bin=$(cd "${1:?usage: bench/links.sh BIN_DIR [MODEL_DIR]}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
model=${2:-$root/build/models/mixtral-medium}
rates=${LINK_RATES:-off 10gbit 1gbit}
variants=${LINK_VARIANTS:-f32=--micro-batches 1}
nodes=${LINK_NODES:-2}
netns=$root/cluster/netns.sh
tag=lk$$
die() { echo "links.sh: $*" >&2; exit 1; }
# shellcheck source=bench/procs.sh
. "$root/bench/procs.sh"
ensure_medium_model "$bin" "$model"
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/moe-links.XXXXXX")
pids=()
trap 'stop_all; "$netns" destroy --tag "$tag"; rm -rf "$run_dir"' EXIT
"$netns" create --tag "$tag" --hosts $((nodes + 1)) >/dev/null || die "cannot make test hosts"
on() { local h=$1; shift; "$netns" exec --tag "$tag" --host "$h" -- "$@"; }
# In the background: exec, so that $! is the program itself (netns.sh and
# ip netns exec exec it too) and stop_all's signals reach it.
start_on() { local h=$1; shift; exec "$netns" exec --tag "$tag" --host "$h" -- "$@"; }
echo "links.sh: $model, coordinator on host 1, $nodes node(s) on hosts 2-$((nodes + 1))," \
     "$(nproc) cores; load average $(cut -d' ' -f1 /proc/loadavg)"

rows=()
IFS=';' read -r -a variant_list <<<"$variants"
for rate in $rates; do
    "$netns" shape --tag "$tag" --host all --rate "$rate"
    for v in "${variant_list[@]}"; do
        label=${v%%=*} opts=${v#*=}
        eps=()
        for i in $(seq 1 "$nodes"); do
            addr=$("$netns" addr --tag "$tag" --host $((i + 1)))
            start_on $((i + 1)) "$bin/moe-expert" --model "$model" --node-id "$i" --nodes "$nodes" \
                --preload --bind "tcp://$addr:*" --endpoint-file "$run_dir/node$i.ep" \
                >/dev/null 2>"$run_dir/node$i.log" &
            pids+=($!)
            wait_file "$run_dir/node$i.ep" "$!" "node $i"
            eps+=(--node "$(cat "$run_dir/node$i.ep")")
        done
        addr=$("$netns" addr --tag "$tag" --host 1)
        # shellcheck disable=SC2086 # opts is a list of options
        start_on 1 "$bin/moe-coordinator" --model "$model" "${eps[@]}" --preload \
            --bind "tcp://$addr:*" --endpoint-file "$run_dir/coord.ep" $opts \
            >/dev/null 2>"$run_dir/coord.log" &
        pids+=($!)
        wait_file "$run_dir/coord.ep" "$!" "coordinator"
        ep=$(cat "$run_dir/coord.ep")
        bc=$(on 1 "$bin/bench-cluster" --model "$model" --endpoint "$ep" --threads "$(nproc)" \
            --repeat 3 --decode 32)
        sv=$(on 1 "$bin/bench-serving" --endpoint "$ep" --concurrency 16 --tokens 32)
        stop_all
        rm -f "$run_dir"/*.ep
        pre=$(echo "$bc" | sed -n 's/^cluster: .*prefill \([0-9.]*\).*/\1/p')
        dec=$(echo "$bc" | sed -n 's/^cluster: .*decode \([0-9.]*\).*/\1/p')
        ratios=$(echo "$bc" | sed -n 's/^ratios.*prefill \([0-9.]*\).*decode \([0-9.]*\).*/\1 \/ \2/p')
        bytes=$(echo "$bc" | sed -n 's/.*bytes per token per layer \([0-9.]*\) sent, \([0-9.]*\) received.*/\1 + \2/p')
        agg=$(echo "$sv" | sed -n 's/^ *16 sequences: *\([0-9.]*\) tokens\/s.*/\1/p')
        echo "  [$rate, $label] prefill $pre, decode $dec, 16 sequences $agg tokens/s;" \
             "bytes/token/layer $bytes"
        rows+=("| $rate | $label | $pre | $dec | ${agg:-?} | $ratios | $bytes |")
    done
done
"$netns" shape --tag "$tag" --host all --rate off
echo
echo "| link | variant | prefill tok/s | 1-sequence decode tok/s | 16 sequences tok/s |" \
     "prefill / decode vs one process | wire bytes/token/layer |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
