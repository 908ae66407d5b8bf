"""Writes the two Grafana dashboards of edgepm's cloud data from one panel list, so they show the
same panels: timestream.json (Amazon Timestream data source) and influxdb.json (InfluxDB 3 / Timestream
for InfluxDB 3 through the InfluxDB data source's SQL language). Both read what the sinks write
(docs/operations.md, "Cloud sinks"): measure/measurement `prediction` (probability, is_failure,
model, *_version) and `features` (vibration_rms, ...), dimensions/tags tenant, device, site.

    python3 infrastructure/grafana/generate.py [OUT_DIR]   (default: next to this file)
"""

import json
import sys
from pathlib import Path

TS = "$__database.$__table"

# (title, panel type, Timestream SQL, InfluxDB 3 SQL, format)
PANELS = [
    ("Failure probability by equipment", "timeseries",
     f"SELECT device, time, probability FROM {TS} WHERE measure_name = 'prediction' AND tenant = '${{tenant}}' AND $__timeFilter ORDER BY time",
     "SELECT time, device, probability FROM prediction WHERE tenant = '${tenant}' AND $__timeFilter(time) ORDER BY time",
     "time_series"),
    ("Top 5 by risk (newest window)", "table",
     f"SELECT device, max_by(probability, time) AS probability, max(time) AS at FROM {TS} WHERE measure_name = 'prediction' AND tenant = '${{tenant}}' AND $__timeFilter GROUP BY device ORDER BY probability DESC LIMIT 5",
     "SELECT device, probability, time AS at FROM (SELECT device, probability, time, row_number() OVER (PARTITION BY device ORDER BY time DESC) AS n FROM prediction WHERE tenant = '${tenant}' AND $__timeFilter(time)) WHERE n = 1 ORDER BY probability DESC LIMIT 5",
     "table"),
    ("Windows judged failing, by equipment", "barchart",
     f"SELECT device, count_if(is_failure) AS failing, count(*) AS windows FROM {TS} WHERE measure_name = 'prediction' AND tenant = '${{tenant}}' AND $__timeFilter GROUP BY device ORDER BY failing DESC",
     "SELECT device, sum(CASE WHEN is_failure THEN 1 ELSE 0 END) AS failing, count(*) AS windows FROM prediction WHERE tenant = '${tenant}' AND $__timeFilter(time) GROUP BY device ORDER BY failing DESC",
     "table"),
    ("Vibration RMS by equipment", "timeseries",
     f"SELECT device, time, vibration_rms FROM {TS} WHERE measure_name = 'features' AND tenant = '${{tenant}}' AND $__timeFilter ORDER BY time",
     "SELECT time, device, vibration_rms FROM features WHERE tenant = '${tenant}' AND $__timeFilter(time) ORDER BY time",
     "time_series"),
    ("Degradation: vibration RMS, last 7 days vs the 7 before (medians, >= 15 %)", "table",
     f"WITH w AS (SELECT device, vibration_rms, CASE WHEN time > ago(7d) THEN 'recent' ELSE 'baseline' END AS period FROM {TS} WHERE measure_name = 'features' AND tenant = '${{tenant}}' AND time > ago(14d) AND vibration_rms IS NOT NULL), m AS (SELECT device, period, approx_percentile(vibration_rms, 0.5) AS median, count(*) AS n FROM w GROUP BY device, period) SELECT b.device, b.median AS baseline, r.median AS recent, 100 * (r.median - b.median) / b.median AS rise_percent FROM m b JOIN m r ON r.device = b.device WHERE b.period = 'baseline' AND r.period = 'recent' AND b.n >= 10 AND r.n >= 10 AND r.median >= 1.15 * b.median ORDER BY rise_percent DESC",
     "WITH w AS (SELECT device, vibration_rms, CASE WHEN time > now() - INTERVAL '7 days' THEN 'recent' ELSE 'baseline' END AS period FROM features WHERE tenant = '${tenant}' AND time > now() - INTERVAL '14 days' AND vibration_rms IS NOT NULL), m AS (SELECT device, period, median(vibration_rms) AS median, count(*) AS n FROM w GROUP BY device, period) SELECT b.device, b.median AS baseline, r.median AS recent, 100 * (r.median - b.median) / b.median AS rise_percent FROM m b JOIN m r ON r.device = b.device WHERE b.period = 'baseline' AND r.period = 'recent' AND b.n >= 10 AND r.n >= 10 AND r.median >= 1.15 * b.median ORDER BY rise_percent DESC",
     "table"),
    ("Model and plugin versions serving (newest window)", "table",
     f"SELECT device, max_by(model, time) AS model, max_by(preprocess_version, time) AS preprocess, max_by(score_version, time) AS score, max_by(policy_version, time) AS policy FROM {TS} WHERE measure_name = 'prediction' AND tenant = '${{tenant}}' AND $__timeFilter GROUP BY device ORDER BY device",
     "SELECT device, model, preprocess_version AS preprocess, score_version AS score, policy_version AS policy FROM (SELECT device, model, preprocess_version, score_version, policy_version, row_number() OVER (PARTITION BY device ORDER BY time DESC) AS n FROM prediction WHERE tenant = '${tenant}' AND $__timeFilter(time)) WHERE n = 1 ORDER BY device",
     "table"),
]

SOURCES = {
    "timestream": {
        "plugin": "grafana-timestream-datasource",
        "label": "Amazon Timestream",
        "target": lambda sql, fmt: {"rawQuery": sql, "format": 1 if fmt == "table" else 0},
        "tenants": f"SELECT DISTINCT tenant FROM {TS} WHERE measure_name = 'prediction' AND time > ago(1d)",
    },
    "influxdb": {
        "plugin": "influxdb",
        "label": "InfluxDB (SQL)",
        "target": lambda sql, fmt: {"rawSql": sql, "rawQuery": True, "format": fmt},
        "tenants": "SELECT DISTINCT tenant FROM prediction WHERE time > now() - INTERVAL '1 day'",
    },
}


def dashboard(name: str) -> dict:
    src = SOURCES[name]
    ds = {"type": src["plugin"], "uid": "${datasource}"}
    panels = []
    for i, (title, kind, ts_sql, influx_sql, fmt) in enumerate(PANELS):
        sql = ts_sql if name == "timestream" else influx_sql
        target = {"refId": "A", "datasource": ds, **src["target"](sql, fmt)}
        panels.append({
            "id": i + 1, "title": title, "type": kind, "datasource": ds, "targets": [target],
            "gridPos": {"h": 9, "w": 24 if kind == "timeseries" else 12, "x": 0 if kind == "timeseries" or i % 2 == 0 else 12, "y": 9 * i},
            "fieldConfig": {"defaults": {"unit": "percentunit", "min": 0, "max": 1} if "probability" in title.lower() else {}, "overrides": []},
            "options": {},
        })
    return {
        "title": f"edgepm - equipment health ({src['label']})",
        "uid": f"edgepm-health-{name}",
        "description": "edgepm's predictions and features as the cloud sinks write them (infrastructure/grafana/README.md).",
        "tags": ["edgepm", "predictive-maintenance"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-7d", "to": "now"},
        "refresh": "1m",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": src["plugin"]},
            {"name": "tenant", "label": "Tenant", "type": "query", "datasource": ds,
             "query": src["tenants"], "definition": src["tenants"], "refresh": 2},
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for name in SOURCES:
        (out / f"{name}.json").write_text(json.dumps(dashboard(name), indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {name}.json")
