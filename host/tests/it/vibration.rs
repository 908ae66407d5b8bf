//! Real accelerometers through the live path: the shipped tenant `vibration` deployed with one
//! command, an asset record naming the bearing, bursts that say what they measure (sample rate,
//! unit, compact base64 i16 samples) published to mosquitto, `edgepm run` scoring them on the
//! contract 0.2.0 preprocessor with baselines from the store, then the bearing replaced (a new
//! baseline from the asset record's `baseline_since`) — checked with a separate subscriber and by
//! reading the SQLite store directly.

use crate::support::broker::{HostProcess, Mosquitto};
use crate::support::wait_until;
use base64::Engine as _;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const FS: f64 = 25_600.0;
const SAMPLES: usize = 2_560;

/// One 0.1 s burst in g: noise of ~0.4 g RMS, and with `defect` impacts at the FEMTO bearing's
/// outer-race frequency (1,800 rpm) ringing at 4 kHz.
fn burst(seed: u64, defect: bool) -> Vec<f32> {
    let bpfo = bearing_features::spectrum::FEMTO_BEARING.frequencies(30.0).expect("geometry").bpfo;
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut since = 0.0f64;
    (0..SAMPLES)
        .map(|_| {
            let mut v = 0.7 * (0..4).map(|_| uniform()).sum::<f64>();
            if defect {
                v += 2.5 * (-since / 4e-4).exp() * (2.0 * std::f64::consts::PI * 4_000.0 * since).sin();
            }
            since += 1.0 / FS;
            if since >= 1.0 / bpfo {
                since -= 1.0 / bpfo;
            }
            v as f32
        })
        .collect()
}

