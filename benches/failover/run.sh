#!/usr/bin/env bash
# Failover time of a three-node cluster (graceful, step-down, crash) for
# Strongroom on Consul, OpenBao on integrated raft and, when it is built,
# HashiCorp Vault 1.1.2 on the same Consul; plus the forwarded KV GET
# through a standby against the same GET to the active node. One run, one
# machine, one harness (benches/benches/failover.rs).
#
#   benches/failover/run.sh                 # 10 runs per scenario
#   FAILOVER_RUNS=20 benches/failover/run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

eval "$(scripts/setup-tools.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STRONGROOM_CACHE/target}"
cargo build --quiet --release -p examples --bin strongroom --example kv_load
export STRONGROOM_BIN="$CARGO_TARGET_DIR/release/strongroom"
export KV_LOAD_BIN="$CARGO_TARGET_DIR/release/examples/kv_load"
cargo bench --quiet -p benches --bench failover
