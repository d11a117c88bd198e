#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests and the integration tests that run real
# programs (C fixtures, redis-server) under tandem.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== format"
cargo fmt --all -- --check
echo "== lints"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
echo "== tests"
cargo test --release --workspace
