#!/usr/bin/env python3
"""A large store for timing `edgepm report` (docs/benchmarks.md, "The weekly report").

Takes the store the report test leaves (<target>/test-artifacts/report-2025-W14.db: six motors,
nine simulated days through the demo tenant's pipeline) and writes a copy with every device
repeated `copies` times (MTR-001-000 ...) and its nine days (predictions, alerts, features)
repeated `periods` times, each nine days earlier than the one before.

    python3 scripts/lib/report-bench-store.py <test-artifacts>/report-2025-W14.db OUT_DIR [copies=100] [periods=5]
    edgepm report --week 2025-W14 --data-dir OUT_DIR --out OUT_DIR/report.pdf
"""
import shutil
import sqlite3
import sys

source, out_dir = sys.argv[1], sys.argv[2]
copies = int(sys.argv[3]) if len(sys.argv) > 3 else 100
periods = int(sys.argv[4]) if len(sys.argv) > 4 else 5
SHIFT = 9 * 86_400_000
db = f"{out_dir}/edgepm.db"
shutil.copy(source, db)
c = sqlite3.connect(db)
cols = "tenant, device, ts_ms, start_ms, probability, is_failure, model, versions, contributions, created_ms"
predictions = c.execute(f"SELECT {cols} FROM predictions").fetchall()
alerts = c.execute("SELECT tenant, device, ts_ms, idx, severity, subject, body, probability FROM alerts").fetchall()
assets = c.execute("SELECT tenant, device, attributes, updated_ms FROM assets").fetchall()
features = c.execute("SELECT tenant, device, ts_ms, features FROM features").fetchall()
for table in ("predictions", "alerts", "alert_acks", "devices", "assets", "features"):
    c.execute(f"DELETE FROM {table}")
for k in range(copies):
    name = lambda d: f"{d}-{k:03d}"
    for p in range(periods):
        c.executemany(
            f"INSERT INTO predictions ({cols}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(t, name(d), ts - p * SHIFT, s - p * SHIFT, *rest) for (t, d, ts, s, *rest) in predictions],
        )
        c.executemany(
            "INSERT INTO features VALUES (?,?,?,?)",
            [(t, name(d), ts - p * SHIFT, f) for (t, d, ts, f) in features],
        )
        c.executemany(
            "INSERT INTO alerts VALUES (?,?,?,?,?,?,?,?)",
            [(t, name(d), ts - p * SHIFT, *rest) for (t, d, ts, *rest) in alerts],
        )
    c.executemany("INSERT INTO assets VALUES (?,?,?,?)", [(t, name(d), a, u) for (t, d, a, u) in assets])
    c.executemany(
        "INSERT INTO devices (tenant, device, last_window_ms, last_seen_ms) VALUES (?,?,0,0)",
        [(t, name(d)) for (t, d, _, _) in assets],
    )
c.commit()
n = c.execute("SELECT count(*) FROM predictions").fetchone()[0]
a = c.execute("SELECT count(*) FROM alerts").fetchone()[0]
print(f"{db}: {copies * len(assets)} devices, {n} predictions, {a} alerts")
