#!/usr/bin/env bash
# Installs build dependencies if missing, then runs every test of the
# workspace: unit tests, and black-box tests that start the real server
# binary on 127.0.0.1 with temp directories.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --all-targets --no-run
RUST_TEST_THREADS="${LIMINAL_TEST_THREADS:-4}" cargo test --workspace --all-targets
cargo test --workspace --doc
