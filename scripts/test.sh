#!/usr/bin/env bash
# Runs every test Strongroom has, on a fresh machine: installs and starts
# what the tests need (Consul, moto_server, OpenBao's bao, hvac, chromium
# and selenium; cached in ~/.cache/strongroom), then checks formatting, lints,
# licences and advisories, the Rust test suites, the end-to-end tests with
# real clients and a real browser, and the Kubernetes deployment (chart,
# probes, image, Prometheus).
#
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

eval "$(scripts/setup-tools.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STRONGROOM_CACHE/target}"
export CARGO_TERM_COLOR=never
# One-shot builds: incremental state only costs time and disk here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo deny (advisories, licences, sources; RustSec database: ${STRONGROOM_DENY_DB:-missing})"
if [ -z "${STRONGROOM_DENY_DB:-}" ]; then
  echo "$STRONGROOM_DENY_DB_HINT" >&2
  exit 1
fi
cargo fetch --quiet
# deny.toml names the default cache; point it at this run's cache.
deny_config="$(mktemp)"
sed "s|^db-path = .*|db-path = \"$STRONGROOM_CACHE/advisory-db\"|" deny.toml > "$deny_config"
cargo deny --offline --config "$deny_config" check advisories licenses sources bans
rm -f "$deny_config"

step "cargo test (workspace, all features)"
cargo test --workspace --all-features --no-fail-fast

if [ -d tests/e2e ]; then
  step "end-to-end tests with real clients (hvac, OpenBao CLI, the console in headless chromium)"
  cargo build --quiet -p examples --bin strongroom
  export STRONGROOM_BIN="$CARGO_TARGET_DIR/debug/strongroom"
  "$STRONGROOM_PYTHON" -m pytest -q tests/e2e
fi

step "Kubernetes: Helm chart, alert rules, probes, image, Prometheus (tests/k8s; no cluster needed)"
cargo build --quiet -p examples --bin strongroom
export STRONGROOM_BIN="$CARGO_TARGET_DIR/debug/strongroom"
"$STRONGROOM_PYTHON" -m pytest -q tests/k8s
