#!/usr/bin/env bash
# Catch-up benchmark (see bench/README.md): starts Postgres, builds sluice in release mode, runs
# bench/catchup.py and prints the table. Extra arguments go to catchup.py (e.g. --runs 5).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
scripts/services.sh up python postgres
eval "$(scripts/services.sh env)"
cargo build --release --locked
exec "$SLUICE_PYTHON" bench/catchup.py "$CARGO_TARGET_DIR/release/sluice" "$@"
