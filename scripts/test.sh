#!/usr/bin/env bash
# The whole test suite on a fresh machine: start the real servers, then every test.
# Ends with one line "tests: N passed, N failed" summing every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
scripts/build-deps.sh
scripts/services.sh up
eval "$(scripts/services.sh env)"
cargo build --all-targets --locked --features failpoints
out=$(mktemp)
status=0
cargo test --locked --no-fail-fast --features failpoints "$@" 2>&1 | tee "$out" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$out"
rm -f "$out"
exit $status
