//! Equipment health over a real store: weeks of simulated windows (the simulator's physics and
//! the `bearing-features` plugin's own feature code, on the simulator's clock — faster than real
//! time), asked through the command line.

use edgepm::sim::{Degradation, Motor};
use edgepm::store::{Durability, History as _, SqliteStore};
use edgepm::types::Features;
use std::process::Command;

const DAY_S: f64 = 86_400.0;

/// Stores one window of every `motor` each `step_min` minutes over `days`, except in the gap
/// `[gap.0, gap.1)` days; window ends at `start_ms + t`. Returns the number of windows stored.
pub fn store_fleet_history(
    store: &SqliteStore,
    motors: &mut [Motor],
    start_ms: i64,
    days: f64,
    step_min: f64,
    gap: (f64, f64),
) -> usize {
    let readings = bearing_features::DEFAULT_WINDOW_SIZE as usize;
    let mut buf = edgepm::dataset::WindowBuffer::default();
    let mut stored = 0;
    for motor in motors.iter_mut() {
        let mut t = step_min * 60.0;
        while t <= days * DAY_S {
            if t >= gap.0 * DAY_S && t < gap.1 * DAY_S {
                t += step_min * 60.0;
                continue;
            }
            let samples = edgepm::sim::DEFAULT_SAMPLES;
            edgepm::dataset::window_features(motor, t, readings, 0.1, samples, start_ms, &mut buf)
                .expect("features");
            let features = Features {
                names: bearing_features::FEATURE_NAMES.iter().map(|n| n.to_string()).collect(),
                values: buf.features.clone(),
            };
            store.record_features(
                &motor.spec.tenant,
                &motor.spec.device,
                start_ms + (t * 1000.0) as i64,
                &features,
            );
            stored += 1;
            t += step_min * 60.0;
        }
    }
    stored
}

fn query(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_edgepm")).arg("query").args(args).output().expect("edgepm query");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn degradation_finds_the_degrading_motors_and_none_of_the_healthy_ones_across_a_gap() {
    let _timing = crate::support::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let store = SqliteStore::open(&data.join("edgepm.db"), Durability::Normal).expect("store");
    // Eight motors over 14 days; the first three develop a bearing defect from day ~5 (failing
    // on day ~16, after the data ends); no data at all from day 9 to day 11 (a gateway offline).
    let mut motors = edgepm::sim::fleet("acme", 8, 3, 5.0 * DAY_S, 16.0 * DAY_S, 7);
    for m in &motors[..3] {
        assert!(matches!(m.spec.degradation, Some(Degradation { .. })));
    }
    let start_ms = 1_743_465_600_000; // 2025-04-01T00:00:00Z
    let n = store_fleet_history(&store, &mut motors, start_ms, 14.0, 30.0, (9.0, 11.0));
    assert_eq!(n, 8 * (14 * 48 - 2 * 48));
    drop(store);

    let data_dir = data.to_str().expect("utf-8 path");
    let (ok, out, err) = query(&["degradation", "--data-dir", data_dir, "--json"]);
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let devices = |key: &str| -> Vec<String> {
        answer[key]
            .as_array()
            .expect(key)
            .iter()
            .map(|t| t["device"].as_str().expect("device").to_string())
            .collect()
    };
    let mut degrading = devices("degrading");
    degrading.sort();
    assert_eq!(degrading, ["MTR-001", "MTR-002", "MTR-003"], "{out}");
    assert_eq!(devices("judged").len(), 8, "every motor judged despite the gap: {out}");
    assert!(devices("not_enough_data").is_empty(), "{out}");
    for t in answer["judged"].as_array().expect("judged") {
        let rise = t["rise_percent"].as_f64().expect("rise");
        if !degrading.contains(&t["device"].as_str().expect("device").to_string()) {
            assert!(rise.abs() < 15.0, "a healthy motor moved {rise} %: {t}");
        }
    }
    // The table names them too.
    let (ok, table, err) = query(&["degradation", "--data-dir", data_dir]);
    assert!(ok && table.contains("MTR-001") && !table.contains("MTR-004"), "{table}{err}");
    // Over the first week alone (as of day 7) nothing degraded yet by 15 %.
    let (ok, out, err) = query(&[
        "degradation",
        "--data-dir",
        data_dir,
        "--json",
        "--days",
        "3.5",
        "--as-of",
        "2025-04-08T00:00:00Z",
    ]);
    assert!(ok, "{err}");
    let early: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(early["judged"].as_array().map(Vec::len), Some(8), "{out}");
    assert_eq!(early["degrading"].as_array().map(Vec::len), Some(0), "{out}");
    // Bad parameters are refused with the reason.
    let (ok, _, err) = query(&["degradation", "--data-dir", data_dir, "--days", "0"]);
    assert!(!ok && err.contains("--days"), "{err}");
    let (ok, _, err) = query(&["degradation", "--data-dir", data_dir, "--as-of", "yesterday"]);
    assert!(!ok && err.contains("--as-of"), "{err}");
    let (ok, _, err) =
        query(&["degradation", "--data-dir", dir.path().join("nowhere").to_str().expect("path")]);
    assert!(!ok && err.contains("does not exist"), "{err}");
}
