#!/usr/bin/env bash
# Installs what building Liminal needs on Debian or Ubuntu, if missing:
# a C/C++ toolchain and libclang (RocksDB is built from source and its
# bindings are generated with bindgen). Safe to run repeatedly; it does
# nothing when everything is present.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
    missing+=(libclang-dev)
fi
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: apt-get not found; install ${missing[*]} with your package manager" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install Rust 1.88 or newer with rustup (https://rustup.rs), then rerun." >&2
    exit 1
fi