/// A telemetry payload whose burst travels as base64 of little-endian i16 in milli-g.
fn payload(ts_ms: i64, x: &[f32]) -> String {
    let bytes: Vec<u8> = x.iter().flat_map(|v| ((v * 1000.0).round() as i16).to_le_bytes()).collect();
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        r#"{{"ts":{ts_ms},"vibration":{{"fs_hz":{FS},"unit":"g","encoding":"i16le","scale":0.001,"data":"{data}"}},"temperature":48.5}}"#
    )
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn accelerometer_bursts_are_scored_against_each_machines_own_baseline() {
    let _timing = crate::support::shared();
    let broker = Mosquitto::start();
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let o = Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .args(["tenant", "deploy", "vibration", "--plugins-dir"])
        .arg(data.join("plugins"))
        .arg("--models-dir")
        .arg(data.join("models"))
        .output()
        .expect("edgepm tenant deploy");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A one-minute commissioning period: the first six readings (10 s apart) make the baseline.
    let toml_path = data.join("plugins/vibration/tenant.toml");
    let toml = std::fs::read_to_string(&toml_path).expect("tenant.toml");
    std::fs::write(&toml_path, toml.replace("baseline_minutes = 10", "baseline_minutes = 1")).expect("write");
    let mut host = HostProcess::start(root.path(), &data, &broker.url(), "");
    let sub = broker.subscribe(&["edgepm/vibration/+/prediction", "edgepm/vibration/deadletter"]);

    // The bearing's geometry and shaft speed come from the asset registry.
    broker.publish_lines(
        "edgepm/vibration/PUMP-7/asset",
        &[r#"{"balls":13,"ball_diameter_mm":3.5,"pitch_diameter_mm":25.6,"rpm":1800,"site":"Plant A"}"#
            .into()],
    );
    let registered = wait_until(Duration::from_secs(20), || host.count("SELECT count(*) FROM assets") == 1);
    assert!(registered.is_some(), "the asset record is stored");

    // 20 healthy bursts, then 10 with an outer-race defect, 10 s apart, ending a minute ago, sent
    // at once (a gateway catching up): the windows that complete in one batch are processed one
    // round per window of the device, so each preprocessor sees the baseline of those before it.
    let (healthy, failing) = (20usize, 10usize);
    let start = edgepm::clock::now_ms() - 60_000 - (healthy + failing) as i64 * 10_000;
    let lines: Vec<String> = (0..healthy + failing)
        .map(|i| payload(start + i as i64 * 10_000, &burst(i as u64, i >= healthy)))
        .collect();
    assert!(lines[0].len() < 8_000, "compact: {} bytes for 2,560 samples", lines[0].len());
    let predictions_seen =
        |m: &[(String, String)]| m.iter().filter(|(t, _)| t.ends_with("/prediction")).count();
    broker.publish_lines("edgepm/vibration/PUMP-7/telemetry", &lines);

    // Windows of 4 readings, one per reading: 27 predictions, seen by a separate subscriber.
    let windows = healthy + failing - 3;
    let msgs = sub.wait_for(Duration::from_secs(60), |m| predictions_seen(m) >= windows);
    let predictions: Vec<Value> = msgs
        .iter()
        .filter(|(t, _)| t == "edgepm/vibration/PUMP-7/prediction")
        .map(|(_, p)| serde_json::from_str(p).expect("JSON"))
        .collect();
    assert_eq!(predictions.len(), windows, "{msgs:?}");
    assert!(!msgs.iter().any(|(t, _)| t.ends_with("/deadletter")), "{msgs:?}");
    for p in &predictions {
        assert!(p["model"].as_str().is_some_and(|m| m.starts_with("bearing-spectrum-xgb@")), "{p}");
        let prob = p["probability"].as_f64().expect("probability");
        assert!((0.0..=1.0).contains(&prob), "{p}");
    }

    // The store: readings kept with their description, features relative to the baseline, the
    // baseline of the finished commissioning period kept in its table.
    let store = host.store();
    let feature = |row: usize, name: &str| -> f64 {
        let json: String = store
            .query_row("SELECT features FROM features ORDER BY ts_ms LIMIT 1 OFFSET ?1", [row as i64], |r| {
                r.get(0)
            })
            .expect("features row");
        let v: Value = serde_json::from_str(&json).expect("JSON");
        v[name].as_f64().unwrap_or_else(|| panic!("{name} in {json}"))
    };
    assert_eq!(feature(0, "vib_rms_rel"), 1.0, "the first window is its own baseline");
    assert_ne!(feature(5, "vib_rms_rel"), 1.0, "later windows see the baseline of those before them");
    assert!((feature(0, "vib_rms_g") - 0.4).abs() < 0.05, "levels in g: {}", feature(0, "vib_rms_g"));
    assert!(feature(0, "temperature_mean") > 48.0);
    let early = (0..healthy - 3).map(|r| feature(r, "vib_rms_rel")).fold(0.0, f64::max);
    let late = feature(windows - 1, "vib_rms_rel");
    assert!(early < 1.15 && late > early + 0.1, "healthy up to {early}, failing {late}");
    assert!(feature(windows - 1, "vib_bpfo_prominence") > 2.0 * feature(0, "vib_bpfo_prominence"));
    let baseline: f64 = store
        .query_row(
            "SELECT value FROM baselines WHERE tenant = 'vibration' AND device = 'PUMP-7' AND feature = 'vib_rms_g'",
            [],
            |r| r.get(0),
        )
        .expect("a final baseline of vib_rms_g");
    assert!((baseline - 0.4).abs() < 0.05, "{baseline}");
    let blob: Vec<u8> =
        store.query_row("SELECT channels FROM readings LIMIT 1", [], |r| r.get(0)).expect("a reading");
    let (_, described) = edgepm::store::decode_channels(&blob).expect("decodes");
    assert_eq!(described[0].fs_hz, Some(FS));
    assert_eq!(described[0].unit.as_deref(), Some("g"));

    // The bearing is replaced: the asset record says since when (`baseline_since`), and the new
    // bearing runs quieter (~0.25 g) than the old one's baseline (0.4 g). Its windows are relative
    // to its own commissioning period, not to the old bearing's: ≈ 1, not ≈ 0.6. 25 bursts 3 s
    // apart: the one-minute period ends within them, and its baseline is kept beside the old one.
    let replaced_ms = start + (healthy + failing) as i64 * 10_000;
    broker.publish_lines(
        "edgepm/vibration/PUMP-7/asset",
        &[format!(
            r#"{{"balls":13,"ball_diameter_mm":3.5,"pitch_diameter_mm":25.6,"rpm":1800,"site":"Plant A","baseline_since":{replaced_ms}}}"#
        )],
    );
    let updated = wait_until(Duration::from_secs(20), || {
        host.count("SELECT count(*) FROM assets WHERE attributes LIKE '%baseline_since%'") == 1
    });
    assert!(updated.is_some(), "the new asset record is stored");
    let new_bearing = 25usize;
    let lines: Vec<String> = (0..new_bearing)
        .map(|i| {
            let quiet: Vec<f32> = burst(1_000 + i as u64, false).iter().map(|v| v * 0.625).collect();
            payload(replaced_ms + 1_000 + i as i64 * 3_000, &quiet)
        })
        .collect();
    broker.publish_lines("edgepm/vibration/PUMP-7/telemetry", &lines);
    let all = windows + new_bearing;
    let msgs = sub.wait_for(Duration::from_secs(60), |m| predictions_seen(m) >= all);
    assert_eq!(predictions_seen(&msgs), all, "{msgs:?}");
    let last = all - 1;
    let (rms, rel) = (feature(last, "vib_rms_g"), feature(last, "vib_rms_rel"));
    assert!((rms / 0.4 - 0.625).abs() < 0.1, "the new bearing is quieter: {rms} g");
    assert!((rel - 1.0).abs() < 0.1, "relative to its own baseline: {rel}");
    let kept: Vec<f64> = store
        .prepare(
            "SELECT value FROM baselines WHERE device = 'PUMP-7' AND feature = 'vib_rms_g' ORDER BY value",
        )
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("baselines");
    assert_eq!(kept.len(), 2, "the old bearing's baseline and the new one's: {kept:?}");
    assert!((kept[0] - 0.25).abs() < 0.04 && (kept[1] - 0.4).abs() < 0.05, "{kept:?}");
    host.stop();
}
