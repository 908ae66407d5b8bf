//! Threshold policy: the reference policy plugin of edgepm.
//!
//! A window is a failure when its probability is above the tenant's `threshold` (default 0.8).
//! A failure raises an alert unless the device had one within `cooldown_minutes` (default 60);
//! the cool-down is read from the host's record of past alerts, so the plugin keeps no state. The
//! alert says how likely the failure is, when the last reading was, what to do, since when the
//! vibration has been abnormal (`history.above-since` on the feature `vibration_feature` above
//! `vibration_alarm`: by default `vibration_rms` above 4.5 mm/s, ISO 10816 zone C for small
//! machines — for `bearing-spectrum` tenants e.g. `vib_rms_rel` above 1.5 × the machine's
//! baseline) and which features pushed the score most (the largest contributions by magnitude).
//! `vibration_rms_alarm` is the older name of `vibration_alarm`. Wording in Portuguese (`language = "pt"`, default) or English (`"en"`).
//! Scores at or above `critical_threshold` (default 0.95) are critical, the others warnings.
//!
//! The decision logic is plain Rust over the [`Env`] trait, compiled natively too (the host's
//! benchmark calls it directly); the WebAssembly glue is in `component.rs`.

#[cfg(target_arch = "wasm32")]
mod component;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Alert threshold when the tenant sets none.
pub const DEFAULT_THRESHOLD: f64 = 0.8;
/// Minimum time between two alerts of one device, when the tenant sets none.
pub const DEFAULT_COOLDOWN_MINUTES: i64 = 60;
/// Probability from which an alert is critical rather than a warning.
pub const DEFAULT_CRITICAL_THRESHOLD: f64 = 0.95;
/// Vibration RMS (mm/s) above which vibration counts as abnormal in the history line.
pub const DEFAULT_VIBRATION_ALARM: f64 = 4.5;
/// Feature whose history the alert reports, when the tenant sets no `vibration_feature`.
pub const VIBRATION_FEATURE: &str = "vibration_rms";
/// Contributions listed in an alert body.
pub const TOP_CONTRIBUTIONS: usize = 3;

/// What the policy needs from its host: settings, history.
pub trait Env {
    fn config(&self, key: &str) -> Option<String>;
    fn above_since(&self, device: &str, feature: &str, threshold: f64) -> Option<i64>;
    fn last_alert_ms(&self, device: &str) -> Option<i64>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub severity: Severity,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub is_failure: bool,
    pub alerts: Vec<Alert>,
}

/// The score being decided on.
#[derive(Debug, Clone, Copy)]
pub struct ScoreRef<'a> {
    pub probability: f32,
    pub model: &'a str,
    /// (feature, contribution): the host gives them largest magnitude first (the contract);
    /// the alert sorts them again, so a host that does not cannot mislabel its main factors.
    pub contributions: &'a [(&'a str, f32)],
}

/// Tenant settings of this policy, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub threshold: f64,
    pub critical_threshold: f64,
    pub cooldown_ms: i64,
    pub vibration_feature: String,
    pub vibration_alarm: f64,
    pub english: bool,
}

impl Settings {
    /// Reads the settings; a value that is set but invalid is an error, never silently ignored.
    pub fn read(env: &impl Env) -> Result<Settings, String> {
        fn num(env: &impl Env, key: &str, default: f64) -> Result<f64, String> {
            match env.config(key) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| format!("setting '{key}' is not a number: {v:?}")),
            }
        }
        let threshold = num(env, "threshold", DEFAULT_THRESHOLD)?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(format!("setting 'threshold' must be within [0, 1], got {threshold}"));
        }
        let cooldown_min = num(env, "cooldown_minutes", DEFAULT_COOLDOWN_MINUTES as f64)?;
        if cooldown_min < 0.0 {
            return Err(format!("setting 'cooldown_minutes' must not be negative, got {cooldown_min}"));
        }
        let english = match env.config("language").as_deref().map(str::trim) {
            None | Some("pt") | Some("pt-BR") | Some("pt-PT") => false,
            Some("en") => true,
            Some(other) => return Err(format!("setting 'language' must be \"pt\" or \"en\", got {other:?}")),
        };
        Ok(Settings {
            threshold,
            critical_threshold: num(env, "critical_threshold", DEFAULT_CRITICAL_THRESHOLD)?,
            cooldown_ms: (cooldown_min * 60_000.0) as i64,
            vibration_feature: match env.config("vibration_feature") {
                Some(f) if f.trim().is_empty() => {
                    return Err("setting 'vibration_feature' must name a feature".into());
                }
                Some(f) => f.trim().to_string(),
                None => VIBRATION_FEATURE.to_string(),
            },
            vibration_alarm: num(
                env,
                "vibration_alarm",
                num(env, "vibration_rms_alarm", DEFAULT_VIBRATION_ALARM)?,
            )?,
            english,
        })
    }
}

