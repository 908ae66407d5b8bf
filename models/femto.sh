#!/usr/bin/env bash
# The real-bearing model: bearing-spectrum features of the FEMTO/PRONOSTIA learning set, computed
# by the plugin itself (`edgepm replay --features-only`, windows in order, baselines as a live
# host keeps them), then leave-one-bearing-out experiments (MLflow, models/mlruns.db) and the
# export of models/bearing-spectrum-xgb.
#   models/femto.sh [femto_dir=../shared/data/femto]
set -euo pipefail
cd "$(dirname "$0")/.."
femto=${1:-../shared/data/femto}
source scripts/lib/models-venv.sh
source scripts/lib/toolchain.sh
cargo build --release --locked -p edgepm
edgepm=${CARGO_TARGET_DIR:-target}/release/edgepm
# The tenant "vibration" without its model: the features need only the preprocessor and
# tenant.toml (its window, hop and baseline period).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/plugins/vibration" "$work/models" models/data/femto
"$edgepm" plugin export "$work/plugins/vibration" --preprocess bearing-spectrum >/dev/null
cp tenants/vibration/tenant.toml "$work/plugins/vibration/"
for npz in "$femto"/Bearing*.npz; do
  name=$(basename "$npz" .npz)
  # FEMTO's bearing (its README): 13 balls of 3.5 mm on a 25.6 mm pitch, contact angle 0.
  # (RUST_LOG=error: the tenant's model is missing here on purpose, and the host says so.)
  RUST_LOG=error "$edgepm" replay --tenant vibration --plugins-dir "$work/plugins" --models-dir "$work/models" \
    --recording "$npz" --features-only --out "models/data/femto/$name.csv" \
    --asset balls=13 --asset ball_diameter_mm=3.5 --asset pitch_diameter_mm=25.6 --asset contact_angle_deg=0
done
"$venv/bin/python" - <<'PY'
import pandas as pd, pathlib
parts = []
for f in sorted(pathlib.Path("models/data/femto").glob("Bearing*.csv")):
    d = pd.read_csv(f)
    d.insert(0, "bearing", f.stem)
    parts.append(d)
pd.concat(parts).to_csv("models/data/femto-features.csv", index=False)
PY
"$venv/bin/python" models/train.py femto --data models/data/femto-features.csv
