#!/usr/bin/env bash
# Issue 16: aggregate decode tokens/s of a skewed placement before and after a
# rebalance, with R = 0 and R = 2 redundant copies (docs/PERFORMANCE.md).
# The placement puts 3/4 of the experts of every layer on node 1 of 3, so node 1
# paces every layer; bench-serving runs CONCURRENCY generations (which also
# gives the coordinator its load measurement), then `moe-client rebalance
# --redundant R` moves experts, then bench-serving runs again.
#   bench/rebalance.sh BIN_DIR [MODEL_DIR] [TOKENS] [CONCURRENCY]
# MODEL_DIR defaults to build/models/default (mixtral small, made if missing);
# TOKENS per generation 64, CONCURRENCY 16.
# On a host with cores to spare, PIN_CORES=K gives the coordinator and each of
# the 3 nodes K cores of its own (taskset; 4K cores needed), so that the node
# holding the hot experts is the bottleneck it would be on its own machine.
set -euo pipefail
bin=${1:?usage: bench/rebalance.sh BIN_DIR [MODEL_DIR] [TOKENS] [CONCURRENCY]}
root=$(cd "$(dirname "$0")/.." && pwd)
model=${2:-$root/build/models/default}
tokens=${3:-64}
concurrency=${4:-16}
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
if [ ! -f "$model/config.json" ]; then
    echo "bench: making the default model in $model"
    "$bin/moe-mkmodel" --arch mixtral --preset small --seed 1 --out "$model" >/dev/null
fi
experts=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1])); \
print(c.get('num_local_experts') or c.get('num_experts') or c.get('n_routed_experts'))" \
    "$model/config.json")
pin=${PIN_CORES:-}
size_opts=()
if [ -n "$pin" ]; then
    [ $((4 * pin)) -le "$(nproc)" ] || { echo "rebalance.sh: PIN_CORES=$pin needs $((4 * pin)) cores" >&2; exit 1; }
    size_opts=(--threads "$pin" --node-threads "$pin")
fi
# Every thread of the coordinator on cores 0..K-1, node i's on the i-th K after.
pin_cluster() {
    [ -n "$pin" ] || return 0
    local i=0 f
    for f in "$run_dir/coordinator.pid" "$run_dir"/expert-{1,2,3}.pid; do
        taskset -a -cp "$((i * pin))-$((i * pin + pin - 1))" "$(cat "$f")" >/dev/null
        i=$((i + 1))
    done
}
run_dir=$root/build/run/bench-rebalance
trap 'MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir" >/dev/null 2>&1 || true' EXIT
mkdir -p "$run_dir"
# Node 1: experts 0 .. 3E/4-1; nodes 2 and 3 share the last quarter.
hot=$((experts * 3 / 4))
rest=$(((experts - hot) / 2))
{
    echo "nodes 3"
    echo "node 1 layers * experts 0-$((hot - 1))"
    echo "node 2 layers * experts $hot-$((hot + rest - 1))"
    echo "node 3 layers * experts $((hot + rest))-$((experts - 1))"
} >"$run_dir/skewed.txt"

# The aggregate rate of bench-serving's one concurrency.
rate() {
    "$bin/bench-serving" --endpoint "$1" --concurrency "$concurrency" --tokens "$tokens" |
        sed -n "s/^ *$concurrency sequences: *\([0-9.]*\) tokens\/s.*/\1/p"
}

echo "bench: $model, $experts experts, 3 nodes, skewed placement (node 1 holds $hot of" \
     "$experts), $concurrency generations of $tokens tokens; load average" \
     "$(cut -d' ' -f1 /proc/loadavg); ${pin:+$pin cores per process, pinned}"
rows=()
for r in 0 2; do
    endpoint=$(MOE_BIN="$bin" "$root/cluster/local.sh" up --model "$model" --nodes 3 \
        --placement "$run_dir/skewed.txt" --run-dir "$run_dir" "${size_opts[@]}" | tail -n 1)
    pin_cluster
    before=$(rate "$endpoint")
    imb_before=$("$bin/moe-client" --connect "$endpoint" placement --json |
        python3 -c "import json,sys; print('%.2f' % json.load(sys.stdin)['imbalance'])")
    "$bin/moe-client" --connect "$endpoint" rebalance --redundant "$r" >&2
    after=$(rate "$endpoint")
    imb_after=$("$bin/moe-client" --connect "$endpoint" placement --json |
        python3 -c "import json,sys; print('%.2f' % json.load(sys.stdin)['imbalance'])")
    MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir" >/dev/null
    rows+=("$(printf '| %d | %s | %s | %s | %s |' "$r" "$imb_before" "${before:-?}" \
        "$imb_after" "${after:-?}")")
done
echo
echo "| R | imbalance before | tokens/s before | imbalance after | tokens/s after |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
