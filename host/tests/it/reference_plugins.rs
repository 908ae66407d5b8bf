//! The three reference plugins, loaded as components, on known windows. Expected values are
//! computed here, independently of the plugins' code (direct sums, a naive DFT).

use crate::support::{self, Deployment, T0, onnx};
use edgepm::pipeline::process_window;
use edgepm::types::{Severity, Window};

fn close(a: f32, b: f64, what: &str) {
    let tol = 1e-4 * b.abs().max(1.0);
    assert!(((a as f64) - b).abs() <= tol, "{what}: plugin {a}, expected {b}");
}

/// Features of `w` by the textbook formulas.
fn expected_features(w: &Window) -> Vec<(&'static str, f64)> {
    let vib: Vec<f64> = w.channels[0].samples.iter().map(|&v| v as f64).collect();
    let n = vib.len() as f64;
    let mean = vib.iter().sum::<f64>() / n;
    let rms = (vib.iter().map(|v| v * v).sum::<f64>() / n).sqrt();
    let peak = vib.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let central = |k: i32| vib.iter().map(|v| (v - mean).powi(k)).sum::<f64>() / n;
    let kurtosis = central(4) / central(2).powi(2);
    let skewness = central(3) / central(2).powf(1.5);
    // Naive DFT per 64-sample burst, mean removed, one-sided power normalised to the variance.
    let mut bands = [0.0f64; 4];
    let bursts = vib.chunks(64).count() as f64;
    for burst in vib.chunks(64) {
        let m = burst.iter().sum::<f64>() / 64.0;
        for k in 1..=32usize {
            let (mut re, mut im) = (0.0, 0.0);
            for (t, x) in burst.iter().enumerate() {
                let a = -2.0 * std::f64::consts::PI * (k * t) as f64 / 64.0;
                re += (x - m) * a.cos();
                im += (x - m) * a.sin();
            }
            let power = if k == 32 { 1.0 } else { 2.0 } * (re * re + im * im) / (64.0 * 64.0);
            bands[(k - 1) / 8] += power / bursts;
        }
    }
    let trend = |samples: &[f32]| {
        let t: Vec<f64> =
            w.timestamps_ms.iter().map(|&ms| (ms - w.timestamps_ms[0]) as f64 / 3.6e6).collect();
        let y: Vec<f64> = samples.iter().map(|&v| v as f64).collect();
        let (tm, ym) = (t.iter().sum::<f64>() / t.len() as f64, y.iter().sum::<f64>() / y.len() as f64);
        let sxy: f64 = t.iter().zip(&y).map(|(a, b)| (a - tm) * (b - ym)).sum();
        let sxx: f64 = t.iter().map(|a| (a - tm).powi(2)).sum();
        (ym, sxy / sxx)
    };
    let (tm, ts) = trend(&w.channels[1].samples);
    let (cm, cs) = trend(&w.channels[2].samples);
    vec![
        ("vibration_rms", rms),
        ("vibration_peak", peak),
        ("vibration_crest", peak / rms),
        ("vibration_kurtosis", kurtosis),
        ("vibration_skewness", skewness),
        ("vibration_band_1", bands[0]),
        ("vibration_band_2", bands[1]),
        ("vibration_band_3", bands[2]),
        ("vibration_band_4", bands[3]),
        ("temperature_mean", tm),
        ("temperature_slope", ts),
        ("current_mean", cm),
        ("current_slope", cs),
    ]
}

#[test]
fn reference_plugins_compute_features_score_and_decide() {
    let _timing = support::shared();
    let d = Deployment::new();
    d.add_tenant("acme", "");
    let host = d.open();
    let pipeline = host.tenant("acme").expect("tenant served");
    assert_eq!(pipeline.window_size, 32, "bearing-features asks for 32 readings by default");

    for (i, wear) in [0.0f32, 0.4, 1.5].into_iter().enumerate() {
        let w = support::window("acme", "MTR-042", 32, T0 + i as i64 * 60_000, wear);
        let expected = expected_features(&w);
        let out = process_window(&host, w).expect("window processed");
        let names: Vec<&str> = out.features.names.iter().map(String::as_str).collect();
        assert_eq!(names, expected.iter().map(|(n, _)| *n).collect::<Vec<_>>());
        for ((name, want), got) in expected.iter().zip(&out.features.values) {
            close(*got, *want, name);
        }
        // Score: the tenant's ONNX model through tract, against the closed form.
        let pairs: Vec<(&str, f32)> =
            names.iter().copied().zip(out.features.values.iter().copied()).collect();
        let p = onnx::expected_probability(&pairs);
        assert!((out.score.probability - p).abs() < 1e-5, "probability {} vs {p}", out.score.probability);
        assert_eq!(out.score.model, "bearing@baseline-1");
        assert_eq!(out.decision.is_failure, p > 0.8, "p = {p}");
    }
}

