#!/usr/bin/env bash
# Telemetry throughput and latency through a real mosquitto on loopback, edgepm vs the seed-style
# Python peer (kept next to the repository, PEER_DIR), with the same workload and method:
#   - drain: N canonical readings (64-sample burst) over DEVICES motors are queued by mosquitto for
#     a persistent QoS 1 session, then the host starts and drains them; readings/s is measured
#     from the first reading stored to the N-th (the readings table keeps each one's receive time);
#   - the peer (run_peer.sh) drains the same N after each round of drains: compare the ratio;
#   - latency: `edgepm simulate --measure-latency` publishes at a fixed rate (readings/s) and
#     times each prediction from the publication of the reading that completed its window; the
#     same runs against the latency floor (host/examples/latency_floor.rs: a client that answers
#     every 8th reading of a device at once, no store, no plugins) give what the broker, the
#     simulator and the two shared cores cost by themselves.
# The machines are shared and noisy (the same drain gives 31k–61k readings/s minutes apart), so
# the drains and the peer run REPEAT rounds and the last lines give the medians and their ratio.
# Usage: scripts/bench/telemetry.sh [N=50000] [RATE=10000]
#   DEVICE_SETS="100 1000"   motor counts of the drain runs (the peer runs with the first)
#   DURABILITY="full normal" store durability of the drain and latency runs
#   REPEAT=3                 rounds of drains (each followed by a peer run)
#   LATENCY_RATES="1000 RATE" rates of the staggered latency runs (RATE/10 motors × 10 readings/s);
#                            the lockstep run is at RATE only
#   EDGEPM=<binary>          benchmark this build instead of building target/release/edgepm
#   HOST_TOML="[windows]..." appended to the host's edgepm.toml (e.g. tenant_budget_ms = 0)
#   LATENCY_FLOOR=<binary>   the latency floor client (default: built next to edgepm)
#   PEER_DIR  the peer's folder (default: shared/bench beside the repository's folder); SKIP_PEER=1,
#   SKIP_LATENCY=1 leave those runs out
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-50000}; RATE=${2:-10000}; REPEAT=${REPEAT:-3}
PEER_DIR=${PEER_DIR:-$(cd .. && pwd)/shared/bench}
target=${CARGO_TARGET_DIR:-target}
venv=${EDGEPM_BENCH_VENV:-$HOME/.cache/edgepm-bench-venv}
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q paho-mqtt==2.2.0; } >&2
py="$venv/bin/python"
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if [ -n "${EDGEPM:-}" ]; then
  edgepm=$EDGEPM
else
  source scripts/lib/toolchain.sh
  cargo build --release --locked -p edgepm >&2
  edgepm="$target/release/edgepm"
fi
floor_bin=${LATENCY_FLOOR:-$target/release/examples/latency_floor}
if [ -z "${SKIP_LATENCY:-}" ] && [ -z "${LATENCY_FLOOR:-}" ]; then
  cargo build --release --locked -p edgepm --example latency_floor >&2
fi

work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
# Without it mosquitto's small packets wait for delayed ACKs (Nagle): +25 ms per message here.
set_tcp_nodelay true
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
retention_days = 0  # the workload's timestamps are from 2025: do not purge them
[limits]
max_age_secs = 315360000  # the workload's timestamps are from 2025
[http]
listen = "127.0.0.1:0"
${HOST_TOML:-}
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

end_session() {  # drop the persistent session once its run is over: otherwise the broker goes on
  # queueing every later run's readings for it, and each run pays for all the earlier ones
  "$py" - "$port" "$1" <<'PY'
import sys, time, paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=sys.argv[2], clean_session=True)
c.connect("127.0.0.1", int(sys.argv[1])); c.loop_start(); time.sleep(0.2); c.loop_stop(); c.disconnect()
PY
}

drain() {  # $1 durability, $2 devices, $3 round → prints a JSON line
  local d="$work/drain-$1-$2-$3"; prepare "$d" "$1"
  session "edgepm-bench-drain-$1-$2-$3"
  "$py" "$PEER_DIR/gen_load.py" --port "$port" --n "$N" --devices "$2" >&2
  /usr/bin/time -f '%U %S %M' -o "$d/time" "$edgepm" run --config "$d/edgepm.toml" 2>"$d/host.log" &
  local pid=$!
  "$py" - "$d/edgepm.db" "$N" "$1" "$2" "$3" > "$d/result.json" <<'PY'
import sqlite3, sys, time, os, json
db, n, durability, devices, rnd = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
while not os.path.exists(db): time.sleep(0.05)
c = sqlite3.connect(db, timeout=30)
deadline = time.time() + 600
while time.time() < deadline:
    try:
        # max(rowid), not count(*): a count scans the whole table, every 50 ms, on the cores the
        # host is measured on (rowids are dense here: nothing is deleted during the run).
        if (c.execute("SELECT max(rowid) FROM readings").fetchone()[0] or 0) >= n: break
    except sqlite3.OperationalError: pass
    time.sleep(0.05)
first, last, count = c.execute("SELECT min(received_ms), max(received_ms), count(*) FROM readings").fetchone()
t_stored = time.time()
while c.execute("SELECT count(*) FROM outbox").fetchone()[0] > 0 and time.time() < deadline: time.sleep(0.05)
outbox_lag = time.time() - t_stored
preds = c.execute("SELECT count(*) FROM predictions").fetchone()[0]
secs = max(last - first, 1) / 1000
print(json.dumps({"engine": "edgepm", "round": rnd, "durability": durability, "devices": devices, "readings": count,
                  "predictions": preds, "seconds": round(secs, 2), "readings_per_s": round(count / secs),
                  "outbox_drained_after_s": round(outbox_lag, 2)}))
PY
  pkill -TERM -P "$pid" || true  # edgepm, the child of /usr/bin/time (which would die without reporting)
  wait "$pid" 2>/dev/null || true
  end_session "edgepm-bench-drain-$1-$2-$3"
  "$py" - "$d/result.json" "$d/time" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
user, sys_s, rss = open(sys.argv[2]).read().split()[-3:]
r.update({"cpu_user_s": float(user), "cpu_sys_s": float(sys_s), "max_rss_kb": int(rss)})
print(json.dumps(r))
PY
}

