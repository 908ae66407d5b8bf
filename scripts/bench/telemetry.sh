#!/usr/bin/env bash
# Telemetry throughput and latency through a real mosquitto on loopback, edgepm vs the seed-style
# Python peer, with the workload and method of ../shared/bench/README.md:
#   - drain: N canonical readings (64-sample burst) over DEVICES motors are queued by mosquitto for
#     a persistent QoS 1 session, then the host starts and drains them; readings/s is measured
#     from the first reading stored to the N-th (the readings table keeps each one's receive time);
#   - latency: readings published at a fixed RATE (readings/s, ts = publish time), each prediction
#     matched to the reading that completed its window; publish → prediction received, p50/p99;
#   - the peer (run_peer.sh) drains the same N in the same run: compare the ratio.
# Usage: scripts/bench/telemetry.sh [N=50000] [RATE=10000]
#   DEVICE_SETS="100 1000"   motor counts of the drain runs (the peer runs with the first)
#   DURABILITY="full normal" store durability of the drain runs
#   PEER_DIR  the peer's folder (default ../shared/bench next to the repository); SKIP_PEER=1
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-50000}; RATE=${2:-10000}
PEER_DIR=${PEER_DIR:-$(cd .. && pwd)/shared/bench}
target=${CARGO_TARGET_DIR:-target}
venv=${EDGEPM_BENCH_VENV:-$HOME/.cache/edgepm-bench-venv}
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q paho-mqtt==2.2.0; } >&2
py="$venv/bin/python"
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
cargo build --release --locked -p edgepm >&2
edgepm="$target/release/edgepm"

work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
CONF
"$mosquitto" -c "$work/mosquitto.conf" >"$work/mosq.log" 2>&1 &
sleep 0.5

# A tenant "default" with the reference plugins (window 32, hop 8) and the baseline model.
prepare() {  # $1 data dir, $2 durability
  mkdir -p "$1/plugins/default"
  "$edgepm" plugin export "$1/plugins/default" >/dev/null
  printf 'threshold = 0.8\nmodel = "default"\nhop = 8\n' > "$1/plugins/default/tenant.toml"
  "$edgepm" model baseline "$1/models" >/dev/null
  cat > "$1/edgepm.toml" <<TOML
data_dir = "$1"
watch_plugins = false
[mqtt]
url = "mqtt://127.0.0.1:$port"
client_id = "edgepm-bench-$(basename "$1")"
[store]
durability = "$2"
[limits]
max_age_secs = 315360000  # the workload's timestamps are from 2025
[http]
listen = "127.0.0.1:0"
TOML
}

session() {  # create the persistent session, so the broker queues for it before the host starts
  "$py" - "$port" "$1" <<'PY'
import sys, time, paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=sys.argv[2], clean_session=False)
c.connect("127.0.0.1", int(sys.argv[1])); c.loop_start()
c.subscribe("edgepm/+/+/telemetry", qos=1); time.sleep(0.5); c.loop_stop(); c.disconnect()
PY
}

drain() {  # $1 durability, $2 devices → prints a JSON line
  local d="$work/drain-$1-$2"; prepare "$d" "$1"
  session "edgepm-bench-drain-$1-$2"
  "$py" "$PEER_DIR/gen_load.py" --port "$port" --n "$N" --devices "$2" >&2
  /usr/bin/time -f '%U %S %M' -o "$d/time" "$edgepm" run --config "$d/edgepm.toml" 2>"$d/host.log" &
  local pid=$!
  "$py" - "$d/edgepm.db" "$N" "$pid" "$1" "$d/time" "$2" <<'PY'
import sqlite3, sys, time, os, signal, json
db, n, pid, durability, tfile, devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
while not os.path.exists(db): time.sleep(0.05)
c = sqlite3.connect(db, timeout=30)
deadline = time.time() + 600
while time.time() < deadline:
    try:
        if c.execute("SELECT count(*) FROM readings").fetchone()[0] >= n: break
    except sqlite3.OperationalError: pass
    time.sleep(0.05)
first, last, count = c.execute("SELECT min(received_ms), max(received_ms), count(*) FROM readings").fetchone()
t_stored = time.time()
while c.execute("SELECT count(*) FROM outbox").fetchone()[0] > 0 and time.time() < deadline: time.sleep(0.05)
outbox_lag = time.time() - t_stored
preds = c.execute("SELECT count(*) FROM predictions").fetchone()[0]
os.kill(pid, signal.SIGTERM)
for _ in range(100):  # /usr/bin/time writes its file when edgepm has exited
    if os.path.exists(tfile) and os.path.getsize(tfile) > 0: break
    time.sleep(0.1)
try: user, sys_s, rss = open(tfile).read().split()[-3:]
except Exception: user = sys_s = rss = "nan"
secs = max(last - first, 1) / 1000
print(json.dumps({"engine": "edgepm", "durability": durability, "devices": devices, "readings": count, "predictions": preds,
                  "seconds": round(secs, 2), "readings_per_s": round(count / secs),
                  "outbox_drained_after_s": round(outbox_lag, 2),
                  "cpu_user_s": float(user), "cpu_sys_s": float(sys_s), "max_rss_kb": int(float(rss))}))
PY
  wait "$pid" 2>/dev/null || true
}

latency() {  # fixed-rate publish → prediction latency, durability full
  local d="$work/latency"; prepare "$d" full
  session "edgepm-bench-latency"
  "$edgepm" run --config "$d/edgepm.toml" 2>"$d/host.log" &
  local pid=$!
  sleep 2
  "$py" scripts/bench/latency.py --port "$port" --rate "$RATE" --devices 1000 --seconds 20
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

sets=${DEVICE_SETS:-100 1000}
echo "# $(date -u +%FT%TZ) N=$N RATE=$RATE $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for devices in $sets; do
  for dur in ${DURABILITY:-full normal}; do drain "$dur" "$devices"; done
done
latency
if [ -z "${SKIP_PEER:-}" ]; then
  DEVICES=${sets%% *} "$PEER_DIR/run_peer.sh" "$N"
fi
