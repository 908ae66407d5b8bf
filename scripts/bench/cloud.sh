#!/usr/bin/env bash
# Cloud-sink throughput: a backlog of window records (as an outage leaves it in the outbox)
# drained by one sink's driver into a real server on loopback — InfluxDB 1.x and moto server's
# Timestream — with host/examples/sink_drain.rs; prints windows/s (two records each).
# The telemetry drain with the cloud sinks on vs off is scripts/bench/telemetry.sh with
# HOST_TOML set (docs/benchmarks.md gives the command).
# Usage: scripts/bench/cloud.sh [INFLUX_N=750000] [TIMESTREAM_N=20000]
#   750,000 windows = a 10-minute outage of a 10k readings/s stream at the default hop of 8.
set -euo pipefail
cd "$(dirname "$0")/../.."
INFLUX_N=${1:-750000}; TIMESTREAM_N=${2:-20000}
target=${CARGO_TARGET_DIR:-target}
source scripts/lib/toolchain.sh
command -v influxd >/dev/null || apt-get install -y -qq influxdb >/dev/null
moto_venv=${EDGEPM_MOTO_VENV:-$HOME/.cache/edgepm-moto-venv}
if [ ! -x "$moto_venv/bin/moto_server" ]; then
  python3 -m venv "$moto_venv" && "$moto_venv/bin/pip" install -q -r scripts/lib/moto-requirements.txt
  cp scripts/lib/moto-requirements.txt "$moto_venv/.edgepm-requirements"
fi
"$moto_venv/bin/pip" show -q boto3 >/dev/null 2>&1 || "$moto_venv/bin/pip" install -q boto3
cargo build --release --locked -p edgepm --example sink_drain >&2
drain="$target/release/examples/sink_drain"

work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return; sleep 0.2; done; echo "no answer from $1" >&2; exit 1; }

ip=$(free_port); rpc=$(free_port)
cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
dir = "$work/meta"
[data]
dir = "$work/data"
wal-dir = "$work/wal"
query-log-enabled = false
[http]
bind-address = "127.0.0.1:$ip"
log-enabled = false
[monitor]
store-enabled = false
CONF
influxd -config "$work/influxdb.conf" >"$work/influxd.log" 2>&1 &
wait_http "http://127.0.0.1:$ip/ping"
curl -sf -XPOST "http://127.0.0.1:$ip/query" --data-urlencode 'q=CREATE DATABASE edgepm' >/dev/null
"$drain" influxdb "http://127.0.0.1:$ip" "$INFLUX_N"
curl -s "http://127.0.0.1:$ip/query?db=edgepm" --data-urlencode 'q=SELECT count(probability) FROM prediction' | sed 's/^/influxdb check: /'; echo

mp=$(free_port)
"$moto_venv/bin/moto_server" -H 127.0.0.1 -p "$mp" >"$work/moto.log" 2>&1 &
wait_http "http://127.0.0.1:$mp/moto-api/data.json"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$moto_venv/bin/python" - "$mp" <<'PY'
import sys, boto3
c = boto3.client("timestream-write", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1")
c.create_database(DatabaseName="edgepm"); c.create_table(DatabaseName="edgepm", TableName="telemetry")
PY
"$drain" timestream "http://127.0.0.1:$mp" "$TIMESTREAM_N"
echo "machine: $(nproc) cores, $(date -u +%Y-%m-%d)"
