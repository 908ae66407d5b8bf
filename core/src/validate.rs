//! What a plugin returns is untrusted: every value that crosses into the host is checked here,
//! before anything else of the host sees it. A violation fails the call as the host's
//! `CallError::InvalidOutput`, which counts towards quarantine like a trap: a plugin that
//! returns garbage is as broken as one that crashes.
//!
//! The checks are what the contract (`wit/plugin.wit`) promises the host and the outputs need:
//! a probability the wire and the store can carry (finite, within [0, 1]), features whose names
//! and values pair up, unique names, bounded sizes everywhere.

use crate::types::{Decision, Features, Score};
use std::collections::HashSet;

/// Default largest `window-size` (readings the host keeps per device).
pub const DEFAULT_MAX_WINDOW: u32 = 10_000;
/// Default most features a preprocessor may return (and contributions a scorer).
pub const DEFAULT_MAX_FEATURES: usize = 1024;

/// The bounds of a tenant's `[limits]` (`tenant.toml`) that outputs are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `window-size` a preprocessor may return (`max_window`).
    pub max_window: u32,
    /// Most features a preprocessor may return, and contributions a scorer (`max_features`).
    pub max_features: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_window: DEFAULT_MAX_WINDOW, max_features: DEFAULT_MAX_FEATURES }
    }
}

/// Longest feature, model or contribution name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most alerts one decision may raise.
pub const MAX_ALERTS: usize = 16;
/// Longest alert subject, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 512;
/// Longest alert body, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `window-size` of a preprocessor: at least one reading, at most `[limits] max_window`.
pub fn window_size(size: u32, limits: &Limits) -> Result<u32, String> {
    if size == 0 || size > limits.max_window {
        return Err(format!("window-size {size} is outside 1..={} ([limits] max_window)", limits.max_window));
    }
    Ok(size)
}

/// Features of a preprocessor (and those a scorer passes to `predict`): as many values as
/// names, unique names of bounded length, at most `[limits] max_features`, no infinite value
/// (NaN is allowed: it marks a value that could not be computed, and trees route it).
pub fn features(f: &Features, limits: &Limits) -> Result<(), String> {
    if f.names.len() != f.values.len() {
        return Err(format!("features: {} names but {} values", f.names.len(), f.values.len()));
    }
    if f.names.len() > limits.max_features {
        return Err(format!(
            "features: {} features, more than {} ([limits] max_features)",
            f.names.len(),
            limits.max_features
        ));
    }
    let mut seen = HashSet::with_capacity(f.names.len());
    for (name, value) in f.names.iter().zip(&f.values) {
        name_ok("feature", name)?;
        if !seen.insert(name.as_str()) {
            return Err(format!("features: the name {:?} appears twice", clip(name)));
        }
        if value.is_infinite() {
            return Err(format!("features: {:?} is {value}", clip(name)));
        }
    }
    Ok(())
}

/// A score: a finite probability within [0, 1], a bounded model name, finite contributions
/// (at most one per feature the limits allow).
pub fn score(s: &Score, limits: &Limits) -> Result<(), String> {
    if !(s.probability.is_finite() && (0.0..=1.0).contains(&s.probability)) {
        return Err(format!("score: probability {} is not a finite number within [0, 1]", s.probability));
    }
    if s.model.len() > MAX_NAME_BYTES {
        return Err(format!("score: model name of {} bytes (at most {MAX_NAME_BYTES})", s.model.len()));
    }
    if s.contributions.len() > limits.max_features {
        return Err(format!(
            "score: {} contributions, more than {} ([limits] max_features)",
            s.contributions.len(),
            limits.max_features
        ));
    }
    for c in &s.contributions {
        name_ok("contribution", &c.feature)?;
        if !c.value.is_finite() {
            return Err(format!("score: the contribution of {:?} is {}", clip(&c.feature), c.value));
        }
    }
    Ok(())
}

/// A decision: at most [`MAX_ALERTS`] alerts, subjects and bodies of bounded size.
pub fn decision(d: &Decision) -> Result<(), String> {
    if d.alerts.len() > MAX_ALERTS {
        return Err(format!("decision: {} alerts (at most {MAX_ALERTS})", d.alerts.len()));
    }
    for a in &d.alerts {
        if a.subject.len() > MAX_SUBJECT_BYTES {
            return Err(format!(
                "decision: alert subject of {} bytes (at most {MAX_SUBJECT_BYTES})",
                a.subject.len()
            ));
        }
        if a.body.len() > MAX_BODY_BYTES {
            return Err(format!("decision: alert body of {} bytes (at most {MAX_BODY_BYTES})", a.body.len()));
        }
    }
    Ok(())
}

