#!/usr/bin/env python3
"""Publish → prediction latency at a fixed rate, through the broker and the host.

Publishes canonical readings (ts = wall-clock ms, 64-sample burst) round-robin over --devices
motors at --rate readings/s for --seconds. A subscriber in another process records when each
prediction arrives; the publisher records when it published each reading that completes a window
(the 32nd, 40th, ... of a device: window 32, hop 8). Latency = prediction received − that reading
published, on CLOCK_MONOTONIC shared by both processes. Prints one JSON line."""
import argparse, json, multiprocessing as mp, random, time
from datetime import datetime
import paho.mqtt.client as mqtt

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--rate", type=float, default=10000)
ap.add_argument("--devices", type=int, default=1000)
ap.add_argument("--seconds", type=float, default=20)
ap.add_argument("--window", type=int, default=32)
ap.add_argument("--hop", type=int, default=8)
ap.add_argument("--subscribe-only", action="store_true",
                help="only receive predictions for --seconds (readings come from a native publisher, e.g. "
                     "`edgepm simulate`) and measure against their timestamps: received − window end, 1 ms resolution")
a = ap.parse_args()


def subscriber(port, ready, stop, out):
    got = []
    def on_message(c, u, msg):
        p = json.loads(msg.payload)
        got.append((p["device"], p["timestamp"], time.monotonic()))
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="latency-sub")
    c.on_message = on_message
    c.connect("127.0.0.1", port); c.subscribe("edgepm/+/+/prediction", qos=1); c.loop_start()
    time.sleep(0.5); ready.set(); stop.wait(); time.sleep(3); c.loop_stop()
    out.put(got)


def ms(ts):
    return round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def subscribe_only():
    got = []
    def on_message(c, u, msg):
        p = json.loads(msg.payload)
        got.append(time.time() * 1000 - ms(p["timestamp"]))
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="latency-sub")
    c.on_message = on_message
    c.connect("127.0.0.1", a.port); c.subscribe("edgepm/+/+/prediction", qos=1); c.loop_start()
    time.sleep(a.seconds); c.loop_stop()
    lat = sorted(got)
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None
    print(json.dumps({"engine": "edgepm", "publisher": "edgepm simulate", "predictions_received": len(lat),
                      "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": pct(1.0),
                      "resolution_ms": 1}))


if __name__ == "__main__" and a.subscribe_only:
    subscribe_only()
elif __name__ == "__main__":
    ready, stop, out = mp.Event(), mp.Event(), mp.Queue()
    sub = mp.Process(target=subscriber, args=(a.port, ready, stop, out)); sub.start(); ready.wait()
    rng = random.Random(7)
    bodies = [", ".join(f"{rng.gauss(0, 0.3):.4f}" for _ in range(64)) for _ in range(64)]
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="latency-pub")
    c.max_inflight_messages_set(5000); c.max_queued_messages_set(0)
    c.connect("127.0.0.1", a.port); c.loop_start()
    sent, counts, marks, last_ts = 0, [0] * a.devices, {}, [0] * a.devices
    t0 = time.monotonic()
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= a.seconds: break
        due = int(elapsed * a.rate)
        while sent < due:
            d = sent % a.devices
            ts = max(int(time.time() * 1000), last_ts[d] + 1); last_ts[d] = ts
            payload = '{"ts": %d, "vibration": [%s], "temperature": %.2f, "current": %.2f}' % (
                ts, bodies[sent % 64], 60 + (sent % 10), 10 + (sent % 3))
            c.publish(f"edgepm/default/MTR-{d:04d}/telemetry", payload, qos=1)
            counts[d] += 1
            k = counts[d]
            if k >= a.window and (k - a.window) % a.hop == 0:
                marks[(f"MTR-{d:04d}", ts)] = time.monotonic()
            sent += 1
        time.sleep(0.0005)
    achieved = sent / (time.monotonic() - t0)
    stop.set(); got = out.get(); sub.join(); c.loop_stop(); c.disconnect()
    lat = sorted((t - marks[(dev, ms(ts))]) * 1000 for dev, ts, t in got if (dev, ms(ts)) in marks)
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None
    print(json.dumps({"engine": "edgepm", "rate_target": a.rate, "rate_achieved": round(achieved),
                      "predictions_matched": len(lat), "predictions_received": len(got),
                      "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": pct(1.0)}))
