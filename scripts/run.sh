#!/usr/bin/env bash
# Builds and runs the broker on the embedded default configuration
# (client port 127.0.0.1:7400, HTTP port 127.0.0.1:7401). Extra arguments
# go to liminal-server, for example: scripts/run.sh --config config/liminal.toml
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bins
exec "${CARGO_TARGET_DIR:-target}/release/liminal-server" "$@"
