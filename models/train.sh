#!/usr/bin/env bash
# The whole training pipeline: a virtualenv with the pinned requirements, the simulator's
# run-to-failure dataset (edgepm dataset), the bearing experiments and the AI4I 2020 experiments
# (MLflow store models/mlruns.db), exported models in models/<name>/ and parity fixtures in
# host/tests/fixtures/models/.
#   models/train.sh [motors=300]        AI4I_CSV=... to point at the AI4I training file
set -euo pipefail
cd "$(dirname "$0")/.."
motors=${1:-300}
source scripts/lib/models-venv.sh
source scripts/lib/toolchain.sh
cargo build --release --locked -p edgepm
edgepm=${CARGO_TARGET_DIR:-target}/release/edgepm
mkdir -p models/data
[ -f models/data/bearing.csv ] || "$edgepm" dataset --motors "$motors" --out models/data/bearing.csv
"$venv/bin/python" models/train.py bearing --data models/data/bearing.csv
"$venv/bin/python" models/train.py ai4i --data "${AI4I_CSV:-../shared/data/ai4i2020/ai4i2020_train.csv}"
echo "MLflow UI: $venv/bin/mlflow ui --backend-store-uri sqlite:///models/mlruns.db  (then http://127.0.0.1:5000)"
