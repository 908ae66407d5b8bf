//! Amazon SES (v2 API, raw message): each alert e-mail (outbox kind `email`) is sent exactly as
//! the e-mail files sink writes it — the RFC 5322 message `outbox::email` renders — from the
//! verified identity `from`, to the recipients in its `To:` header (the tenant's `[alerts]
//! email`). With `[sinks.ses]` configured, `from` is also the `From:` of every alert e-mail, so
//! the file and the sent message are the same bytes. A message with no recipient
//! (`undisclosed-recipients:;`) is settled without a call.

use super::aws::{AwsTarget, ClockSkew, classify, one_by_one, sdk_config};
use super::{Delivery, Outcome, Sink};
use crate::metrics::TelemetryMetrics;
use crate::store::{MessageKind, OutboxItem};
use aws_sdk_sesv2 as ses;
use aws_sdk_sns::config::SharedCredentialsProvider;
use serde::Deserialize;
use ses::primitives::Blob;
use ses::types::{EmailContent, RawMessage};
use std::sync::Arc;
use std::time::Duration;

/// `[sinks.ses]` in `edgepm.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesConfig {
    /// The verified SES identity alerts are sent from, e.g. `edgepm <alerts@plant.example>`.
    pub from: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    /// An SES configuration set (event publishing, dedicated IPs), optional.
    #[serde(default)]
    pub configuration_set: Option<String>,
}

impl SesConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self.from.parse::<lettre::message::Mailbox>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("[sinks.ses] from {:?} is not an e-mail address", self.from)),
        }
    }
}

/// The SES sink.
pub struct SesSink {
    shared: Arc<Shared>,
}

struct Shared {
    /// Credentials instead of the default chain's (see [`AwsTarget::credentials`]).
    credentials: Option<SharedCredentialsProvider>,
    config: SesConfig,
    client: tokio::sync::OnceCell<ses::Client>,
    skew: ClockSkew,
}

impl SesSink {
    pub fn new(config: SesConfig, metrics: TelemetryMetrics) -> SesSink {
        let skew = ClockSkew::new("ses", metrics);
        SesSink {
            shared: Arc::new(Shared {
                credentials: None,
                config,
                client: tokio::sync::OnceCell::new(),
                skew,
            }),
        }
    }

    /// Uses `credentials` instead of the default chain.
    pub fn with_credentials(self, credentials: SharedCredentialsProvider) -> SesSink {
        let mut shared = Arc::into_inner(self.shared).expect("not delivering yet");
        shared.credentials = Some(credentials);
        SesSink { shared: Arc::new(shared) }
    }
}

impl SesSink {
    /// The health check of `edgepm validate --config`: the sender identity (the address, or
    /// else its domain) is verified for sending.
    pub async fn check(&self) -> Result<String, String> {
        let client = self.shared.client().await;
        let address =
            self.shared.config.from.parse::<lettre::message::Mailbox>().map_err(|e| e.to_string())?.email;
        // SES verifies an address or its whole domain.
        let mut found = Vec::new();
        for identity in [address.to_string(), address.domain().to_string()] {
            match client.get_email_identity().email_identity(&identity).send().await {
                Ok(i) if i.verified_for_sending_status() => {
                    return Ok(format!("identity {identity} verified for sending"));
                }
                Ok(_) => found.push(identity),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => {}
                Err(e) => {
                    return Err(format!(
                        "identity {identity}: {}",
                        aws_sdk_sns::error::DisplayErrorContext(&e)
                    ));
                }
            }
        }
        match found.first() {
            Some(identity) => Err(format!(
                "identity {identity} exists but is not verified for sending: confirm the verification e-mail (or DNS records); until then alerts wait in the outbox"
            )),
            None => Err(format!(
                "no SES identity for {address} or its domain: create and verify one (docs/operations.md, SES)"
            )),
        }
    }
}

impl Sink for SesSink {
    fn name(&self) -> &'static str {
        "ses"
    }
    fn kind(&self) -> MessageKind {
        MessageKind::Email
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
        one_by_one(self.shared.clone(), batch, |shared, item| async move { shared.send(&item).await })
    }
}

impl Shared {
    async fn client(&self) -> ses::Client {
        self.client
            .get_or_init(|| async {
                let target = AwsTarget {
                    region: self.config.region.clone(),
                    endpoint: self.config.endpoint.clone(),
                    credentials: self.credentials.clone(),
                };
                let sdk = sdk_config(&target).await;
                ses::Client::from_conf(
                    ses::config::Builder::from(&sdk).interceptor(self.skew.clone()).build(),
                )
            })
            .await
            .clone()
    }

    async fn send(&self, item: &OutboxItem) -> Outcome {
        if !has_recipients(&item.payload) {
            tracing::debug!(file = %item.target, "Alert e-mail without recipients: not sent through SES");
            return Outcome::Delivered;
        }
        let raw = match RawMessage::builder().data(Blob::new(item.payload.clone())).build() {
            Ok(r) => r,
            Err(e) => return Outcome::Permanent(format!("raw message: {e}")),
        };
        let result = self
            .client()
            .await
            .send_email()
            .from_email_address(&self.config.from)
            .content(EmailContent::builder().raw(raw).build())
            .set_configuration_set_name(self.config.configuration_set.clone())
            .send()
            .await;
        match result {
            Ok(_) => Outcome::Delivered,
            // An unverified sender (or a sandbox recipient) is the account's configuration, not
            // the message's fault: kept and retried, not dead-lettered.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_message_rejected() && unverified(&s.to_string())) =>
            {
                Outcome::Retry {
                    reason: format!(
                        "SES: {} (kept and retried)",
                        aws_sdk_sns::error::DisplayErrorContext(&e)
                    ),
                    after: Some(super::aws::CONFIG_ERROR_RETRY),
                }
            }
            Err(e) => classify(&e),
        }
    }
}

/// Whether an SES rejection is about identities not verified (the sender, or a recipient while
/// the account is in the sandbox).
fn unverified(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not verified") || m.contains("did not have authority")
}

/// Whether the message's header names a recipient (`To:` other than `undisclosed-recipients:;`).
fn has_recipients(message: &[u8]) -> bool {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(message.len());
    let header = String::from_utf8_lossy(&message[..end]);
    header.split("\r\n").any(|line| {
        line.get(..3).is_some_and(|h| h.eq_ignore_ascii_case("to:"))
            && !line[3..].trim().starts_with("undisclosed-recipients")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_without_recipients_is_recognised_and_the_sender_must_be_an_address() {
        assert!(has_recipients(b"From: a@b.c\r\nTo: maint@plant.example\r\n\r\nbody"));
        assert!(!has_recipients(b"From: a@b.c\r\nTo: undisclosed-recipients:;\r\n\r\nTo: x@y.z"));
        assert!(!has_recipients(b"From: a@b.c\r\n\r\n"));
        let config = |from: &str| SesConfig {
            from: from.into(),
            region: None,
            endpoint: None,
            configuration_set: None,
        };
        assert!(config("edgepm <alerts@plant.example>").validate().is_ok());
        assert!(config("alerts").validate().is_err());
    }
}