latency() {  # fixed-rate publish → prediction latency; $1 durability, $2 readings/s, $3 stagger s
  local d="$work/latency-$1-$2-$3"; prepare "$d" "$1"
  session "edgepm-bench-latency-$1-$2-$3"
  "$edgepm" run --config "$d/edgepm.toml" 2>"$d/host.log" &
  local pid=$!
  sleep 2
  # The native simulator publishes ($2/10 motors × 10 readings/s; a Python publisher peaks near
  # 2.6k/s here) and measures itself: --measure-latency subscribes to the predictions and times
  # each from the moment its window's last reading was handed to the MQTT client (one process,
  # one clock, microsecond resolution).
  "$edgepm" simulate --broker "mqtt://127.0.0.1:$port" --motors "$(( $2 / 10 ))" --rate 10 --failing 0 \
    --stagger "$3" --duration 20 --measure-latency 2>/dev/null | tail -1 > "$d/latency.json"
  local wal; wal=$(stat -c %s "$d/edgepm.db-wal" 2>/dev/null || echo 0)
  "$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); r.update({"engine": "edgepm", "rate": int(sys.argv[2]), "durability": sys.argv[3], "stagger_s": float(sys.argv[4]), "wal_bytes": int(sys.argv[5])}); print(json.dumps(r))' \
    "$d/latency.json" "$2" "$1" "$3" "$wal"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  end_session "edgepm-bench-latency-$1-$2-$3"
}

floor() {  # the same run against the latency floor client; $1 readings/s, $2 stagger s
  "$floor_bin" "mqtt://127.0.0.1:$port" 8 2>/dev/null &
  local pid=$!
  sleep 1
  "$edgepm" simulate --broker "mqtt://127.0.0.1:$port" --motors "$(( $1 / 10 ))" --rate 10 --failing 0 \
    --stagger "$2" --duration 20 --measure-latency 2>/dev/null | tail -1 \
    | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read()); r.update({"engine": "floor", "rate": int(sys.argv[1]), "stagger_s": float(sys.argv[2])}); print(json.dumps(r))' "$1" "$2"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

sets=${DEVICE_SETS:-100 1000}
results="$work/results.jsonl"
echo "# $(date -u +%FT%TZ) N=$N RATE=$RATE REPEAT=$REPEAT $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for round in $(seq "$REPEAT"); do
  for devices in $sets; do
    for dur in ${DURABILITY:-full normal}; do drain "$dur" "$devices" "$round" | tee -a "$results"; done
  done
  if [ -z "${SKIP_PEER:-}" ]; then
    DEVICES=${sets%% *} "$PEER_DIR/run_peer.sh" "$N" \
      | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); r.update({"engine": "peer", "round": int(sys.argv[1]), "devices": int(sys.argv[2])}); print(json.dumps(r))' \
        "$round" "${sets%% *}" | tee -a "$results"
  fi
done
# Staggered: the motors are switched on over one hop (8 readings at 10/s), each then publishing
# on its own clock, so their windows are spread evenly in time as in a fleet of independent
# devices. Lockstep: all switched on within one reading period, so every window of the fleet
# completes within the same 0.1 s, once per hop (the worst case).
if [ -z "${SKIP_LATENCY:-}" ]; then
  for dur in ${DURABILITY:-full normal}; do
    for rate in ${LATENCY_RATES:-1000 $RATE}; do latency "$dur" "$rate" 0.8; done
    latency "$dur" "$RATE" 0
  done
  for rate in ${LATENCY_RATES:-1000 $RATE}; do floor "$rate" 0.8; done
  floor "$RATE" 0
fi
# Medians of the rounds, and their ratio to the peer's median.
"$py" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
peer = [r["readings_per_s"] for r in rows if r["engine"] == "peer"]
peer_median = statistics.median(peer) if peer else None
keys = sorted({(r["devices"], r["durability"]) for r in rows if r["engine"] == "edgepm"})
for devices, durability in keys:
    runs = [r["readings_per_s"] for r in rows if r["engine"] == "edgepm" and (r["devices"], r["durability"]) == (devices, durability)]
    m = statistics.median(runs)
    out = {"summary": "drain", "devices": devices, "durability": durability, "runs": runs, "median": round(m)}
    if peer_median:
        out["ratio_to_peer_median"] = round(m / peer_median, 2)
    print(json.dumps(out))
if peer:
    print(json.dumps({"summary": "peer", "runs": peer, "median": round(peer_median)}))
PY
