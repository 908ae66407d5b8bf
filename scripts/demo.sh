#!/usr/bin/env bash
# The main job, end to end on this machine: build edgepm, deploy the reference plugins and the
# baseline model for tenant "default", run windows of a healthy and a wearing motor through them,
# and print what the plugins decided.
#   scripts/demo.sh [work-dir]      (default: target/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/demo}
cargo build --release --locked -p edgepm
bin=${CARGO_TARGET_DIR:-target}/release/edgepm
rm -rf "$work" && mkdir -p "$work"
"$bin" plugin export "$work/plugins/default"
"$bin" model baseline "$work/models"
python3 scripts/gen_windows.py --tenant default --device MTR-042 --windows 12 > "$work/windows.jsonl"
"$bin" process --no-watch --plugins-dir "$work/plugins" --models-dir "$work/models" \
  < "$work/windows.jsonl" > "$work/outcomes.jsonl"
python3 - "$work/outcomes.jsonl" <<'PY'
import json, sys, datetime
for line in open(sys.argv[1]):
    o = json.loads(line)
    ts = datetime.datetime.fromtimestamp(o["end_ms"] / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rms = o["features"]["values"][o["features"]["names"].index("vibration_rms")]
    print(f'{ts} {o["device"]}: vibration_rms={rms:5.2f} p={o["score"]["probability"]:.3f} failure={o["decision"]["is_failure"]}')
    for a in o["decision"]["alerts"]:
        print("   ", a["subject"]); print("    " + a["body"].replace("\n", "\n    "))
PY
echo "outcomes: $work/outcomes.jsonl"
