#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need first (idempotent).
#   scripts/test.sh            all tests
#   scripts/test.sh <filter>   passes the filter to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}

source scripts/lib/toolchain.sh

# The telemetry tests run a real MQTT broker and its command-line clients; the mTLS test makes
# its certificates with openssl.
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ] || ! command -v mosquitto_pub >/dev/null \
   || ! command -v openssl >/dev/null; then
  echo "installing mosquitto, mosquitto-clients and openssl" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null; }
fi

# The cloud side, local: moto server (AWS APIs) in a virtualenv of its own, InfluxDB 1.x and
# VictoriaMetrics (it takes InfluxDB's v2 writes) from Debian. The tests start them on free ports.
# systemd-analyze checks the gateway's unit file (infrastructure/edgepm.service).
if ! command -v influxd >/dev/null || ! command -v victoria-metrics >/dev/null || ! command -v systemd-analyze >/dev/null; then
  echo "installing influxdb, victoria-metrics and systemd (for systemd-analyze)" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq influxdb victoria-metrics systemd >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq influxdb victoria-metrics systemd >/dev/null; }
fi
# The dashboard test drives Debian's headless Chromium over WebDriver (chromedriver).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing chromium and chromium-driver (the dashboard's browser test)" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium chromium-driver >/dev/null; }
fi
# The weekly report's test reads its PDF back with poppler (pdftotext, pdffonts, pdftoppm).
if ! command -v pdftotext >/dev/null || ! command -v pdftoppm >/dev/null || ! command -v pdffonts >/dev/null; then
  echo "installing poppler-utils (the weekly report's test)" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq poppler-utils >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq poppler-utils >/dev/null; }
fi
# A virtualenv of the project's own at $1 with the pinned requirements $2, (re)made when $3 is
# missing from it or the requirements changed.
venv_with() {
  local venv=$1 requirements=$2 probe=$3
  if [ ! -x "$venv/bin/$probe" ] || ! cmp -s "$requirements" "$venv/.edgepm-requirements"; then
    echo "installing $requirements into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$requirements"
    cp "$requirements" "$venv/.edgepm-requirements"
  fi
}
moto_venv=${EDGEPM_MOTO_VENV:-$HOME/.cache/edgepm-moto-venv}
venv_with "$moto_venv" scripts/lib/moto-requirements.txt moto_server
export EDGEPM_MOTO_SERVER="$moto_venv/bin/moto_server"

# The deployment files' linters: cfn-lint and checkov (the CloudFormation template), hadolint and
# checkov (the Dockerfile), pinned in scripts/lib/lint-requirements.txt.
lint_venv=${EDGEPM_LINT_VENV:-$HOME/.cache/edgepm-lint-venv}
venv_with "$lint_venv" scripts/lib/lint-requirements.txt cfn-lint
export EDGEPM_LINT_VENV="$lint_venv"

# A plugin from another toolchain: the Python example policy, built with componentize-py in a
# virtualenv of the project's own (rebuilt only when its source or the WIT changed).
venv=${EDGEPM_PY_VENV:-$HOME/.cache/edgepm-py-venv}
example=plugins/examples/python-policy
venv_with "$venv" "$example/requirements.txt" componentize-py
mkdir -p "$target/python-plugins"
py_policy="$(cd "$target/python-plugins" && pwd)/policy.wasm"
if [ ! -f "$py_policy" ] || [ "$example/app.py" -nt "$py_policy" ] || [ wit/plugin.wit -nt "$py_policy" ]; then
  echo "building $py_policy with componentize-py" >&2
  (cd "$example" && "$venv/bin/componentize-py" -d ../../../wit -w policy componentize app -o "$py_policy.tmp")
  mv "$py_policy.tmp" "$py_policy"
fi
export EDGEPM_PYTHON_POLICY="$py_policy"

# --include-ignored: tests that need what this script provides are marked #[ignore] so that a bare
# `cargo test` reports them as not run instead of failing; here they run.
cargo test --workspace --locked "$@" -- --include-ignored
