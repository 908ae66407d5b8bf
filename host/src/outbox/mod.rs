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
use std::sync::Arc;

/// The host's outputs: per window a prediction publication, per alert a publication and an
/// e-mail to the tenant's `[alerts] email` recipients; per refused message a dead letter.
pub struct Router {
    host: Arc<PluginHost>,
}

impl Router {
    pub fn new(host: Arc<PluginHost>) -> Arc<Router> {
        Arc::new(Router { host })
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
        if o.decision.alerts.is_empty() {
            return Ok(());
        }
        let to = self.host.tenant(&o.tenant).map(|p| p.config.alerts.email.clone()).unwrap_or_default();
        let topic = topics::device(&o.tenant, &o.device, topics::ALERT);
        for (i, alert) in o.decision.alerts.iter().enumerate() {
            store.enqueue(MessageKind::Publication, &topic, &messages::alert(o, alert), now_ms)?;
            let email = email::render(o, i, alert, &to, now_ms);
            store.enqueue(MessageKind::Email, &email.file_name, email.message.as_bytes(), now_ms)?;
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
