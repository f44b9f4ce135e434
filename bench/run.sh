#!/usr/bin/env bash
# make bench: the benchmarks, on the medium preset (made once in build/models/).
# Figures are ratios measured in the same run; see docs/PERFORMANCE.md.
set -euo pipefail
bin=${1:?usage: bench/run.sh BIN_DIR}
model=build/models/mixtral-medium
if [ ! -f "$model/config.json" ]; then
    echo "bench: making the medium preset in $model"
    "$bin/moe-mkmodel" --arch mixtral --preset medium --seed 1 --out "$model"
fi
load=$(cut -d" " -f1 /proc/loadavg)
echo "bench: load average before timing: $load (figures are noisy when it is above ~0.3)"
"$bin/bench-core" --model "$model" --threads 1,2 --prompt-len 128 --decode 64 --repeat 5
