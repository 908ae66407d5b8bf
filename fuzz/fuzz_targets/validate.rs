//! The checks of plugin outputs on arbitrary outputs: they never panic, and what they accept is
//! what the host relies on downstream (a probability the wire and the store carry, features that
//! pair up with unique names, bounded sizes everywhere).
#![no_main]

use arbitrary::Arbitrary;
use edgepm_core::types::{Alert, Contribution, Decision, Features, Score, Severity};
use edgepm_core::validate::{self, Limits, MAX_ALERTS, MAX_BODY_BYTES, MAX_NAME_BYTES, MAX_SUBJECT_BYTES};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Output {
    window_size: u32,
    names: Vec<String>,
    values: Vec<f32>,
    probability: f32,
    model: String,
    contributions: Vec<(String, f32)>,
    alerts: Vec<(u8, String, String)>,
    max_features: u8,
}

fuzz_target!(|o: Output| {
    let limits = Limits { max_features: usize::from(o.max_features), ..Limits::default() };
    if validate::window_size(o.window_size, &limits).is_ok() {
        assert!(o.window_size >= 1 && o.window_size <= limits.max_window);
    }
    let features = Features { names: o.names, values: o.values };
    if validate::features(&features, &limits).is_ok() {
        assert_eq!(features.names.len(), features.values.len());
        assert!(features.names.len() <= limits.max_features);
        let unique: std::collections::HashSet<&String> = features.names.iter().collect();
        assert_eq!(unique.len(), features.names.len());
        assert!(features.names.iter().all(|n| !n.is_empty() && n.len() <= MAX_NAME_BYTES));
        assert!(features.values.iter().all(|v| !v.is_infinite()));
        // Every name finds its own value.
        for (n, v) in features.names.iter().zip(&features.values) {
            assert_eq!(features.get(n).map(f32::to_bits), Some(v.to_bits()));
        }
    }
    let score = Score {
        probability: o.probability,
        model: o.model,
        contributions: o.contributions.into_iter().map(|(feature, value)| Contribution { feature, value }).collect(),
    };
    if validate::score(&score, &limits).is_ok() {
        assert!(score.probability.is_finite() && (0.0..=1.0).contains(&score.probability));
        assert!(score.contributions.iter().all(|c| c.value.is_finite()));
        assert!(score.contributions.len() <= limits.max_features);
        // What the wire and the store carry is a number, never null.
        let json = serde_json::to_value(&score).expect("a score serialises");
        assert!(json["probability"].is_number(), "{json}");
    }
    let severities = [Severity::Info, Severity::Warning, Severity::Critical];
    let decision = Decision {
        is_failure: false,
        alerts: o
            .alerts
            .into_iter()
            .map(|(s, subject, body)| Alert { severity: severities[usize::from(s) % 3], subject, body })
            .collect(),
    };
    if validate::decision(&decision).is_ok() {
        assert!(decision.alerts.len() <= MAX_ALERTS);
        assert!(decision.alerts.iter().all(|a| a.subject.len() <= MAX_SUBJECT_BYTES && a.body.len() <= MAX_BODY_BYTES));
    }
});

