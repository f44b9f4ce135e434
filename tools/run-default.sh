#!/usr/bin/env bash
# The main job on the built-in default model: makes the model once (the
# "small" Mixtral preset, seed 1, random weights), starts a local cluster of a
# coordinator and two expert nodes, asks it for a continuation of a text
# prompt (tokenized by the coordinator with the model's tokenizer, the
# generated text printed as it streams in) and for its status, and stops it
# (also when a step fails). The weights are random, so the text is gibberish:
# the point is the path it takes.
#   tools/run-default.sh BIN_DIR MODEL_DIR
set -euo pipefail
bin=${1:?usage: run-default.sh BIN_DIR MODEL_DIR}
model=${2:?usage: run-default.sh BIN_DIR MODEL_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
run_dir=$root/build/run/default

# Shows a command exactly as it runs (quoted as a shell would need it), then
# runs it.
show_run() {
    local arg line="run:" plain='^[A-Za-z0-9_./:=,@+-]+$' q="'"
    for arg in "$@"; do
        if [[ $arg =~ $plain ]]; then
            line+=" $arg"
        else
            line+=" '${arg//$q/$q\\$q$q}'"
        fi
    done
    echo "$line"
    "$@"
}

# A model made before moe-mkmodel wrote tokenizers, or before it filled the
# ids past the learned merges with words (reserved ids print nothing), is
# made again.
if [ ! -f "$model/config.json" ] || [ ! -f "$model/tokenizer.json" ] ||
    grep -q reserved_special_token "$model/tokenizer.json"; then
    echo "run: making the default model in $model"
    show_run "$bin/moe-mkmodel" --arch mixtral --preset small --seed 1 --out "$model" --force
fi
trap 'MOE_BIN="$bin" "$root/cluster/local.sh" down --run-dir "$run_dir"' EXIT
echo "run: starting a local cluster (coordinator + 2 expert nodes)"
endpoint=$(MOE_BIN="$bin" "$root/cluster/local.sh" up --model "$model" --nodes 2 \
    --run-dir "$run_dir" --http 127.0.0.1:0 | tail -n 1)
echo "run: client endpoint $endpoint"
url=$(cat "$run_dir/coordinator.http")
echo "run: OpenAI-compatible HTTP API at $url/v1 (docs/HTTP.md)"
prompt="Mixture-of-experts models spread their experts over many machines."
show_run "$bin/moe-client" --connect "$endpoint" generate --prompt "$prompt" --max-tokens 24 \
    --temperature 0.8 --seed 1 --stream
show_run "$bin/moe-client" --connect "$endpoint" generate --prompt-ids 1,42,7,99,256,13 \
    --max-tokens 16
show_run "$bin/moe-client" --connect "$endpoint" status
if command -v curl >/dev/null; then
    show_run curl -sS "$url/v1/completions" -H 'Content-Type: application/json' \
        -d '{"model": "default", "prompt": "Experts live on", "max_tokens": 12, "seed": 1}'
    echo
fi
echo "run: stopping the cluster"
