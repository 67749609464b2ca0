#!/usr/bin/env bash
# Failover time of a three-node cluster (graceful, step-down, crash) for
# Strongroom on Consul, OpenBao on integrated raft and, when it is built,
# HashiCorp Vault 1.1.2 on the same Consul. One run, one machine, one
# harness (benches/benches/failover.rs). The forwarded GET through a standby
# is measured by benches/openbao-compare/run.sh (kv_load is gone).
#
#   benches/failover/run.sh                 # 10 runs per scenario
#   FAILOVER_RUNS=20 benches/failover/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

eval "$(scripts/setup-tools.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STRONGROOM_CACHE/target}"
cargo build --quiet --release -p examples --bin strongroom
export STRONGROOM_BIN="$CARGO_TARGET_DIR/release/strongroom"
cargo bench --quiet -p benches --bench failover
