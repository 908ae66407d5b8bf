"""Lead times and false alarms of the real-bearing pipeline on simulated motors at the simulator's
own time scale (models/sim-days.sh runs the motors; this reads the replays).

    python3 models/sim_days.py <motors.csv> <replays dir> <out.csv>

motors.csv: group, device, fault, fs_hz, life_days, onset_life (% of the life at which the defect
starts; 100 for a healthy motor). The replays dir holds <model>/<group>-<device>.csv, the output of
`edgepm replay --recording` (snapshot, device, timestamp, minutes_to_end, life, probability,
is_failure, ...). Definitions:

- an alarm episode is a run of consecutive windows called failures (p >= the tenant's threshold);
- a false alarm is an episode that starts while the bearing has no defect (a healthy motor, or a
  failing one before its defect's onset), counted per motor-month (720 h) of such healthy running;
- the lead of a failing motor is the time from its first window called a failure at or after the
  defect's onset to its failure (0 when never called); a motor is warned when that lead is > 0;
- "over 72 h" repeats bearing-xgb's definition (models/README.md): episodes that start more than
  72 h before a failure or on a healthy motor, per 720 observed motor-hours.

Standard library only.
"""

import csv
import pathlib
import statistics
import sys

MONTH_H = 720.0
HORIZON_H = 72.0


def motor_result(model, motor, rows):
    onset = float(motor["onset_life"]) / 100.0
    # minutes_to_end = (1 - life) × span, the recording's span from its first snapshot to its end.
    first = rows[0]
    span_h = float(first["minutes_to_end"]) / 60.0 / max(1e-9, 1.0 - float(first["life"]))
    failing = motor["fault"] != "healthy"
    lead_h, false_alarms, over_72h, previous = 0.0, 0, 0, False
    max_p_healthy = 0.0
    for r in rows:
        life, p, alarm = float(r["life"]), float(r["probability"]), r["is_failure"] == "1"
        to_end_h = float(r["minutes_to_end"]) / 60.0
        healthy = not failing or life < onset
        if healthy:
            max_p_healthy = max(max_p_healthy, p)
        if alarm and not previous:
            false_alarms += healthy
            over_72h += not failing or to_end_h > HORIZON_H
        if alarm and failing and not healthy and lead_h == 0.0:
            lead_h = to_end_h
        previous = alarm
    return {
        "model": model,
        **motor,
        "windows": len(rows),
        "hours": round(span_h, 1),
        "healthy_hours": round(span_h * (onset if failing else 1.0), 1),
        "lead_h": round(lead_h, 1),
        "lead_pct_of_life": round(100.0 * lead_h / span_h, 1) if failing else "",
        "false_alarms": false_alarms,
        "episodes_over_72h": over_72h,
        "max_p_without_defect": round(max_p_healthy, 3),
    }


def summary(model, results):
    failing = [r for r in results if r["fault"] != "healthy"]
    leads = [r["lead_h"] for r in failing]
    healthy_h = sum(r["healthy_hours"] for r in results)
    hours = sum(r["hours"] for r in results)
    false_alarms = sum(r["false_alarms"] for r in results)
    over_72h = sum(r["episodes_over_72h"] for r in results)
    line = [
        f"`{model}`",
        f"{len(results)} ({len(failing)} failing)",
        f"{sum(lead > 0 for lead in leads)}/{len(failing)}",
        f"{statistics.median(leads):.0f} h" if leads else "",
        f"{min(leads):.0f} h" if leads else "",
        f"{sum(lead >= 24 for lead in leads)}/{len(failing)}",
        f"{false_alarms} in {healthy_h / MONTH_H:.1f} motor-months = {false_alarms / (healthy_h / MONTH_H):.2f}",
        f"{over_72h / (hours / MONTH_H):.2f}",
        f"{max(r['max_p_without_defect'] for r in results):.3f}",
    ]
    return "| " + " | ".join(line) + " |"


def main(motors_csv, replays, out_csv):
    motors = list(csv.DictReader(open(motors_csv)))
    results = []
    for model_dir in sorted(pathlib.Path(replays).iterdir()):
        for motor in motors:
            path = model_dir / f"{motor['group']}-{motor['device']}.csv"
            if not path.exists():  # a model that cannot score this motor (the CNN at 12 kHz)
                continue
            rows = list(csv.DictReader(open(path)))
            if rows:
                results.append(motor_result(model_dir.name, motor, rows))
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    print(
        "| model | motors | failing warned | median lead | shortest lead | lead ≥ 24 h"
        " | false alarms (no defect) per motor-month | episodes over 72 h per motor-month"
        " | highest p without a defect |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model in sorted({r["model"] for r in results}):
        print(summary(model, [r for r in results if r["model"] == model]))
    print()
    print("| model | failing group | fs | life | onset | leads |")
    print("|---|---|---|---|---|---|")
    for model in sorted({r["model"] for r in results}):
        groups = {}
        for r in results:
            if r["model"] == model and r["fault"] != "healthy":
                groups.setdefault(r["group"], []).append(r)
        for group, rs in groups.items():
            leads = ", ".join(f"{r['lead_h']:.0f} h ({r['lead_pct_of_life']} %)" for r in rs)
            r = rs[0]
            print(
                f"| `{model}` | {r['fault']} | {float(r['fs_hz']) / 1000:g} kHz | {r['life_days']} d"
                f" | {r['onset_life']} % | {leads} |"
            )


if __name__ == "__main__":
    main(*sys.argv[1:])
