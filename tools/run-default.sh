#!/usr/bin/env bash
# The main job on the built-in default model: makes the model once (the
# "small" Mixtral preset, seed 1, random weights), then runs a prompt through
# it and prints the greedy continuation.
#   tools/run-default.sh BIN_DIR MODEL_DIR
set -euo pipefail
bin=${1:?usage: run-default.sh BIN_DIR MODEL_DIR}
model=${2:?usage: run-default.sh BIN_DIR MODEL_DIR}

if [ ! -f "$model/config.json" ]; then
    echo "run: making the default model in $model"
    "$bin/moe-mkmodel" --arch mixtral --preset small --seed 1 --out "$model"
fi
prompt=1,42,7,99,256,13
echo "run: moe-run --model $model --prompt-ids $prompt --max-tokens 16"
"$bin/moe-run" --model "$model" --prompt-ids "$prompt" --max-tokens 16