fn name_ok(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("{what} name of {} bytes (1..={MAX_NAME_BYTES})", name.len()));
    }
    Ok(())
}

/// At most 64 characters of `s`, for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Alert, Contribution, Severity};

    fn f(names: &[&str], values: &[f32]) -> Features {
        Features { names: names.iter().map(|s| s.to_string()).collect(), values: values.to_vec() }
    }

    fn p(probability: f32) -> Score {
        Score { probability, model: "m".into(), contributions: vec![] }
    }

    #[test]
    fn probabilities_outside_the_unit_interval_or_not_finite_are_refused() {
        let l = Limits::default();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.1, 1.5] {
            assert!(score(&p(bad), &l).is_err(), "{bad}");
        }
        for good in [0.0, -0.0, 0.5, 1.0] {
            assert!(score(&p(good), &l).is_ok(), "{good}");
        }
        let mut s = p(0.5);
        s.contributions.push(Contribution { feature: "x".into(), value: f32::NAN });
        assert!(score(&s, &l).unwrap_err().contains("contribution"));
    }

    #[test]
    fn features_must_pair_up_be_unique_and_bounded() {
        let l = Limits::default();
        assert!(features(&f(&["a", "b"], &[1.0, f32::NAN]), &l).is_ok(), "NaN marks a missing value");
        assert!(features(&f(&["a", "b"], &[1.0]), &l).unwrap_err().contains("2 names but 1 values"));
        assert!(features(&f(&["a", "a"], &[1.0, 2.0]), &l).unwrap_err().contains("twice"));
        assert!(features(&f(&["a"], &[f32::INFINITY]), &l).is_err());
        assert!(features(&f(&[""], &[1.0]), &l).is_err());
        let many: Vec<String> = (0..100_000).map(|i| format!("f{i}")).collect();
        let many = Features { values: vec![0.0; many.len()], names: many };
        assert!(features(&many, &l).unwrap_err().contains("max_features"));
    }

    #[test]
    fn window_sizes_are_bounded() {
        let l = Limits::default();
        assert!(window_size(0, &l).is_err());
        assert!(window_size(u32::MAX, &l).is_err());
        assert_eq!(window_size(32, &l), Ok(32));
    }

    #[test]
    fn decisions_are_bounded() {
        let alert = |subject: usize, body: usize| Alert {
            severity: Severity::Critical,
            subject: "s".repeat(subject),
            body: "b".repeat(body),
        };
        assert!(decision(&Decision { is_failure: true, alerts: vec![alert(10, 10)] }).is_ok());
        assert!(decision(&Decision { is_failure: true, alerts: vec![alert(10_000, 10)] }).is_err());
        assert!(decision(&Decision { is_failure: true, alerts: vec![alert(10, 1 << 20)] }).is_err());
        assert!(decision(&Decision { is_failure: true, alerts: vec![alert(1, 1); 17] }).is_err());
    }

    proptest::proptest! {
        /// Whatever a plugin returns, validation never panics, and what it accepts is what the
        /// host relies on: names and values pair up, names are unique, probabilities are in [0, 1].
        #[test]
        fn validation_never_panics_and_accepts_only_what_the_host_relies_on(
            names in proptest::collection::vec("[a-c]{0,2}", 0..8),
            values in proptest::collection::vec(proptest::num::f32::ANY, 0..8),
            probability in proptest::num::f32::ANY,
            contributions in proptest::collection::vec(("[a-c]{0,2}", proptest::num::f32::ANY), 0..4),
            max_features in 1usize..10,
        ) {
            let limits = Limits { max_features, ..Limits::default() };
            let f = Features { names, values };
            if features(&f, &limits).is_ok() {
                proptest::prop_assert_eq!(f.names.len(), f.values.len());
                proptest::prop_assert!(f.names.len() <= max_features);
                let unique: HashSet<_> = f.names.iter().collect();
                proptest::prop_assert_eq!(unique.len(), f.names.len());
                proptest::prop_assert!(f.values.iter().all(|v| !v.is_infinite()));
            }
            let s = Score {
                probability,
                model: "m".into(),
                contributions: contributions.into_iter().map(|(feature, value)| Contribution { feature, value }).collect(),
            };
            if score(&s, &limits).is_ok() {
                proptest::prop_assert!((0.0..=1.0).contains(&s.probability));
                proptest::prop_assert!(s.contributions.iter().all(|c| c.value.is_finite()));
            }
        }
    }
}
