#!/usr/bin/env bash
# The main job, end to end on this machine: build edgepm and run `edgepm demo` — an embedded MQTT
# broker on a free port, tenant "default" on bearing-spectrum -> bearing-spectrum-xgb, the host
# and simulated motors (one of them wears out) — then print the summary.
#   scripts/demo.sh [seconds=60] [data-dir=target/demo]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
work=${2:-${CARGO_TARGET_DIR:-target}/demo}
source scripts/lib/toolchain.sh
cargo build --release --locked -p edgepm
bin=${CARGO_TARGET_DIR:-target}/release/edgepm
rm -rf "$work"
"$bin" demo --duration "$secs" --data-dir "$work"
