//! Everything that leaves the host goes through the store's outbox: the ingest batch writes the
//! messages in the same transaction as the predictions they describe, and the [`Dispatcher`]
//! delivers them — MQTT publications (QoS 1, done only once the broker acknowledged them) and
//! alert e-mail files — with exponential back-off per message. Publications are pipelined: a
//! batch goes out as soon as it is committed, while earlier batches still wait for their
//! acknowledgements (waiting for each batch's acknowledgements before sending the next held
//! predictions back tens of milliseconds at 10k readings/s). A host that was offline, or
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
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{info, warn};

/// Messages delivered per pass.
const BATCH: usize = 512;
/// How long the broker may take to acknowledge a batch of publications.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Publications sent and not yet acknowledged before the dispatcher stops reading new ones.
const MAX_IN_FLIGHT: usize = 4096;
/// Messages kept in memory for a retry before new ones are left in the store.
const MAX_RETRYING: usize = 10_000;
/// Longest wait before a failed message is retried.
const MAX_BACKOFF_MS: i64 = 5 * 60_000;
/// Attempts after which an alert e-mail file that cannot be written is dead-lettered.
const FILE_MAX_ATTEMPTS: u32 = 10;

/// Wakes the dispatcher (after a commit). Cheap and never blocks; a wake while the dispatcher
/// is busy is kept for its next wait.
#[derive(Clone)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// A batch of publications sent and waiting for the broker's acknowledgements.
struct InFlight {
    /// The publishing session's acknowledgement count at which the whole batch is acknowledged
    /// (QoS 1 acknowledgements come back in the order of the publications).
    target: u64,
    items: Vec<OutboxItem>,
    sent: Instant,
}

/// The MQTT side of the dispatcher: a client on its own connection, the count of publications
/// the broker acknowledged so far, and whether the connection is up.
#[derive(Clone)]
pub struct MqttOut {
    pub client: AsyncClient,
    pub acks: tokio::sync::watch::Receiver<u64>,
    pub connected: Arc<AtomicBool>,
    pub runtime: tokio::runtime::Handle,
    /// Larger publications (topic and payload) are dead-lettered (`[mqtt] max_publish_bytes`).
    pub max_publish_bytes: usize,
}

/// Where the file sinks write.
#[derive(Debug, Clone)]
pub struct Paths {
    /// One `.eml` file per alert.
    pub email_dir: PathBuf,
    /// One JSON line per MQTT message delivered: `{"time", "topic", "payload"}`; `None`: off.
    pub mqtt_log: Option<PathBuf>,
    /// Size at which the message log is renamed to `<name>.1` (replacing the one before) and a
    /// new one started.
    pub mqtt_log_max_bytes: u64,
    /// Messages that can never be delivered, one JSON line each: `{"time", "sink", "target",
    /// "bytes", "reason", "payload"}`.
    pub dead_letters: PathBuf,
}

/// Delivers the outbox.
pub struct Dispatcher {
    store: SqliteStore,
    mqtt: MqttOut,
    paths: Paths,
    metrics: TelemetryMetrics,
    wake: Arc<Notify>,
    stop: Arc<AtomicBool>,
    /// Ids delivered, for the ingest loop to delete.
    delivered: Sender<Vec<i64>>,
    /// Highest id read from the store so far; everything at or below it is delivered, waiting
    /// for deletion, or in `retry`.
    cursor: i64,
    /// Failed messages with the time of their next attempt, oldest failure first.
    retry: VecDeque<(i64, OutboxItem)>,
    /// Publications sent, oldest first, waiting for acknowledgements.
    in_flight: VecDeque<InFlight>,
    /// Acknowledgement count at which everything published so far is acknowledged.
    published: u64,
    /// When the outbox depth gauge is refreshed next.
    next_depth: std::time::Instant,
    /// The MQTT message log, open, and its size.
    mqtt_log: Option<(std::fs::File, u64)>,
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
        if let Some(dir) = paths.mqtt_log.as_deref().and_then(|p| p.parent()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let wake = Arc::new(Notify::new());
        let published = *mqtt.acks.borrow();
        Ok((
            Dispatcher {
                store,
                mqtt,
                paths,
                metrics,
                wake: wake.clone(),
                stop,
                delivered,
                cursor: 0,
                retry: VecDeque::new(),
                in_flight: VecDeque::new(),
                published,
                next_depth: std::time::Instant::now(),
                mqtt_log: None,
            },
            Waker(wake),
        ))
    }

