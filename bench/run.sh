#!/usr/bin/env bash
# The benchmark harness (see bench/README.md): starts the databases, builds sluice in release
# mode and runs the workloads.
#
#   bench/run.sh [--source pg|mariadb|mongodb|kafka|all] [ARGS...]
#   bench/run.sh --summary [--runs N]     every target of the performance issue, one table
#
# ARGS go to the workload scripts (e.g. --runs 5, --workload catchup).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}
source=all
if [ "${1:-}" = "--source" ]; then source=$2; shift 2; fi
if [ "${1:-}" = "--summary" ]; then source=summary; shift; fi
case $source in
  summary) scripts/services.sh up python postgres mariadb kafka ;;
  pg) scripts/services.sh up python postgres ;;
  mariadb) scripts/services.sh up python mariadb ;;
  mongodb) scripts/services.sh up python mongodb ;;
  kafka) scripts/services.sh up python postgres kafka ;;
  all) scripts/services.sh up python postgres mariadb mongodb kafka ;;
  *) echo "usage: $0 [--source pg|mariadb|mongodb|kafka|all] [ARGS...] | --summary [--runs N]" >&2; exit 2 ;;
esac
eval "$(scripts/services.sh env)"
cargo build --release --locked
SLUICE=$CARGO_TARGET_DIR/release/sluice
if [ "$source" = summary ]; then exec "$SLUICE_PYTHON" bench/all.py "$SLUICE" "$@"; fi
case $source in pg|all) "$SLUICE_PYTHON" bench/catchup.py "$SLUICE" "$@" ;; esac
case $source in mariadb|all) "$SLUICE_PYTHON" bench/mariadb.py "$SLUICE" "$@" ;; esac
case $source in mongodb|all) "$SLUICE_PYTHON" bench/mongodb.py "$SLUICE" "$@" ;; esac
case $source in kafka|all) "$SLUICE_PYTHON" bench/kafka.py "$SLUICE" "$@" ;; esac
