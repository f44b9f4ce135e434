#!/usr/bin/env bash
# make bench-families: decode and prefill tokens/s of the medium preset of every
# model family, single process and a 2-node local cluster, measured in the same
# run by bench-cluster (repetitions interleaved; medians). The models are made
# once in build/models/<arch>-medium (2.4-2.8 GB each in float32).
#   bench/families.sh BIN_DIR [ARCH ...]
set -euo pipefail
bin=${1:?usage: bench/families.sh BIN_DIR [ARCH ...]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(mixtral qwen2_moe qwen3_moe olmoe hunyuan_v1_moe
                                 deepseek_v2 deepseek_v3 gpt_oss)
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
run_dir=$root/build/run/bench-families
trap 'MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir" >/dev/null 2>&1 || true' EXIT
summary=()
for arch in "${archs[@]}"; do
    model=$root/build/models/$arch-medium
    if [ ! -f "$model/config.json" ]; then
        echo "bench: making the $arch medium preset in $model"
        "$bin/moe-mkmodel" --arch "$arch" --preset medium --seed 1 --out "$model" >/dev/null
    fi
    echo "== $arch (load average $(cut -d' ' -f1 /proc/loadavg))"
    endpoint=$(MOE_BIN="$bin" "$root/cluster/local.sh" up --model "$model" --nodes 2 \
        --run-dir "$run_dir" --threads 2 --node-threads 2 | tail -n 1)
    out=$("$bin/bench-cluster" --model "$model" --endpoint "$endpoint" --threads 2 \
        --prompt-len 128 --decode 32 --repeat 3)
    echo "$out"
    MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir" >/dev/null
    sp=$(echo "$out" | sed -n 's/^single process.*prefill \([0-9.]*\) tokens\/s, decode \([0-9.]*\).*/\1 \2/p')
    cl=$(echo "$out" | sed -n 's/^cluster: *prefill \([0-9.]*\) tokens\/s, decode \([0-9.]*\).*/\1 \2/p')
    summary+=("$(printf '| %s | %s | %s | %s | %s |' "$arch" ${sp:-? ?} ${cl:-? ?})")
done
echo
echo "| family | single prefill tok/s | single decode tok/s | cluster prefill tok/s | cluster decode tok/s |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${summary[@]}"
