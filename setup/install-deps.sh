#!/usr/bin/env bash
# Installs the Debian packages moecluster needs to build, test and run, and
# only those that are missing. Safe to run again; needs root (or sudo) only
# when something is missing.
set -euo pipefail

packages=(
    gcc make pkg-config      # the build
    libopenblas-dev          # every matrix product (pthread OpenBLAS, DYNAMIC_ARCH)
    libjansson-dev           # config.json, safetensors headers, tokenizer.json
    libpcre2-dev             # tokenizer pre-tokenizer regexes (\p{L}, lookahead)
    libutf8proc-dev          # tokenizer NFC normalization
    libcmocka-dev            # the tests
    libzmq3-dev              # data plane and client RPC sockets
    libprotobuf-c-dev protobuf-c-compiler  # the wire headers (proto/*.proto)
    procps                   # ps/pkill in cluster/ scripts and tests
    openmpi-bin libopenmpi-dev  # mpirun and moe-mpi's bootstrap (core/boot.c)
    iproute2 util-linux      # test hosts: ip netns, veth, bridge; unshare
    clang libclang-rt-14-dev # fuzz/: clang and libFuzzer (libclang_rt.fuzzer-x86_64.a)
    python3-numpy            # tests/test_quant.c: ../shared/peers/mkgguf.py's quantizers
)

# moe-mpi's ranks mostly wait for each other, so more ranks than cores is
# normal on a small machine (4 ranks on 2 cores here): let mpirun place them
# without --oversubscribe. Only this one Open MPI setting is added.
s_allow_oversubscribe() {
    local conf=/etc/openmpi/openmpi-mca-params.conf
    [ -f "$conf" ] || return 0
    grep -q '^rmaps_base_oversubscribe' "$conf" && return 0
    if [ -w "$conf" ]; then
        printf '\n# added by moecluster setup/install-deps.sh\nrmaps_base_oversubscribe = 1\n' >>"$conf"
    else
        echo "install-deps: run as root to let mpirun start more ranks than cores" >&2
    fi
}

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    s_allow_oversubscribe
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: run as root to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
s_allow_oversubscribe
