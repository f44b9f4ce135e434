#!/usr/bin/env bash
# The main job on the built-in default model: makes the model once (the
# "small" Mixtral preset, seed 1, random weights), starts a local cluster of a
# coordinator and two expert nodes, asks it for a greedy continuation and for
# its status, and stops it (also when a step fails).
#   tools/run-default.sh BIN_DIR MODEL_DIR
set -euo pipefail
bin=${1:?usage: run-default.sh BIN_DIR MODEL_DIR}
model=${2:?usage: run-default.sh BIN_DIR MODEL_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
run_dir=$root/build/run/default

if [ ! -f "$model/config.json" ]; then
    echo "run: making the default model in $model"
    "$bin/moe-mkmodel" --arch mixtral --preset small --seed 1 --out "$model"
fi
trap 'MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir"' EXIT
echo "run: starting a local cluster (coordinator + 2 expert nodes)"
endpoint=$(MOE_BIN="$bin" "$root/cluster/local.sh" up --model "$model" --nodes 2 \
    --run-dir "$run_dir" | tail -n 1)
echo "run: client endpoint $endpoint"
prompt=1,42,7,99,256,13
echo "run: moe-client generate --prompt-ids $prompt --max-tokens 16"
"$bin/moe-client" --connect "$endpoint" generate --prompt-ids "$prompt" --max-tokens 16
"$bin/moe-client" --connect "$endpoint" status
echo "run: stopping the cluster"