    /// Delivers until stopped; a last pass runs after the stop so a clean shutdown leaves
    /// nothing behind that could be delivered (it waits up to [`ACK_TIMEOUT`] for the last
    /// acknowledgements).
    pub fn run(mut self) {
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            while self.pass() {}
            self.settle();
            if stopping {
                let deadline = Instant::now() + ACK_TIMEOUT;
                while !self.in_flight.is_empty() && Instant::now() < deadline {
                    self.wait(deadline - Instant::now());
                    self.settle();
                }
                break;
            }
            self.wait(Duration::from_secs(1));
        }
        if !self.retry.is_empty() || !self.in_flight.is_empty() {
            info!(
                messages = self.retry.len() + self.in_flight.iter().map(|f| f.items.len()).sum::<usize>(),
                "Undelivered messages at shutdown; delivered after the next start"
            );
        }
    }

    /// Sleeps until woken (a commit), an acknowledgement arrives for a publication in flight,
    /// or `limit` passes.
    fn wait(&mut self, limit: Duration) {
        let wake = self.wake.clone();
        let mut acks = self.mqtt.acks.clone();
        let waiting_for_acks = !self.in_flight.is_empty();
        self.mqtt.runtime.block_on(async move {
            tokio::select! {
                _ = wake.notified() => {}
                _ = acks.changed(), if waiting_for_acks => {}
                _ = tokio::time::sleep(limit) => {}
            }
        });
    }

    /// Completes the batches in flight the broker acknowledged; on a lost connection or a
    /// timeout, schedules everything in flight for a retry (acknowledgements of a lost connection
    /// never come, so the count restarts from what was acknowledged).
    fn settle(&mut self) {
        // Marks the count seen: `wait` then sleeps until the next acknowledgement.
        let acked = *self.mqtt.acks.borrow_and_update();
        while let Some(f) = self.in_flight.front() {
            if acked >= f.target {
                let f = self.in_flight.pop_front().unwrap_or_else(|| unreachable!("front exists"));
                self.log_mqtt(&f.items);
                self.metrics.delivered(Sink::Mqtt.as_str()).inc_by(f.items.len() as u64);
                self.done(&f.items.iter().map(|i| i.id).collect::<Vec<_>>());
                continue;
            }
            let error = if !self.mqtt.connected.load(Ordering::Relaxed) {
                "connection lost before the broker acknowledged".to_string()
            } else if f.sent.elapsed() > ACK_TIMEOUT {
                format!("no acknowledgement within {} s", ACK_TIMEOUT.as_secs())
            } else {
                break;
            };
            let lost: Vec<InFlight> = self.in_flight.drain(..).collect();
            let messages: usize = lost.iter().map(|f| f.items.len()).sum();
            self.metrics.delivery_failures(Sink::Mqtt.as_str()).inc();
            warn!(messages, error = %error, "MQTT delivery failed; will retry");
            let now = now_ms();
            for f in &lost {
                self.failed(f.items.iter(), &error, now);
            }
            self.published = acked;
            break;
        }
    }

    /// One batch. `true` when a full batch was delivered (more may be waiting).
    fn pass(&mut self) -> bool {
        let now = now_ms();
        let mut due: Vec<OutboxItem> = Vec::new();
        while self.retry.front().is_some_and(|(at, _)| *at <= now) && due.len() < BATCH {
            due.extend(self.retry.pop_front().map(|(_, item)| item));
        }
        // While many messages wait for a retry (the broker is unreachable) or for their
        // acknowledgements, new ones stay in the store instead of piling up in memory.
        let in_flight: usize = self.in_flight.iter().map(|f| f.items.len()).sum();
        if self.retry.len() < MAX_RETRYING && in_flight < MAX_IN_FLIGHT {
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
            progressed |= self.deliver_mqtt(mqtt, now);
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

    /// Writes alert e-mail files durably: each under a temporary name, synced, renamed into
    /// place; then the folder is synced, and only then do the files count as delivered (a power
    /// cut cannot lose a file whose outbox row is gone).
    fn deliver_files(&mut self, items: &[OutboxItem], now: i64) -> bool {
        let mut delivered = Vec::new();
        for item in items {
            let path = self.paths.email_dir.join(&item.target);
            let tmp = self.paths.email_dir.join(format!(".{}.tmp", item.target));
            match write_synced(&tmp, &item.payload).and_then(|()| std::fs::rename(&tmp, &path)) {
                Ok(()) => delivered.push(item.id),
                Err(e) => {
                    self.metrics.delivery_failures(Sink::Email.as_str()).inc();
                    if item.attempts + 1 >= FILE_MAX_ATTEMPTS {
                        let reason = format!("writing the file failed {FILE_MAX_ATTEMPTS} times, last: {e}");
                        self.dead_letter(item, &reason);
                        delivered.push(item.id);
                        continue;
                    }
                    warn!(file = %path.display(), error = %e, "Writing an alert e-mail failed; will retry");
                    self.failed(std::iter::once(item), &e.to_string(), now);
                }
            }
        }
        if !delivered.is_empty()
            && let Err(e) = std::fs::File::open(&self.paths.email_dir).and_then(|d| d.sync_all())
        {
            // The files are in place but perhaps not on disk: written again on the retry.
            warn!(folder = %self.paths.email_dir.display(), error = %e, "Syncing the alert e-mail folder failed; will retry");
            self.metrics.delivery_failures(Sink::Email.as_str()).inc();
            let written: Vec<&OutboxItem> = items.iter().filter(|i| delivered.contains(&i.id)).collect();
            self.failed(written.into_iter(), &e.to_string(), now);
            return false;
        }
        self.metrics.delivered(Sink::Email.as_str()).inc_by(delivered.len() as u64);
        self.done(&delivered);
        !delivered.is_empty()
    }

    /// Sends `items` and puts them in flight; they are done when [`Dispatcher::settle`] sees
    /// their acknowledgements.
    fn deliver_mqtt(&mut self, items: Vec<OutboxItem>, now: i64) -> bool {
        let max = self.mqtt.max_publish_bytes;
        let (items, too_large): (Vec<OutboxItem>, Vec<OutboxItem>) =
            items.into_iter().partition(|i| i.target.len() + i.payload.len() <= max);
        for item in &too_large {
            let reason = format!(
                "{} bytes, more than max_publish_bytes = {max}",
                item.target.len() + item.payload.len()
            );
            self.dead_letter(item, &reason);
        }
        self.done(&too_large.iter().map(|i| i.id).collect::<Vec<_>>());
        if items.is_empty() {
            return !too_large.is_empty();
        }
        if !self.mqtt.connected.load(Ordering::Relaxed) {
            // Not a failure of the messages: they wait for the connection.
            let at = now + 500;
            self.retry.extend(items.into_iter().map(|i| (at, i)));
            return false;
        }
        // Before sending: acknowledgements of this batch may arrive before `publish` returns.
        let base = self.published.max(*self.mqtt.acks.borrow());
        let client = self.mqtt.client.clone();
        let sent: Result<(), String> = self.mqtt.runtime.block_on(async {
            for item in &items {
                client
                    .publish(item.target.clone(), QoS::AtLeastOnce, false, item.payload.clone())
                    .await
                    .map_err(|e| format!("publishing: {e}"))?;
            }
            Ok(())
        });
        match sent {
            Ok(()) => {
                self.published = base + items.len() as u64;
                self.in_flight.push_back(InFlight { target: self.published, items, sent: Instant::now() });
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

    /// Appends the delivered publications to the message log, one JSON line each. The file
    /// stays open between calls (reopened after an error, e.g. when it was rotated away); past
    /// [`Paths::mqtt_log_max_bytes`] it is rotated.
    fn log_mqtt(&mut self, items: &[OutboxItem]) {
        let Some(path) = self.paths.mqtt_log.clone() else { return };
        let time = messages::rfc3339(now_ms());
        let mut lines = Vec::with_capacity(items.iter().map(|i| i.payload.len() + 128).sum());
        for item in items {
            log_line(&mut lines, &time, &item.target, &item.payload);
        }
        if self.mqtt_log.is_none() {
            match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.mqtt_log = Some((f, size));
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "Opening the MQTT message log failed");
                    return;
                }
            }
        }
        let Some((file, size)) = &mut self.mqtt_log else { return };
        if let Err(e) = file.write_all(&lines) {
            self.mqtt_log = None;
            warn!(file = %path.display(), error = %e, "Appending to the MQTT message log failed");
            return;
        }
        *size += lines.len() as u64;
        if *size >= self.paths.mqtt_log_max_bytes {
            self.mqtt_log = None;
            let mut old = path.clone().into_os_string();
            old.push(".1");
            if let Err(e) = std::fs::rename(&path, &old) {
                warn!(file = %path.display(), error = %e, "Rotating the MQTT message log failed");
            }
        }
    }

    /// A message that can never be delivered: counted, logged and written to
    /// [`Paths::dead_letters`]; the caller reports it done, so it is never retried.
    fn dead_letter(&mut self, item: &OutboxItem, reason: &str) {
        self.metrics.dead_lettered(item.sink.as_str()).inc();
        tracing::error!(sink = item.sink.as_str(), target = %item.target, bytes = item.payload.len(), reason,
            "Outbox message can never be delivered; dead-lettered");
        let line = serde_json::json!({
            "time": messages::rfc3339(now_ms()),
            "sink": item.sink.as_str(),
            "target": item.target,
            "bytes": item.payload.len(),
            "reason": reason,
            "payload": String::from_utf8_lossy(&item.payload),
        });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.dead_letters)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            warn!(file = %self.paths.dead_letters.display(), error = %e, "Writing the dead letter failed");
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

/// One line of the MQTT message log: `{"time", "direction": "out", "topic", "payload"}`, the
/// payload embedded as JSON when it is JSON (everything the host publishes is), else as a string.
fn log_line(out: &mut Vec<u8>, time: &str, topic: &str, payload: &[u8]) {
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(b"\",\"direction\":\"out\",\"topic\":");
    let _ = serde_json::to_writer(&mut *out, topic);
    out.extend_from_slice(b",\"payload\":");
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok() {
        out.extend(payload.iter().filter(|&&b| b != b'\n' && b != b'\r'));
    } else {
        let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(payload));
    }
    out.extend_from_slice(b"}\n");
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes `bytes` to a new file at `path` and syncs it to disk.
fn write_synced(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_log_lines_embed_json_payloads_and_quote_the_rest() {
        let mut out = Vec::new();
        log_line(
            &mut out,
            "2025-04-05T10:30:00Z",
            "edgepm/a/\"b\"/prediction",
            b"{\"p\": 0.97,\n \"s\": \"x\"}",
        );
        log_line(&mut out, "2025-04-05T10:30:00Z", "edgepm/a/b/deadletter", b"not json \xff");
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["topic"], "edgepm/a/\"b\"/prediction");
        assert_eq!(lines[0]["payload"]["p"], 0.97);
        assert_eq!(lines[0]["direction"], "out");
        assert_eq!(lines[1]["payload"], "not json \u{fffd}");
    }
}
