//! Everything that leaves the host goes through the store's outbox: the ingest batch writes the
//! messages in the same transaction as the predictions they describe, and the [`Dispatcher`]
//! delivers them — MQTT publications (QoS 1, done only once the broker acknowledged them) and
//! alert e-mail files — with exponential back-off per message. A host that was offline, or
//! killed, catches up when it comes back. Delivery is at least once: a message may be published
//! twice after a crash, never zero times.
//!
//! The dispatcher only reads the store. The ids it delivered go back to the ingest loop, the
//! store's single writer, which deletes them in its next transaction: two writers on one SQLite
//! file would make each wait for the other's lock (SQLite's busy handler sleeps milliseconds).

pub mod email;
pub mod messages;

use crate::metrics::TelemetryMetrics;
use crate::store::{OutboxItem, Sink, SqliteStore};
use rumqttc::{AsyncClient, QoS};
use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::time::Duration;
use tracing::{info, warn};

/// Messages delivered per pass.
const BATCH: usize = 512;
/// How long the broker may take to acknowledge a batch of publications.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of the store's WAL checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// Messages kept in memory for a retry before new ones are left in the store.
const MAX_RETRYING: usize = 10_000;
/// Longest wait before a failed message is retried.
const MAX_BACKOFF_MS: i64 = 5 * 60_000;

/// Wakes the dispatcher (after a commit). Cheap and never blocks.
#[derive(Clone)]
pub struct Waker(SyncSender<()>);

impl Waker {
    pub fn wake(&self) {
        if let Err(TrySendError::Disconnected(())) = self.0.try_send(()) {
            // The dispatcher is gone (shutting down): nothing to wake.
        }
    }
}

/// The MQTT side of the dispatcher: a client on its own connection, the count of publications
/// the broker acknowledged so far, and whether the connection is up.
#[derive(Clone)]
pub struct MqttOut {
    pub client: AsyncClient,
    pub acks: tokio::sync::watch::Receiver<u64>,
    pub connected: Arc<AtomicBool>,
    pub runtime: tokio::runtime::Handle,
}

/// Where the file sinks write.
#[derive(Debug, Clone)]
pub struct Paths {
    /// One `.eml` file per alert.
    pub email_dir: PathBuf,
    /// One JSON line per MQTT message delivered: `{"time", "topic", "payload"}`.
    pub mqtt_log: PathBuf,
}

/// Delivers the outbox.
pub struct Dispatcher {
    store: SqliteStore,
    mqtt: MqttOut,
    paths: Paths,
    metrics: TelemetryMetrics,
    wake: Receiver<()>,
    stop: Arc<AtomicBool>,
    /// Ids delivered, for the ingest loop to delete.
    delivered: Sender<Vec<i64>>,
    /// Highest id read from the store so far; everything at or below it is delivered, waiting
    /// for deletion, or in `retry`.
    cursor: i64,
    /// Failed messages with the time of their next attempt, oldest failure first.
    retry: VecDeque<(i64, OutboxItem)>,
    /// When the outbox depth gauge is refreshed next.
    next_depth: std::time::Instant,
}

