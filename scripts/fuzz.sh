#!/usr/bin/env bash
# Fuzzes telemetry decoding and the checks of plugin outputs (edgepm-core, fuzz/) with
# cargo-fuzz (libFuzzer) on the nightly toolchain, installing both if missing. Not part of CI: a
# rerunnable command whose results go in docs/benchmarks.md.
#   scripts/fuzz.sh [runs=10000000] [targets="decode validate"]
# Each target runs `runs` executions (libFuzzer -runs) from its corpus in fuzz/corpus/<target>
# (seeded from fuzz/seeds/<target>; grows as the fuzzer finds new paths, not committed). A crash
# stops the run and leaves the input in fuzz/artifacts/<target>/. edgepm-core has no unsafe code,
# so the default is no sanitizer (several times faster); SANITIZER=address turns ASan on.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000000}
targets=${2:-decode validate}
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked
for t in $targets; do
  mkdir -p "fuzz/corpus/$t"
  [ -d "fuzz/seeds/$t" ] && cp -n fuzz/seeds/"$t"/* "fuzz/corpus/$t/" 2>/dev/null || true
  dict=(); [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  echo "== fuzzing $t: $runs executions" >&2
  start=$(date +%s)
  log=$(mktemp)
  set +e
  cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer "${SANITIZER:-none}" "$t" "fuzz/corpus/$t" \
    -- -runs="$runs" "${dict[@]}" -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  grep -E '^(#[0-9]+\s+(DONE|INITED)|stat::|Done )' "$log" || true
  [ "$status" = 0 ] || tail -60 "$log"
  rm -f "$log"
  echo "== $t: exit $status after $(( $(date +%s) - start )) s, corpus $(ls "fuzz/corpus/$t" | wc -l) inputs" >&2
  [ "$status" = 0 ] || exit "$status"
done
