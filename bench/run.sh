#!/usr/bin/env bash
# make bench: the benchmarks, on the medium preset (made once in build/models/).
# Figures are ratios measured in the same run; see docs/PERFORMANCE.md.
set -euo pipefail
bin=${1:?usage: bench/run.sh BIN_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
model=$root/build/models/mixtral-medium
if [ ! -f "$model/config.json" ]; then
    echo "bench: making the medium preset in $model"
    "$bin/moe-mkmodel" --arch mixtral --preset medium --seed 1 --out "$model"
fi
echo "bench: load average before timing: $(cut -d' ' -f1 /proc/loadavg)" \
     "(figures are noisy when it is above ~0.3)"

echo "== single process (bench-core)"
"$bin/bench-core" --model "$model" --threads 1,2 --prompt-len 128 --decode 64 --repeat 5

echo "== expert products of a batched step: old path against gemm_small (bench-gemm)"
OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4} "$bin/bench-gemm" --threads 1,2 --repeat 11

echo "== cluster: coordinator + 2 expert nodes on this machine against the single process"
# Both sides run with the launcher's OpenBLAS setting (idle threads sleep at once).
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
run_dir=$root/build/run/bench
trap 'MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir"' EXIT
endpoint=$(MOE_BIN="$bin" "$root/cluster/local.sh" up --model "$model" --nodes 2 \
    --run-dir "$run_dir" --threads 2 --node-threads 2 | tail -n 1)
"$bin/bench-cluster" --model "$model" --endpoint "$endpoint" --threads 2 \
    --prompt-len 128 --decode 64 --repeat 5

echo "== serving: aggregate decode with 1, 4, 16 and 64 concurrent sequences (same cluster)"
MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir"
endpoint=$(MOE_BIN="$bin" "$root/cluster/local.sh" up --model "$model" --nodes 2 \
    --run-dir "$run_dir" --threads 2 --node-threads 2 --max-seqs 64 --queue-limit 256 |
    tail -n 1)
"$bin/bench-serving" --endpoint "$endpoint" --concurrency 1,4,16,64 --prompt-len 16 --tokens 64

echo "== weight formats against llama.cpp on the same weights (issue 12; bench/formats.sh)"
# Its llama.cpp columns need `make bench-peers` once (network); without it they
# say what is missing and the rest still runs.
MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir"
"$root/bench/formats.sh" "$bin"
