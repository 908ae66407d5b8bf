//! Amazon SNS: each alert (outbox kind `alert`) is published to its tenant's topic, for the
//! e-mail and SMS subscriptions people have there.
//!
//! - `MessageStructure=json`: the e-mail text (the full UTF-8 subject as its first line, then
//!   the policy's body and the alert id) and a short SMS text (≤ 140 characters, ASCII).
//! - `Subject` is what SNS allows: printable ASCII, under 100 characters, one line — the
//!   policy's subject folded to ASCII by `deunicode` (`⚠️ ALERTA … — Equipamento MTR-042`
//!   becomes `warning ALERTA ... -- Equipamento MTR-042`).
//! - Message attributes `severity`, `tenant`, `device` (subscription filter policies) and
//!   `alert_id`: the same id as in the MQTT alert and the e-mail, so a re-sent alert can be
//!   recognised.
//! - A tenant without a topic (and no `default_topic`) gets no SNS alerts: its alerts are
//!   settled without a call, logged once.

use super::aws::{AwsTarget, ClockSkew, classify, one_by_one, sdk_config};
use super::{Delivery, Outcome, Sink};
use crate::metrics::TelemetryMetrics;
use crate::outbox::messages::AlertMessage;
use crate::store::{MessageKind, OutboxItem};
use aws_sdk_sns as sns;
use aws_sdk_sns::config::SharedCredentialsProvider;
use serde::Deserialize;
use sns::types::MessageAttributeValue;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::info;

/// Longest SMS text.
pub const SMS_MAX: usize = 140;
/// SNS's `Subject` must be shorter than this.
const SUBJECT_LIMIT: usize = 100;

/// `[sinks.sns]` in `edgepm.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsConfig {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Topic ARN per tenant.
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    /// Topic of the tenants not in `topics`; none: those tenants get no SNS alerts.
    #[serde(default)]
    pub default_topic: Option<String>,
}

impl SnsConfig {
    pub fn validate(&self) -> Result<(), String> {
        let arns = self.topics.values().chain(&self.default_topic);
        match arns.into_iter().find(|a| !a.starts_with("arn:")) {
            Some(bad) => {
                Err(format!("[sinks.sns] {bad:?} is not a topic ARN (arn:aws:sns:<region>:<account>:<name>)"))
            }
            None if self.topics.is_empty() && self.default_topic.is_none() => {
                Err("[sinks.sns] needs topics (per tenant) or default_topic".into())
            }
            None => Ok(()),
        }
    }

    fn topic(&self, tenant: &str) -> Option<&str> {
        self.topics.get(tenant).or(self.default_topic.as_ref()).map(String::as_str)
    }
}

/// The SNS sink.
pub struct SnsSink {
    shared: Arc<Shared>,
}

struct Shared {
    /// Credentials instead of the default chain's (see [`AwsTarget::credentials`]).
    credentials: Option<SharedCredentialsProvider>,
    config: SnsConfig,
    client: tokio::sync::OnceCell<sns::Client>,
    skew: ClockSkew,
    /// Tenants whose alerts were skipped for want of a topic (logged once each).
    no_topic: Mutex<HashSet<String>>,
}

impl SnsSink {
    pub fn new(config: SnsConfig, metrics: TelemetryMetrics) -> SnsSink {
        let shared = Shared {
            credentials: None,
            config,
            client: tokio::sync::OnceCell::new(),
            skew: ClockSkew::new("sns", metrics),
            no_topic: Mutex::new(HashSet::new()),
        };
        SnsSink { shared: Arc::new(shared) }
    }

    /// Uses `credentials` instead of the default chain.
    pub fn with_credentials(self, credentials: SharedCredentialsProvider) -> SnsSink {
        let mut shared = Arc::into_inner(self.shared).expect("not delivering yet");
        shared.credentials = Some(credentials);
        SnsSink { shared: Arc::new(shared) }
    }
}

impl SnsSink {
    /// The health check of `edgepm validate --config`: every configured topic exists.
    pub async fn check(&self) -> Result<String, String> {
        let client = self.shared.client().await;
        let topics: Vec<&String> =
            self.shared.config.topics.values().chain(&self.shared.config.default_topic).collect();
        for arn in &topics {
            client
                .get_topic_attributes()
                .topic_arn(arn.as_str())
                .send()
                .await
                .map_err(|e| format!("topic {arn}: {}", aws_sdk_sns::error::DisplayErrorContext(&e)))?;
        }
        Ok(format!("{} topic(s) found", topics.len()))
    }
}

impl Sink for SnsSink {
    fn name(&self) -> &'static str {
        "sns"
    }
    fn kind(&self) -> MessageKind {
        MessageKind::Alert
    }
    fn batch_size(&self) -> usize {
        10
    }
    fn ordered(&self) -> bool {
        true
    }
    fn max_backoff(&self) -> Duration {
        super::CLOUD_MAX_BACKOFF
    }
    fn deliver(&mut self, batch: &[OutboxItem]) -> Delivery {
        one_by_one(self.shared.clone(), batch, |shared, item| async move { shared.publish(&item).await })
    }
}

impl Shared {
    async fn client(&self) -> sns::Client {
        self.client
            .get_or_init(|| async {
                let sdk = sdk_config(&AwsTarget {
                    region: self.config.region.clone(),
                    endpoint: self.config.endpoint.clone(),
                    credentials: self.credentials.clone(),
                })
                .await;
                sns::Client::from_conf(
                    sns::config::Builder::from(&sdk).interceptor(self.skew.clone()).build(),
                )
            })
            .await
            .clone()
    }

