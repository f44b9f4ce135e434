#!/usr/bin/env bash
# Installs the Debian packages moecluster needs to build, test and run, and
# only those that are missing. Safe to run again; needs root (or sudo) only
# when something is missing.
set -euo pipefail

packages=(
    gcc make pkg-config      # the build
    libopenblas-dev          # every matrix product (pthread OpenBLAS, DYNAMIC_ARCH)
    libjansson-dev           # config.json, safetensors headers, tokenizer.json
    libcmocka-dev            # the tests
    libzmq3-dev              # data plane and client RPC sockets
    libprotobuf-c-dev protobuf-c-compiler  # the wire headers (proto/*.proto)
    procps                   # ps/pkill in cluster/ scripts and tests
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
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
