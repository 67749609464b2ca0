#!/usr/bin/env bash
# Runs the fault-injection suite (examples/tests/chaos.rs: eight scenarios
# on three nodes, a 3-server Consul and moto with IAM) and regenerates its
# report, benches/results/chaos.md, from the figures each scenario records.
# The same suite runs in scripts/test.sh; this only keeps the report.
#
#   scripts/chaos-report.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

eval "$(scripts/setup-tools.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STRONGROOM_CACHE/target}"
export CARGO_TERM_COLOR=never
# Each scenario keeps its figures here (CARGO_TARGET_TMPDIR/chaos-results);
# start from none so the report holds this run only.
rm -rf "$CARGO_TARGET_DIR/tmp/chaos-results"
export STRONGROOM_CHAOS_REPORT="$PWD/benches/results/chaos.md"
cargo test -p examples --test chaos -- --test-threads=1
echo "wrote $STRONGROOM_CHAOS_REPORT"