    async fn publish(&self, item: &OutboxItem) -> Outcome {
        let alert: AlertMessage = match serde_json::from_slice(&item.payload) {
            Ok(a) => a,
            Err(e) => return Outcome::Permanent(format!("not an alert: {e}")),
        };
        let Some(topic) = self.config.topic(&alert.tenant) else {
            if self
                .no_topic
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(alert.tenant.clone())
            {
                info!(tenant = %alert.tenant, "No SNS topic for the tenant ([sinks.sns] topics): its alerts are not sent to SNS");
            }
            return Outcome::Delivered;
        };
        let attribute = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .expect("data type set")
        };
        let result = self
            .client()
            .await
            .publish()
            .topic_arn(topic)
            .subject(ascii_subject(&alert.subject))
            .message_structure("json")
            .message(message_json(&alert))
            .message_attributes("severity", attribute(&alert.severity))
            .message_attributes("tenant", attribute(&alert.tenant))
            .message_attributes("device", attribute(&alert.device))
            .message_attributes("alert_id", attribute(&alert.alert_id))
            .send()
            .await;
        match result {
            Ok(_) => Outcome::Delivered,
            Err(e) => classify(&e),
        }
    }
}

/// The e-mail text: the full subject, the body, and the alert's id and time.
pub fn email_text(a: &AlertMessage) -> String {
    format!(
        "{}\n\n{}\n\n--\nalert {} · {} · probability {:.1} %",
        a.subject.replace(['\r', '\n'], " "),
        a.body.trim_end(),
        a.alert_id,
        crate::clock::rfc3339(a.time_ms),
        a.probability * 100.0
    )
}

/// The SMS text: `CRITICAL MTR-042 97%: <subject in ASCII>`, at most [`SMS_MAX`] characters.
pub fn sms_text(a: &AlertMessage) -> String {
    let text = format!(
        "{} {} {:.0}%: {}",
        a.severity.to_ascii_uppercase(),
        a.device,
        a.probability * 100.0,
        ascii_subject(&a.subject)
    );
    cut(&text, SMS_MAX)
}

/// `{"default", "email", "sms"}` for `MessageStructure=json`.
pub fn message_json(a: &AlertMessage) -> String {
    let text = email_text(a);
    serde_json::json!({"default": text, "email": text, "sms": sms_text(a)}).to_string()
}

/// The subject as SNS takes it: folded to ASCII (`deunicode`), printable characters only, one
/// line, spaces collapsed, under 100 characters (cut at a word when it can be).
pub fn ascii_subject(subject: &str) -> String {
    // Line breaks and tabs are word breaks (deunicode drops control characters).
    let spaced: String = subject.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let folded = deunicode::deunicode_with_tofu(&spaced, "");
    let printable: String = folded.chars().map(|c| if c.is_ascii_graphic() { c } else { ' ' }).collect();
    let words: Vec<&str> = printable.split_whitespace().collect();
    let line = words.join(" ");
    let line = if line.is_empty() { "edgepm alert".to_string() } else { line };
    cut(&line, SUBJECT_LIMIT - 1)
}

/// At most `max` characters, cut at the last space within them when there is one.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    match head.rfind(' ') {
        Some(i) if i > max / 2 => head[..i].to_string(),
        _ => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(subject: &str) -> AlertMessage {
        AlertMessage {
            alert_id: "acme/MTR-042/1743849000000/0".into(),
            tenant: "acme".into(),
            device: "MTR-042".into(),
            time_ms: 1_743_849_000_000,
            severity: "critical".into(),
            subject: subject.into(),
            body: "Probabilidade de falha: 97,0 %\nVerificar rolamento.".into(),
            probability: 0.97,
        }
    }

    #[test]
    fn the_seed_subject_folds_to_printable_ascii_under_100_characters() {
        let s = ascii_subject("⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042");
        assert_eq!(s, "warning ALERTA DE FALHA IMINENTE -- Equipamento MTR-042", "⚠ is a word in ASCII");
        assert_eq!(ascii_subject("Manutenção\r\npreditiva\tnecessária"), "Manutencao preditiva necessaria");
        let long = ascii_subject(&"Vibração acima do limite ".repeat(10));
        assert!(long.len() < 100 && long.bytes().all(|b| (0x20..0x7f).contains(&b)), "{long}");
        assert!(!long.ends_with(' '));
        assert_eq!(ascii_subject("\u{FE0F}\t\r\n"), "edgepm alert", "nothing printable left");
    }

    #[test]
    fn the_message_carries_the_full_subject_first_and_a_short_sms() {
        let a = alert("⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042");
        let m: serde_json::Value = serde_json::from_str(&message_json(&a)).expect("json");
        let email = m["email"].as_str().expect("email");
        assert_eq!(email.lines().next(), Some("⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042"));
        assert!(email.contains("Verificar rolamento.") && email.contains("acme/MTR-042/1743849000000/0"));
        assert_eq!(m["default"], m["email"]);
        let sms = m["sms"].as_str().expect("sms");
        assert!(sms.starts_with("CRITICAL MTR-042 97%: warning ALERTA"), "{sms}");
        let long = alert(&"Falha iminente no rolamento ".repeat(20));
        assert!(sms_text(&long).chars().count() <= SMS_MAX);
    }

    #[test]
    fn topics_are_per_tenant_with_a_default_and_must_be_arns() {
        let mut c = SnsConfig::default();
        assert!(c.validate().is_err(), "no topic at all");
        c.topics.insert("acme".into(), "arn:aws:sns:eu-west-1:123456789012:acme".into());
        assert!(c.validate().is_ok());
        assert_eq!(c.topic("acme"), Some("arn:aws:sns:eu-west-1:123456789012:acme"));
        assert_eq!(c.topic("other"), None);
        c.default_topic = Some("edgepm-alerts".into());
        assert!(c.validate().is_err(), "a name is not an ARN");
    }
}
