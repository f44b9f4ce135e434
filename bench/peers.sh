#!/usr/bin/env bash
# make bench-peers: sets up llama.cpp as a peer for bench/formats.sh, once.
#   bench/peers.sh BIN_DIR
# Idempotent: each step runs only when its result is missing or stale, so a
# second run does nothing (and needs no network). Steps:
#   1. Debian's python3-numpy (the GGUF converter), node, npm, gcc: installed
#      with apt-get when missing (root).
#   2. ../shared/peers (or $MOE_PEERS_SRC) copied to build/peers; in
#      build/peers/llamacpp `npm install --omit=optional --ignore-scripts`
#      (node-llama-cpp 3.22.1 and its prebuilt CPU binary; nothing compiled).
#   3. The thread shim build/peers/spread_threads.so (gcc).
#   4. The medium Mixtral preset in build/models/mixtral-medium (as make bench).
#   5. Its GGUFs build/peers/gguf/mixtral-medium-{f32,f16,q8_0,q4_0}.gguf,
#      converted again only when the model is newer than them.
#   6. A one-token llama.cpp run on the Q4_0 file: the peer works here.
set -euo pipefail
bin=${1:?usage: bench/peers.sh BIN_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
src=${MOE_PEERS_SRC:-$root/../shared/peers}
peers=$root/build/peers
model=$root/build/models/mixtral-medium
gguf_dir=$peers/gguf
py=/usr/bin/python3 # Debian's, where python3-numpy installs (mkgguf.py's #! line)

say() { echo "bench-peers: $*"; }
die() { echo "bench-peers: $*" >&2; exit 1; }

# 1. Tools.
missing=()
"$py" -c 'import numpy' 2>/dev/null || missing+=(python3-numpy)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v gcc >/dev/null || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root or apt-get install them"
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. The peer's scripts and node-llama-cpp.
[ -f "$src/llamacpp/run.mjs" ] || die "no peer scripts in $src (set MOE_PEERS_SRC)"
mkdir -p "$peers/llamacpp"
for f in "$src"/*.py "$src"/README.md "$src"/llamacpp/*.mjs "$src"/llamacpp/*.c \
         "$src"/llamacpp/package.json "$src"/llamacpp/package-lock.json; do
    rel=${f#"$src"/}
    cmp -s "$f" "$peers/$rel" 2>/dev/null || { cp "$f" "$peers/$rel"; say "copied $rel"; }
done
chmod +x "$peers"/*.py
nlc=$peers/llamacpp/node_modules/node-llama-cpp/package.json
bin_pkg=$peers/llamacpp/node_modules/@node-llama-cpp/linux-x64/package.json
if [ ! -f "$nlc" ] || [ ! -f "$bin_pkg" ]; then
    say "npm install in $peers/llamacpp (node-llama-cpp 3.22.1, prebuilt CPU binary)"
    (cd "$peers/llamacpp" && npm install --omit=optional --ignore-scripts --no-audit --no-fund)
fi

# 3. The thread shim.
shim=$peers/spread_threads.so
if [ ! -f "$shim" ] || [ "$peers/llamacpp/spread_threads.c" -nt "$shim" ]; then
    say "compiling $shim"
    gcc -O2 -shared -fPIC -o "$shim" "$peers/llamacpp/spread_threads.c" -ldl
fi

# 4. The model (the one bench/run.sh makes).
if [ ! -f "$model/config.json" ]; then
    say "making the medium preset in $model"
    "$bin/moe-mkmodel" --arch mixtral --preset medium --seed 1 --out "$model"
fi

# 5. GGUFs, through a temporary name so that an interrupted conversion is not
# taken for a finished one.
mkdir -p "$gguf_dir"
newest=$(ls -t "$model"/config.json "$model"/*.safetensors | head -n 1)
for t in f32 f16 q8_0 q4_0; do
    out=$gguf_dir/mixtral-medium-$t.gguf
    if [ -f "$out" ] && [ "$out" -nt "$newest" ]; then
        continue
    fi
    say "converting $model to $out"
    "$py" "$peers/mkgguf.py" convert --hf "$model" --out "$out.tmp" --dtype "$t" >/dev/null
    mv "$out.tmp" "$out"
done

# 6. The peer runs here.
node "$peers/llamacpp/run.mjs" --model "$gguf_dir/mixtral-medium-q4_0.gguf" --tokens 1,17 \
    --steps 1 --threads 1 >/dev/null ||
    die "llama.cpp does not run here (node $peers/llamacpp/run.mjs failed)"
say "ready: $peers (GGUFs in $gguf_dir)"
