#!/usr/bin/env python3
"""Windows (JSON lines, the host's window format) of one motor that starts healthy and develops a
bearing defect: growing vibration with periodic impacts, then heat and current. A stand-in until
the simulator (`edgepm simulate`) publishes real telemetry; deterministic (seeded)."""
import argparse, json, math, random

ap = argparse.ArgumentParser()
ap.add_argument("--tenant", default="default")
ap.add_argument("--device", default="MTR-042")
ap.add_argument("--windows", type=int, default=12)
ap.add_argument("--readings", type=int, default=32)
ap.add_argument("--start-ms", type=int, default=1_743_500_000_000)
a = ap.parse_args()
rng = random.Random(42)
for i in range(a.windows):
    wear = max(0.0, (i - a.windows / 2) / (a.windows / 2)) * 3.0
    end = a.start_ms + i * 3_600_000
    ts = [end - (a.readings - 1 - k) * 1000 for k in range(a.readings)]
    vib = []
    for _ in range(a.readings):
        for k in range(64):
            impact = 6.0 * wear if wear > 0 and k % 16 == 0 else 0.0
            vib.append((1 + wear) * 1.2 * math.sin(2 * math.pi * 5 * k / 64) + 0.3 * rng.uniform(-1, 1) + impact)
    w = {
        "tenant": a.tenant, "device": a.device, "start_ms": ts[0], "end_ms": end, "timestamps_ms": ts,
        "channels": [
            {"name": "vibration", "samples": [round(v, 4) for v in vib], "samples_per_reading": 64},
            {"name": "temperature", "samples": [round(65 + 8 * wear + rng.uniform(-0.1, 0.1), 3) for _ in ts], "samples_per_reading": 1},
            {"name": "current", "samples": [round(11 + 1.5 * wear + rng.uniform(-0.05, 0.05), 3) for _ in ts], "samples_per_reading": 1},
        ],
        "asset": [["site", "plant-1"]],
    }
    print(json.dumps(w))