/// Decides for the window of `device` that ended at `ts_ms`.
pub fn decide(env: &impl Env, device: &str, ts_ms: i64, score: ScoreRef<'_>) -> Result<Decision, String> {
    let s = Settings::read(env)?;
    let p = score.probability;
    if !p.is_finite() {
        return Err(format!("probability is not a number: {p}"));
    }
    // Compared in f32, the precision of the score: 0.8 read from a setting equals a score of 0.8.
    let is_failure = p > s.threshold as f32;
    if !is_failure {
        return Ok(Decision { is_failure, alerts: Vec::new() });
    }
    if let Some(last) = env.last_alert_ms(device)
        && ts_ms >= last
        && ts_ms - last < s.cooldown_ms
    {
        return Ok(Decision { is_failure, alerts: Vec::new() });
    }
    let since = env.above_since(device, &s.vibration_feature, s.vibration_alarm);
    Ok(Decision { is_failure, alerts: vec![alert(&s, device, ts_ms, p, since, score)] })
}

fn alert(s: &Settings, device: &str, ts_ms: i64, p: f32, since: Option<i64>, score: ScoreRef<'_>) -> Alert {
    let severity = if p >= s.critical_threshold as f32 { Severity::Critical } else { Severity::Warning };
    let when = rfc3339(ts_ms);
    let mut largest: Vec<&(&str, f32)> = score.contributions.iter().filter(|(_, v)| v.is_finite()).collect();
    largest.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let top: Vec<String> =
        largest.iter().take(TOP_CONTRIBUTIONS).map(|(name, v)| format!("{name} ({v:+.2})")).collect();
    let (subject, lines) = if s.english {
        (
            format!("⚠️ IMMINENT FAILURE ALERT — Equipment {device}"),
            [
                format!("Failure probability: {:.1} %", p as f64 * 100.0),
                format!("Last reading: {when}"),
                "Suggestion: schedule a bearing inspection (lubrication, clearance, alignment) within 24 hours."
                    .to_string(),
                match since {
                    Some(t) => format!("History: abnormal vibration since {}", date(t)),
                    None => "History: no abnormal vibration on record".to_string(),
                },
                format!("Main factors: {}", if top.is_empty() { "-".to_string() } else { top.join(", ") }),
                format!("Model: {}", score.model),
            ],
        )
    } else {
        (
            format!("⚠️ ALERTA DE FALHA IMINENTE — Equipamento {device}"),
            [
                format!("Probabilidade de falha: {:.1} %", p as f64 * 100.0).replace('.', ","),
                format!("Última leitura: {when}"),
                "Sugestão: programar inspeção do rolamento (lubrificação, folga, alinhamento) nas próximas 24 horas."
                    .to_string(),
                match since {
                    Some(t) => format!("Histórico: vibração anormal desde {}", date(t)),
                    None => "Histórico: sem registro de vibração anormal".to_string(),
                },
                format!("Principais fatores: {}", if top.is_empty() { "-".to_string() } else { top.join(", ") }),
                format!("Modelo: {}", score.model),
            ],
        )
    };
    Alert { severity, subject, body: lines.join("\n") }
}

/// `2025-04-05T10:30:00Z` (milliseconds dropped).
pub fn rfc3339(ts_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ts_ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{ts_ms} ms"))
}

