//! The JSON messages the host publishes (`docs/operations.md`, "Topics and payloads"). Devices, dashboards and
//! other tools parse these: fields are only ever added.

use crate::clock::rfc3339;
use crate::pipeline::WindowOutcome;
use crate::topics;
use crate::types::{Alert, Contribution, Severity, Stage};
use edgepm_core::decode::Reject;
use serde_json::json;

/// Contributions carried by a prediction message (largest absolute value first).
pub const TOP_CONTRIBUTIONS: usize = 5;
/// Bytes of a rejected payload quoted in its dead letter.
pub const DEAD_LETTER_EXCERPT: usize = 256;

/// The `n` contributions of largest absolute value, largest first.
pub fn top_contributions(all: &[Contribution], n: usize) -> Vec<Contribution> {
    let mut v = all.to_vec();
    v.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
    v.truncate(n);
    v
}

fn versions(o: &WindowOutcome) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (stage, version) in Stage::ALL.iter().zip(&o.versions) {
        m.insert(stage.as_str().to_string(), version.clone().into());
    }
    m.into()
}

/// Rounds a probability for the wire: 4 decimals are plenty and read better than f32 noise.
fn round4(x: f32) -> f64 {
    (x as f64 * 1e4).round() / 1e4
}

/// The prediction of one window, published on `edgepm/<tenant>/<device>/prediction`:
/// `{"is_failure", "probability", "timestamp", "tenant", "device", "model", "versions",
/// "contributions", "window": {"start", "end", "readings"}}`.
pub fn prediction(o: &WindowOutcome, start_ms: i64, readings: usize, top: &[Contribution]) -> Vec<u8> {
    json!({
        "is_failure": o.decision.is_failure,
        "probability": round4(o.score.probability),
        "timestamp": rfc3339(o.end_ms),
        "tenant": o.tenant,
        "device": o.device,
        "model": o.score.model,
        "versions": versions(o),
        "contributions": top.iter().map(|c| json!({"feature": c.feature, "value": c.value})).collect::<Vec<_>>(),
        "window": {"start": rfc3339(start_ms), "end": rfc3339(o.end_ms), "readings": readings},
    })
    .to_string()
    .into_bytes()
}

/// The stable id of alert number `index` of a window: `<tenant>/<device>/<end_ms>/<index>`. The
/// same alert sent again (after a crash, a retry) carries the same id in every output — MQTT,
/// the e-mail's `X-Edgepm-Alert-Id`, SNS's `alert_id` attribute — so a receiver can drop it.
pub fn alert_id(o: &WindowOutcome, index: usize) -> String {
    format!("{}/{}/{}/{}", o.tenant, o.device, o.end_ms, index)
}

/// An alert, published on `edgepm/<tenant>/<device>/alert`.
pub fn alert(o: &WindowOutcome, index: usize, a: &Alert) -> Vec<u8> {
    json!({
        "alert_id": alert_id(o, index),
        "severity": a.severity,
        "subject": a.subject,
        "body": a.body,
        "probability": round4(o.score.probability),
        "timestamp": rfc3339(o.end_ms),
        "tenant": o.tenant,
        "device": o.device,
        "model": o.score.model,
        "versions": versions(o),
    })
    .to_string()
    .into_bytes()
}

/// An outbox `record` for the time-series sinks: a window, or — when a sink is configured with
/// `readings = true` — a reading's scalar channels. JSON: the record's fields and
/// `"record": "window"` or `"reading"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "record", rename_all = "lowercase")]
pub enum CloudRecord {
    Window(Record),
    Reading(ReadingRecord),
}

/// A reading's scalar channels (bursts stay on the gateway), for measurement `reading`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReadingRecord {
    pub tenant: String,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The reading's time (device clock), ms since the Unix epoch.
    pub time_ms: i64,
    /// Channel name and value: the finite scalars, in the reading's order.
    pub values: Vec<(String, f64)>,
}

