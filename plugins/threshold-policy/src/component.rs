//! WebAssembly glue: the `policy` world over [`crate::decide`].

use edgepm_sdk::policy::{self as sdk, Decision, Features, Guest, Score, Severity, history, host};

struct Host;

impl crate::Env for Host {
    fn config(&self, key: &str) -> Option<String> {
        host::config(key)
    }
    fn above_since(&self, device: &str, feature: &str, threshold: f64) -> Option<i64> {
        history::above_since(device, feature, threshold)
    }
    fn last_alert_ms(&self, device: &str) -> Option<i64> {
        history::last_alert_ms(device)
    }
}

struct ThresholdPolicy;

impl Guest for ThresholdPolicy {
    fn decide(device: String, ts_ms: i64, _f: Features, s: Score) -> Result<Decision, String> {
        let contributions: Vec<(&str, f32)> =
            s.contributions.iter().map(|c| (c.feature.as_str(), c.value)).collect();
        let score =
            crate::ScoreRef { probability: s.probability, model: &s.model, contributions: &contributions };
        let d = crate::decide(&Host, &device, ts_ms, score)?;
        Ok(Decision {
            is_failure: d.is_failure,
            alerts: d
                .alerts
                .into_iter()
                .map(|a| sdk::Alert {
                    severity: match a.severity {
                        crate::Severity::Info => Severity::Info,
                        crate::Severity::Warning => Severity::Warning,
                        crate::Severity::Critical => Severity::Critical,
                    },
                    subject: a.subject,
                    body: a.body,
                })
                .collect(),
        })
    }
}

edgepm_sdk::policy::export!(ThresholdPolicy);