#[test]
fn band_energy_of_a_pure_tone_is_in_its_band() {
    let _timing = support::shared();
    let d = Deployment::new();
    d.add_tenant("acme", "");
    let host = d.open();
    let mut w = support::window("acme", "MTR-1", 32, T0, 0.0);
    // A 2 mm/s-amplitude tone at bin 20 of every burst: all energy (2²/2 = 2) in band 3.
    w.channels[0].samples = (0..32 * 64)
        .map(|i| 2.0 * (2.0 * std::f32::consts::PI * 20.0 * (i % 64) as f32 / 64.0).sin())
        .collect();
    let out = process_window(&host, w).expect("processed");
    let band = |k: usize| out.features.get(&format!("vibration_band_{k}")).expect("band");
    assert!((band(3) - 2.0).abs() < 1e-4, "band 3 = {}", band(3));
    assert!(band(1) + band(2) + band(4) < 1e-6);
    assert!((out.features.get("vibration_rms").expect("rms") - 2f32.sqrt()).abs() < 1e-4);
}

#[test]
fn policy_alerts_once_per_cooldown_with_the_history_line() {
    let _timing = support::shared();
    let d = Deployment::new();
    d.add_tenant("acme", "[settings]\ncooldown_minutes = 30\n");
    let host = d.open();
    // A healthy day, then abnormal vibration from 2025-04-01 onwards (windows an hour apart).
    let start = T0 - 5 * 86_400_000;
    let mut outcomes = Vec::new();
    for h in 0..(5 * 24 + 1) {
        let wear = if h < 24 { 0.0 } else { 3.0 };
        let w = support::window("acme", "MTR-042", 32, start + h * 3_600_000, wear);
        outcomes.push(process_window(&host, w).expect("processed"));
    }
    assert!(outcomes[..24].iter().all(|o| !o.decision.is_failure), "healthy windows raise nothing");
    let failing: Vec<_> = outcomes[24..].iter().collect();
    assert!(failing.iter().all(|o| o.decision.is_failure && o.score.probability > 0.8));
    // Windows are an hour apart and the cool-down is 30 minutes: each failing window alerts.
    let alert = &failing[0].decision.alerts[0];
    assert_eq!(alert.subject, "⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042");
    assert_eq!(alert.severity, Severity::Critical);
    assert!(alert.body.contains("Última leitura: 2025-04-01T10:30:00Z"), "{}", alert.body);
    assert!(alert.body.contains("vibração anormal desde 2025-04-01"), "{}", alert.body);
    let last = &failing.last().expect("windows").decision.alerts[0];
    assert!(last.body.contains("Última leitura: 2025-04-05T10:30:00Z"), "{}", last.body);
    assert!(last.body.contains("vibração anormal desde 2025-04-01"), "{}", last.body);
    assert!(failing.iter().all(|o| o.decision.alerts.len() == 1));

    // Two windows 10 minutes apart: the second is within the cool-down.
    let a = process_window(&host, support::window("acme", "MTR-043", 32, T0, 3.0)).expect("processed");
    let b =
        process_window(&host, support::window("acme", "MTR-043", 32, T0 + 600_000, 3.0)).expect("processed");
    assert_eq!(a.decision.alerts.len(), 1);
    assert!(b.decision.is_failure && b.decision.alerts.is_empty(), "cool-down suppresses the second alert");
}

#[test]
fn tenant_threshold_and_language_come_from_tenant_toml() {
    let _timing = support::shared();
    let d = Deployment::new();
    d.add_tenant("strict", "threshold = 0.999\n");
    d.add_tenant("english", "threshold = 0.5\n[settings]\nlanguage = \"en\"\n");
    let host = d.open();
    // A moderately worn motor: find a wear whose probability lies between the two thresholds.
    let (e, s) = [1.0f32, 1.5, 2.0, 2.5, 3.0]
        .into_iter()
        .find_map(|wear| {
            let mut english = support::window("english", "MTR-9", 32, T0, wear);
            english.tenant = "english".into();
            let e = process_window(&host, english).expect("processed");
            let strict = support::window("strict", "MTR-9", 32, T0, wear);
            let s = process_window(&host, strict).expect("processed");
            (e.score.probability > 0.5 && e.score.probability < 0.999).then_some((e, s))
        })
        .expect("some wear scores between 0.5 and 0.999");
    assert_eq!(s.score.probability, e.score.probability, "same model, same window");
    assert!(!s.decision.is_failure, "0.999 threshold: p = {}", s.score.probability);
    assert!(e.decision.is_failure, "0.5 threshold: p = {}", e.score.probability);
    assert_eq!(e.decision.alerts[0].subject, "⚠️ IMMINENT FAILURE ALERT — Equipment MTR-9");
}

#[test]
fn a_missing_model_is_an_error_result_not_a_trap() {
    let _timing = support::shared();
    let d = Deployment::new();
    d.add_tenant("acme", "model = \"does-not-exist\"\n");
    let host = d.open();
    let err = process_window(&host, support::window("acme", "M", 32, T0, 0.0)).expect_err("no model");
    let text = err.to_string();
    assert!(text.contains("score plugin") && text.contains("does-not-exist"), "{text}");
    assert!(matches!(
        err,
        edgepm::pipeline::PipelineError::Stage { error: edgepm::plugins::CallError::Rejected(_), .. }
    ));
    // Not a trap: no quarantine, still served by the same version.
    assert!(process_window(&host, support::window("acme", "M", 32, T0, 0.0)).is_err());
    let m = host.metrics().encode();
    assert_eq!(support::metric(&m, "edgepm_plugin_quarantines_total", &[]), 0.0);
    assert_eq!(
        support::metric(&m, "edgepm_plugin_calls_total", &[("stage", "score"), ("outcome", "error")]),
        2.0
    );
}
