//! Everything that leaves the host goes through the store's outbox. The ingest batch reports what
//! happened to the [`Router`] (its `ingest::Outputs`), which queues the messages that makes —
//! [`messages`] renders the MQTT publications, [`email`] the alert e-mails — in the same
//! transaction as the predictions they describe; the sinks (`crate::sinks`) deliver them, each
//! from its own cursor, with retries. A host that was offline, or killed, catches up
//! when it comes back. Delivery is at least once: a message may be delivered twice after a
//! crash, never zero times.

pub mod email;
pub mod messages;

use crate::ingest::{Outputs, Reject};
use crate::pipeline::WindowOutcome;
use crate::plugins::PluginHost;
use crate::store::{MessageKind, SqliteStore};
use crate::topics;
use crate::types::Reading;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which optional outputs the configured sinks take (the rest are always made).
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// A `record` per window, for Timestream or InfluxDB.
    pub records: bool,
    /// A `record` per reading too (its scalar channels), for a sink with `readings = true`.
    pub readings: bool,
    /// An `alert` per alert, for SNS.
    pub alerts: bool,
    /// The sender of alert e-mails: `[sinks.ses] from` when SES sends them, else `email::FROM`.
    pub email_from: Option<String>,
}

/// The host's outputs: per window a prediction publication (and a `record` when a time-series
/// sink is configured), per alert a publication, an e-mail to the tenant's `[alerts] email`
/// recipients (and an `alert` for SNS when configured); per refused message a dead letter.
pub struct Router {
    host: Arc<PluginHost>,
    wanted: Wanted,
    /// Each device's `site` from the asset registry, read at most once a minute.
    sites: Mutex<HashMap<(String, String), SiteMemo>>,
}

/// A device's site and when it was read from the registry.
type SiteMemo = (Option<String>, Instant);

/// How long a device's site is taken from memory before the registry is read again.
const SITE_TTL: Duration = Duration::from_secs(60);

impl Router {
    pub fn new(host: Arc<PluginHost>, wanted: Wanted) -> Arc<Router> {
        Arc::new(Router { host, wanted, sites: Mutex::new(HashMap::new()) })
    }

    /// The device's site (the asset registry's `site` attribute), if it has one.
    fn site(&self, store: &SqliteStore, tenant: &str, device: &str) -> anyhow::Result<Option<String>> {
        let key = (tenant.to_string(), device.to_string());
        let mut sites = self.sites.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((site, at)) = sites.get(&key)
            && at.elapsed() < SITE_TTL
        {
            return Ok(site.clone());
        }
        let site = store.asset(tenant, device)?.into_iter().find(|(k, _)| k == "site").map(|(_, v)| v);
        if sites.len() > 100_000 {
            sites.clear(); // a bound; the registry is the truth
        }
        sites.insert(key, (site.clone(), Instant::now()));
        Ok(site)
    }
}

impl Outputs for Router {
    fn window(
        &self,
        store: &SqliteStore,
        o: &WindowOutcome,
        start_ms: i64,
        readings: usize,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        // The store keeps every contribution; the message carries the largest few.
        let top = messages::top_contributions(&o.score.contributions, messages::TOP_CONTRIBUTIONS);
        let prediction = messages::prediction(o, start_ms, readings, &top);
        let topic = topics::device(&o.tenant, &o.device, topics::PREDICTION);
        store.enqueue(MessageKind::Publication, &topic, &prediction, now_ms)?;
        if self.wanted.records {
            let site = self.site(store, &o.tenant, &o.device)?;
            let record = serde_json::to_vec(&messages::CloudRecord::Window(messages::Record::of(o, site)))?;
            store.enqueue(MessageKind::Record, &topic, &record, now_ms)?;
        }
        if o.decision.alerts.is_empty() {
            return Ok(());
        }
        let to = self.host.tenant(&o.tenant).map(|p| p.config.alerts.email.clone()).unwrap_or_default();
        let topic = topics::device(&o.tenant, &o.device, topics::ALERT);
        let from = self.wanted.email_from.as_deref().unwrap_or(email::FROM);
        for (i, alert) in o.decision.alerts.iter().enumerate() {
            store.enqueue(MessageKind::Publication, &topic, &messages::alert(o, i, alert), now_ms)?;
            let email = email::render(o, i, alert, from, &to, now_ms);
            store.enqueue(MessageKind::Email, &email.file_name, email.message.as_bytes(), now_ms)?;
            if self.wanted.alerts {
                let message = messages::AlertMessage::of(o, i, alert);
                store.enqueue(
                    MessageKind::Alert,
                    &message.alert_id,
                    &serde_json::to_vec(&message)?,
                    now_ms,
                )?;
            }
        }
        Ok(())
    }

    fn reading(&self, store: &SqliteStore, reading: &Reading, now_ms: i64) -> anyhow::Result<()> {
        if !self.wanted.readings {
            return Ok(());
        }
        let site = self.site(store, &reading.tenant, &reading.device)?;
        if let Some(r) = messages::ReadingRecord::of(reading, site) {
            let topic = topics::device(&r.tenant, &r.device, topics::TELEMETRY);
            store.enqueue(
                MessageKind::Record,
                &topic,
                &serde_json::to_vec(&messages::CloudRecord::Reading(r))?,
                now_ms,
            )?;
        }
        Ok(())
    }

    fn refused(
        &self,
        store: &SqliteStore,
        topic: &str,
        payload: &[u8],
        reject: &Reject,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        let (topic, payload) = messages::dead_letter(topic, payload, reject, now_ms);
        store.enqueue(MessageKind::Publication, &topic, &payload, now_ms)?;
        Ok(())
    }
}