/// `2025-04-01`.
pub fn date(ts_ms: i64) -> String {
    let full = rfc3339(ts_ms);
    full.get(..10).unwrap_or(&full).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeEnv {
        config: HashMap<&'static str, &'static str>,
        above_since: Option<i64>,
        last_alert: Option<i64>,
    }

    impl Env for FakeEnv {
        fn config(&self, key: &str) -> Option<String> {
            self.config.get(key).map(|v| v.to_string())
        }
        fn above_since(&self, _: &str, _: &str, _: f64) -> Option<i64> {
            self.above_since
        }
        fn last_alert_ms(&self, _: &str) -> Option<i64> {
            self.last_alert
        }
    }

    const TS: i64 = 1_743_849_000_000; // 2025-04-05T10:30:00Z

    fn score(p: f32) -> ScoreRef<'static> {
        ScoreRef { probability: p, model: "bearing@1", contributions: &[("vibration_kurtosis", 1.25)] }
    }

    #[test]
    fn alert_above_default_threshold_with_history_line() {
        let env = FakeEnv { above_since: Some(TS - 4 * 86_400_000), ..Default::default() };
        let d = decide(&env, "MTR-042", TS, score(0.97)).unwrap();
        assert!(d.is_failure);
        let a = &d.alerts[0];
        assert_eq!(a.subject, "⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042");
        assert_eq!(a.severity, Severity::Critical);
        assert!(a.body.contains("Probabilidade de falha: 97,0 %"), "{}", a.body);
        assert!(a.body.contains("Última leitura: 2025-04-05T10:30:00Z"), "{}", a.body);
        assert!(a.body.contains("vibração anormal desde 2025-04-01"), "{}", a.body);
        assert!(a.body.contains("vibration_kurtosis (+1.25)"), "{}", a.body);
    }

    #[test]
    fn main_factors_are_the_largest_contributions_and_the_history_feature_is_the_tenants() {
        struct Asked(std::cell::RefCell<Vec<(String, f64)>>);
        impl Env for Asked {
            fn config(&self, key: &str) -> Option<String> {
                match key {
                    "vibration_feature" => Some("vib_rms_rel".into()),
                    "vibration_alarm" => Some("1.5".into()),
                    "language" => Some("en".into()),
                    _ => None,
                }
            }
            fn above_since(&self, _: &str, feature: &str, threshold: f64) -> Option<i64> {
                self.0.borrow_mut().push((feature.to_string(), threshold));
                Some(TS - 3_600_000)
            }
            fn last_alert_ms(&self, _: &str) -> Option<i64> {
                None
            }
        }
        let env = Asked(Default::default());
        // In feature order, as the host gives them: the largest are not the first three.
        let contributions = [
            ("vib_rms_rel", -0.14),
            ("vib_peak_rel", 0.16),
            ("vib_crest", 0.9),
            ("vib_kurtosis", -1.3),
            ("x", 0.2),
        ];
        let score = ScoreRef { probability: 0.9, model: "m@1", contributions: &contributions };
        let a = &decide(&env, "M", TS, score).unwrap().alerts[0];
        assert!(
            a.body.contains("Main factors: vib_kurtosis (-1.30), vib_crest (+0.90), x (+0.20)"),
            "{}",
            a.body
        );
        assert!(a.body.contains("History: abnormal vibration since 2025-04-05"), "{}", a.body);
        assert_eq!(*env.0.borrow(), [("vib_rms_rel".to_string(), 1.5)]);
        // The defaults, and the older name of the alarm level.
        let env = FakeEnv { config: HashMap::from([("vibration_rms_alarm", "7.1")]), ..Default::default() };
        let s = Settings::read(&env).unwrap();
        assert_eq!((s.vibration_feature.as_str(), s.vibration_alarm), ("vibration_rms", 7.1));
        let env = FakeEnv { config: HashMap::from([("vibration_feature", " ")]), ..Default::default() };
        assert!(Settings::read(&env).unwrap_err().contains("vibration_feature"));
    }

    #[test]
    fn at_or_below_threshold_is_no_failure() {
        let d = decide(&FakeEnv::default(), "M", TS, score(0.8)).unwrap();
        assert_eq!(d, Decision { is_failure: false, alerts: vec![] });
    }

    #[test]
    fn cooldown_suppresses_the_alert_but_not_the_failure() {
        let env = FakeEnv { last_alert: Some(TS - 59 * 60_000), ..Default::default() };
        let d = decide(&env, "M", TS, score(0.9)).unwrap();
        assert!(d.is_failure && d.alerts.is_empty());
        let env = FakeEnv { last_alert: Some(TS - 61 * 60_000), ..Default::default() };
        assert_eq!(decide(&env, "M", TS, score(0.9)).unwrap().alerts.len(), 1);
    }

    #[test]
    fn tenant_threshold_and_language() {
        let env = FakeEnv {
            config: HashMap::from([("threshold", "0.5"), ("language", "en")]),
            ..Default::default()
        };
        let d = decide(&env, "MTR-7", TS, score(0.6)).unwrap();
        assert_eq!(d.alerts[0].subject, "⚠️ IMMINENT FAILURE ALERT — Equipment MTR-7");
        assert_eq!(d.alerts[0].severity, Severity::Warning);
    }

    #[test]
    fn invalid_setting_is_an_error() {
        let env = FakeEnv { config: HashMap::from([("threshold", "high")]), ..Default::default() };
        assert!(decide(&env, "M", TS, score(0.9)).unwrap_err().contains("threshold"));
    }
}
