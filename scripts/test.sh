#!/usr/bin/env bash
# The whole test suite on a fresh machine: start the real servers, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq build-essential; }
scripts/services.sh up
eval "$(scripts/services.sh env)"
cargo build --all-targets --locked
cargo test --locked --no-fail-fast "$@"
