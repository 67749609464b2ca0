#!/usr/bin/env bash
# Runs the multi-process tests many times in a row and reports failures per
# test: the Consul cluster tests (storage-consul: cluster, ha), every
# integration test of the server (examples/tests), and the end-to-end tests
# with real clients (tests/e2e). Not part of CI: a flaky suite shows up here
# before it refuses good submissions there.
#
#   scripts/flake-check.sh [RUNS]        (default 20)
#
# Builds once, then runs the same executables RUNS times; logs of failed
# runs are kept in $STRONGROOM_CACHE/flake-check/<timestamp>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs="${1:-20}"
eval "$(scripts/setup-tools.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STRONGROOM_CACHE/target}"
export CARGO_TERM_COLOR=never
out="$STRONGROOM_CACHE/flake-check/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"

echo "==> building the test executables once"
cargo build --quiet -p examples --bin strongroom
export STRONGROOM_BIN="$CARGO_TARGET_DIR/debug/strongroom"
# The system python3 parses cargo's messages: the shared venv may be
# rebuilt by another setup run meanwhile.
cargo test --no-run --message-format=json \
  -p storage-consul --test cluster --test ha \
  -p examples --tests >"$out/build.json" 2>"$out/build.log" ||
  { cat "$out/build.log" >&2; echo "the test executables did not build" >&2; exit 1; }
mapfile -t suites < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable") and t.get("kind") == ["test"]:
        pkg = m["package_id"].split("#")[0].rstrip("/").split("/")[-1]
        print(pkg + "/" + t["name"] + "\t" + m["executable"])
' "$out/build.json")
rm -f "$out/build.json" "$out/build.log"
[ "${#suites[@]}" -gt 0 ] || { echo "no test executables were built" >&2; exit 1; }

declare -A failures=()
# One more failure of $1.
count() { failures["$1"]=$(( ${failures["$1"]:-0} + 1 )); }
# Counts each test the sed expression $2 finds in log $3 as a failure of
# suite $1; a failed run that names none counts against the suite.
tally() {
  local found=0 t
  while read -r t; do count "$1::$t"; found=1; done < <(sed -n "$2" "$3")
  [ "$found" = 1 ] || count "$1 (exited without a FAILED test)"
}
failed_runs=0
started=$(date +%s)
for run in $(seq 1 "$runs"); do
  run_failed=0
  for entry in "${suites[@]}"; do
    name="${entry%%$'\t'*}"; exe="${entry#*$'\t'}"
    log="$out/run$run-${name//\//-}.log"
    if "$exe" >"$log" 2>&1; then
      rm -f "$log"
    else
      run_failed=1
      tally "$name" 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log"
    fi
  done
  log="$out/run$run-e2e.log"
  if "$STRONGROOM_PYTHON" -m pytest -q -rf -p no:cacheprovider tests/e2e >"$log" 2>&1; then
    rm -f "$log"
  else
    run_failed=1
    tally e2e 's/^FAILED \([^ ]*\).*/\1/p' "$log"
  fi
  failed_runs=$(( failed_runs + run_failed ))
  printf 'run %d/%d: %s (%ds so far)\n' "$run" "$runs" \
    "$([ "$run_failed" = 0 ] && echo ok || echo FAILED)" $(( $(date +%s) - started ))
done

echo
names=""
for entry in "${suites[@]}"; do names+="${entry%%$'\t'*} "; done
echo "==> $runs runs of ${#suites[@]} test binaries (${names% }) + tests/e2e: $failed_runs run(s) with failures"
if [ "${#failures[@]}" -eq 0 ]; then
  echo "no test failed"
  rmdir "$out" 2>/dev/null || true
  exit 0
fi
echo "failures per test (of $runs runs); logs in $out:"
for t in "${!failures[@]}"; do
  printf '  %3d  %s\n' "${failures[$t]}" "$t"
done | sort -rn
exit 1