impl Dispatcher {
    /// A dispatcher over its own connection to the store at `store`, and the [`Waker`] the
    /// ingest loop calls after each commit.
    pub fn new(
        store: SqliteStore,
        mqtt: MqttOut,
        paths: Paths,
        metrics: TelemetryMetrics,
        stop: Arc<AtomicBool>,
        delivered: Sender<Vec<i64>>,
    ) -> anyhow::Result<(Dispatcher, Waker)> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&paths.email_dir)
            .with_context(|| format!("creating {}", paths.email_dir.display()))?;
        if let Some(dir) = paths.mqtt_log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        Ok((
            Dispatcher {
                store,
                mqtt,
                paths,
                metrics,
                wake: rx,
                stop,
                delivered,
                cursor: 0,
                retry: VecDeque::new(),
                next_depth: std::time::Instant::now(),
            },
            Waker(tx),
        ))
    }

    /// Delivers until stopped; a last pass runs after the stop so a clean shutdown leaves
    /// nothing behind that could be delivered. This thread also checkpoints the store's WAL
    /// (its connection is not the writer's), at most every [`CHECKPOINT_EVERY`].
    pub fn run(mut self) {
        let mut next_checkpoint = std::time::Instant::now();
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            while self.pass() {}
            if std::time::Instant::now() >= next_checkpoint || stopping {
                next_checkpoint = std::time::Instant::now() + CHECKPOINT_EVERY;
                if let Err(e) = self.store.checkpoint() {
                    warn!(error = %e, "WAL checkpoint failed");
                }
            }
            if stopping {
                break;
            }
            match self.wake.recv_timeout(Duration::from_secs(1)) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.stop.store(true, Ordering::Relaxed),
            }
        }
        if !self.retry.is_empty() {
            info!(
                messages = self.retry.len(),
                "Undelivered messages at shutdown; delivered after the next start"
            );
        }
    }

    /// One batch. `true` when a full batch was delivered (more may be waiting).
    fn pass(&mut self) -> bool {
        let now = now_ms();
        let mut due: Vec<OutboxItem> = Vec::new();
        while self.retry.front().is_some_and(|(at, _)| *at <= now) && due.len() < BATCH {
            due.extend(self.retry.pop_front().map(|(_, item)| item));
        }
        // While many messages wait for a retry (the broker is unreachable), new ones stay in the
        // store instead of piling up in memory.
        if self.retry.len() < MAX_RETRYING {
            match self.store.outbox_after(self.cursor, BATCH - due.len()) {
                Ok(fresh) => {
                    self.cursor = fresh.last().map_or(self.cursor, |i| i.id);
                    due.extend(fresh);
                }
                Err(e) => warn!(error = %e, "Reading the outbox failed"),
            }
        }
        let full = due.len() == BATCH;
        let (mqtt, files): (Vec<OutboxItem>, Vec<OutboxItem>) =
            due.into_iter().partition(|i| i.sink == Sink::Mqtt);
        let mut progressed = false;
        if !files.is_empty() {
            progressed |= self.deliver_files(&files, now);
        }
        if !mqtt.is_empty() {
            progressed |= self.deliver_mqtt(&mqtt, now);
        }
        if std::time::Instant::now() >= self.next_depth {
            // count(*) reads the whole table: once a second is plenty for a gauge.
            self.next_depth = std::time::Instant::now() + Duration::from_secs(1);
            if let Ok(n) = self.store.outbox_depth() {
                self.metrics.outbox_depth.set(n as i64);
            }
        }
        full && progressed
    }

    fn deliver_files(&mut self, items: &[OutboxItem], now: i64) -> bool {
        let mut delivered = Vec::new();
        for item in items {
            let path = self.paths.email_dir.join(&item.target);
            let tmp = self.paths.email_dir.join(format!(".{}.tmp", item.target));
            match std::fs::write(&tmp, &item.payload).and_then(|()| std::fs::rename(&tmp, &path)) {
                Ok(()) => delivered.push(item.id),
                Err(e) => {
                    self.metrics.delivery_failures(Sink::Email.as_str()).inc();
                    warn!(file = %path.display(), error = %e, "Writing an alert e-mail failed; will retry");
                    self.failed(std::iter::once(item), &e.to_string(), now);
                }
            }
        }
        self.metrics.delivered(Sink::Email.as_str()).inc_by(delivered.len() as u64);
        self.done(&delivered);
        !delivered.is_empty()
    }

    fn deliver_mqtt(&mut self, items: &[OutboxItem], now: i64) -> bool {
        if !self.mqtt.connected.load(Ordering::Relaxed) {
            // Not a failure of the messages: they wait for the connection.
            let at = now + 500;
            self.retry.extend(items.iter().map(|i| (at, i.clone())));
            return false;
        }
        let target = *self.mqtt.acks.borrow() + items.len() as u64;
        let client = self.mqtt.client.clone();
        let mut acks = self.mqtt.acks.clone();
        let connected = self.mqtt.connected.clone();
        let result: Result<(), String> = self.mqtt.runtime.block_on(async move {
            for item in items {
                client
                    .publish(item.target.clone(), QoS::AtLeastOnce, false, item.payload.clone())
                    .await
                    .map_err(|e| format!("publishing: {e}"))?;
            }
            let acked = acks.wait_for(|n| *n >= target || !connected.load(Ordering::Relaxed));
            match tokio::time::timeout(ACK_TIMEOUT, acked).await {
                Ok(Ok(n)) if *n >= target => Ok(()),
                Ok(_) => Err("connection lost before the broker acknowledged".to_string()),
                Err(_) => Err(format!("no acknowledgement within {} s", ACK_TIMEOUT.as_secs())),
            }
        });
        match result {
            Ok(()) => {
                self.log_mqtt(items);
                self.metrics.delivered(Sink::Mqtt.as_str()).inc_by(items.len() as u64);
                self.done(&items.iter().map(|i| i.id).collect::<Vec<_>>());
                true
            }
            Err(e) => {
                self.metrics.delivery_failures(Sink::Mqtt.as_str()).inc();
                warn!(messages = items.len(), error = %e, "MQTT delivery failed; will retry");
                self.failed(items.iter(), &e, now);
                false
            }
        }
    }

    fn log_mqtt(&self, items: &[OutboxItem]) {
        let time = messages::rfc3339(now_ms());
        let mut lines = Vec::new();
        for item in items {
            let payload = serde_json::from_slice::<serde_json::Value>(&item.payload)
                .unwrap_or_else(|_| String::from_utf8_lossy(&item.payload).into_owned().into());
            let line = serde_json::json!({"time": time, "direction": "out", "topic": item.target, "payload": payload});
            lines.extend_from_slice(line.to_string().as_bytes());
            lines.push(b'\n');
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.mqtt_log)
            .and_then(|mut f| f.write_all(&lines));
        if let Err(e) = written {
            warn!(file = %self.paths.mqtt_log.display(), error = %e, "Appending to the MQTT message log failed");
        }
    }

    fn done(&self, ids: &[i64]) {
        if !ids.is_empty() && self.delivered.send(ids.to_vec()).is_err() {
            // The ingest loop is gone (shutdown): the rows stay and are sent again after a start.
        }
    }

    /// Schedules a retry with exponential back-off (1 s, 2 s, 4 s … 5 min).
    fn failed<'a>(&mut self, items: impl Iterator<Item = &'a OutboxItem>, error: &str, now: i64) {
        for item in items {
            let mut item = item.clone();
            let backoff = (1000i64 << item.attempts.min(20)).min(MAX_BACKOFF_MS);
            item.attempts += 1;
            tracing::debug!(id = item.id, attempts = item.attempts, error, "Delivery failed");
            let at = now + backoff;
            let pos = self.retry.partition_point(|(t, _)| *t <= at);
            self.retry.insert(pos, (at, item));
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
