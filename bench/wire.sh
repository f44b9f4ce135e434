#!/usr/bin/env bash
# make bench-wire: what --wire costs in accuracy and saves in bytes, on the
# medium preset (build/models/mixtral-medium, made once): for each format a
# 2-node local cluster gives the logits of a PROMPT_LEN-token prompt (128),
# compared with moe-run's float32 logits by bench-logit-diff (mean and largest
# KL, top-1 agreement), and its STATUS the bytes per token per MoE layer sent
# to the nodes and received.
#   bench/wire.sh BIN_DIR [ARCH]     (ARCH: a family's medium preset; mixtral)
set -euo pipefail
bin=${1:?usage: bench/wire.sh BIN_DIR [ARCH]}
arch=${2:-mixtral}
root=$(cd "$(dirname "$0")/.." && pwd)
model=$root/build/models/$arch-medium
prompt_len=${PROMPT_LEN:-128}
if [ ! -f "$model/config.json" ]; then
    echo "bench: making the $arch medium preset in $model"
    "$bin/moe-mkmodel" --arch "$arch" --preset medium --seed 1 --out "$model" >/dev/null
fi
vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$model/config.json")
work=$root/build/run/bench-wire
run_dir=$work/cluster
mkdir -p "$work"
trap 'MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir" >/dev/null 2>&1 || true' \
    EXIT
# A fixed prompt of ids spread over the vocabulary.
ids=$(awk -v n="$prompt_len" -v v="$vocab" \
    'BEGIN { x = 12345; for (i = 0; i < n; i++) { x = (x * 1103515245 + 12345) % 2147483648;
             printf "%s%d", (i ? "," : ""), 3 + x % (v - 3) } }')
echo "bench-wire: $arch medium, a $prompt_len-token prompt, against moe-run's float32 logits"
"$bin/moe-run" --model "$model" --prompt-ids "$ids" --max-tokens 0 \
    --dump-logits "$work/ref.f32" >/dev/null 2>&1
rows=()
for wire in f32 bf16 fp8; do
    endpoint=$(MOE_BIN="$bin" "$root/cluster/local.sh" up --model "$model" --nodes 2 \
        --run-dir "$run_dir" --wire "$wire" | tail -n 1)
    "$bin/moe-client" --connect "$endpoint" logits --prompt-ids "$ids" --out "$work/$wire.f32"
    diff=$("$bin/bench-logit-diff" --ref "$work/ref.f32" --test "$work/$wire.f32" \
        --vocab "$vocab" | tail -n 1)
    status=$("$bin/moe-client" --connect "$endpoint" status | sed -n 's/^wire: //p')
    MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir" >/dev/null
    # positions N kl_mean X kl_max Y top1 F
    read -r _ _ _ kl_mean _ kl_max _ top1 <<<"$diff"
    sent=$(echo "$status" | sed -n 's/.*, \([0-9]*\) bytes per token per layer sent.*/\1/p')
    recv=$(echo "$status" | sed -n 's/.*sent, \([0-9]*\) received.*/\1/p')
    rows+=("$(printf '| %s | %s | %s | %s | %s | %s |' "$wire" "$sent" "$recv" "$top1" \
        "$kl_mean" "$kl_max")")
done
echo
echo "| wire | bytes/token/layer sent | received | top-1 vs f32 | KL mean (nats) | KL max |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