impl ReadingRecord {
    /// `None` when the reading has no finite scalar channel.
    pub fn of(r: &crate::types::Reading, site: Option<String>) -> Option<ReadingRecord> {
        let values: Vec<(String, f64)> = r
            .channels
            .iter()
            .filter_map(|(name, s)| match s {
                crate::types::Samples::Scalar(x) if x.is_finite() => Some((name.clone(), *x as f64)),
                _ => None,
            })
            .collect();
        (!values.is_empty()).then(|| ReadingRecord {
            tenant: r.tenant.clone(),
            device: r.device.clone(),
            site,
            time_ms: r.ts_ms,
            values,
        })
    }
}

/// A window for the time-series sinks (outbox kind `record`): its features and its prediction,
/// with the device's site from the asset registry when it has one. The sinks turn it into
/// Timestream records or InfluxDB points (`features` and `prediction`, tagged tenant, device,
/// site).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub tenant: String,
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// End of the window (device clock), ms since the Unix epoch.
    pub time_ms: i64,
    /// Feature name and value, in the preprocessor's order; a non-finite value is `null`.
    pub features: Vec<(String, Option<f64>)>,
    pub probability: f64,
    pub is_failure: bool,
    pub model: String,
    /// Versions of the preprocess, score and policy plugins.
    pub versions: [String; 3],
}

impl Record {
    pub fn of(o: &WindowOutcome, site: Option<String>) -> Record {
        let finite = |x: f32| x.is_finite().then_some(x as f64);
        Record {
            tenant: o.tenant.clone(),
            device: o.device.clone(),
            site,
            time_ms: o.end_ms,
            features: o
                .features
                .names
                .iter()
                .cloned()
                .zip(o.features.values.iter().map(|&v| finite(v)))
                .collect(),
            probability: round4(o.score.probability),
            is_failure: o.decision.is_failure,
            model: o.score.model.clone(),
            versions: o.versions.clone(),
        }
    }
}

/// An alert for people (outbox kind `alert`, the SNS sink): what the policy wrote, with its id.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertMessage {
    pub alert_id: String,
    pub tenant: String,
    pub device: String,
    pub time_ms: i64,
    pub severity: String,
    pub subject: String,
    pub body: String,
    pub probability: f64,
}

impl AlertMessage {
    pub fn of(o: &WindowOutcome, index: usize, a: &Alert) -> AlertMessage {
        AlertMessage {
            alert_id: alert_id(o, index),
            tenant: o.tenant.clone(),
            device: o.device.clone(),
            time_ms: o.end_ms,
            severity: severity_str(a.severity).to_string(),
            subject: a.subject.clone(),
            body: a.body.clone(),
            probability: round4(o.score.probability),
        }
    }
}

/// `info`, `warning` or `critical`.
pub fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// The dead letter of a rejected message: topic `edgepm/<tenant>/deadletter` (tenant from the
/// topic when it names one, else `_invalid`) and
/// `{"reason", "error", "topic", "received", "payload_bytes", "payload_excerpt"}`.
pub fn dead_letter(topic: &str, payload: &[u8], reject: &Reject, now_ms: i64) -> (String, Vec<u8>) {
    let tenant = topic
        .strip_prefix(topics::ROOT)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split('/').next())
        .filter(|t| crate::plugins::is_tenant_name(t))
        .unwrap_or("_invalid");
    let excerpt = String::from_utf8_lossy(&payload[..payload.len().min(DEAD_LETTER_EXCERPT)]).into_owned();
    let body = json!({
        "reason": reject.reason(),
        "error": reject.to_string(),
        "topic": topic.chars().take(256).collect::<String>(),
        "received": rfc3339(now_ms),
        "payload_bytes": payload.len(),
        "payload_excerpt": excerpt,
    });
    (topics::tenant(tenant, topics::DEAD_LETTER), body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_name_the_tenant_and_quote_a_bounded_excerpt() {
        let payload = vec![b'x'; 1 << 20];
        let (t, body) = dead_letter("edgepm/acme/M1/telemetry", &payload, &Reject::NotObject, 0);
        assert_eq!(t, "edgepm/acme/deadletter");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["reason"], "malformed");
        assert_eq!(v["payload_bytes"], 1 << 20);
        assert_eq!(v["payload_excerpt"].as_str().map(str::len), Some(DEAD_LETTER_EXCERPT));
        let (t, _) = dead_letter("a/b", b"", &Reject::BadTopic("a/b".into()), 0);
        assert_eq!(t, "edgepm/_invalid/deadletter");
    }
}
