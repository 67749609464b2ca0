#!/usr/bin/env bash
# The side-by-side comparison harness (issue 12), one command for every row
# of BENCHMARKS.md's "Side by side" table: Strongroom against OpenBao (dev,
# raft), raw Consul KV, and HashiCorp Vault v1.1.2 on the same Consul agent,
# each ratio measured in one run with rounds alternating the order, median
# of the rounds. See benches/examples/compare.rs for the method.
#
#   benches/openbao-compare/run.sh                    # 3 rounds of 5 s phases
#   ROUNDS=5 PHASE_SECONDS=10 benches/openbao-compare/run.sh
#   ONLY=consul,ha benches/openbao-compare/run.sh    # a subset (no file writes)
#   BASELINE_BIN=/old/strongroom benches/openbao-compare/run.sh  # + before/after rows
#
# It rewrites the generated section of BENCHMARKS.md, the chart
# benches/results/compare.svg and every phase in benches/results/compare.md.
# Release builds only; the load client shares the machine's cores with the
# servers, so the figures compare servers, they are not capacity numbers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

eval "$(scripts/setup-tools.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STRONGROOM_CACHE/target}"
cargo build --quiet --release -p examples --bin strongroom
cargo build --quiet --release -p benches --example compare

args=(--strongroom "$CARGO_TARGET_DIR/release/strongroom"
      --rounds "${ROUNDS:-3}" --seconds "${PHASE_SECONDS:-5}")
if [ -n "${ONLY:-}" ]; then
  args+=(--groups "$ONLY")
else
  args+=(--write BENCHMARKS.md --svg benches/results/compare.svg
         --details benches/results/compare.md)
fi
exec "$CARGO_TARGET_DIR/release/examples/compare" "${args[@]}"
