//! Sinks: where the outbox's messages go. Each sink takes the messages of one kind
//! ([`MessageKind`]) and has a driver of its own — a thread with its own store connection, its
//! own cursor in the store and its own retries — so a slow or unreachable sink never holds back
//! another: with the broker frozen, alert e-mail files and the message log go on being written.
//!
//! A [`Sink`] delivers a batch and answers one [`Outcome`] per message: delivered, retry (after
//! the driver's exponential back-off, or when the sink says), or a permanent failure, which is
//! dead-lettered (counted, logged, written to `undeliverable.jsonl`) and never retried. The
//! driver reads the outbox after its cursor, keeps what failed in memory for its retry and
//! reports to the ingest loop — the store's single writer — the id up to which it has settled
//! everything ([`Settled`]); the ingest loop stores the cursors and deletes the rows every sink
//! has settled. A host that was killed starts each sink after its stored cursor: what was in
//! flight or waiting for a retry is delivered again (at least once, never zero times).
//!
//! The sinks so far: [`mqtt`] (predictions, alerts and dead letters published with QoS 1, done
//! when the broker acknowledged that very packet), [`email_files`] (one RFC 5322 file per alert,
//! synced), [`message_log`] (one JSON line per publication, for people and tests).

pub mod aws;
pub mod email_files;
pub mod influxdb;
pub mod message_log;
pub mod mqtt;
pub mod ses;
pub mod sns;
pub mod timestream;

use crate::clock::{now_ms, rfc3339};
use crate::metrics::TelemetryMetrics;
use crate::shutdown::{Shutdown, Stage};
use crate::store::{MessageKind, OutboxItem, SqliteStore};
pub use crate::store::{Settled, Waker};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{info, warn};

/// What became of one message of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// Not delivered this time; tried again `after` (when the sink knows, e.g. `Retry-After`),
    /// else after the driver's back-off (1 s, 2 s, 4 s … 5 min).
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Can never be delivered: dead-lettered with the reason, never retried.
    Permanent(String),
}

impl Outcome {
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry { reason: reason.into(), after: None }
    }
}

/// A delivery under way: one outcome per message of the batch, in the batch's order.
pub type Delivery = Pin<Box<dyn Future<Output = Vec<Outcome>> + Send + 'static>>;

/// A destination for the outbox's messages of one kind.
pub trait Sink: Send + 'static {
    /// The sink's name in metrics (`sink` label), logs, dead letters and the store's cursors.
    fn name(&self) -> &'static str;
    /// The messages it takes.
    fn kind(&self) -> MessageKind;
    /// Messages per batch, at most.
    fn batch_size(&self) -> usize {
        512
    }
    /// Batches under way at once: a later batch may go out while an earlier one waits for its
    /// acknowledgements.
    fn concurrency(&self) -> usize {
        1
    }
    /// How long a batch that is not full waits for more messages, counted from the creation of
    /// its oldest (a backlog goes out in full batches at once). Zero: no wait.
    fn linger(&self) -> Duration {
        Duration::ZERO
    }
    /// Longest wait before a failed message is tried again (the back-off doubles from 1 s up to
    /// this). The cloud sinks wait at most a minute, so an uplink back after hours is used soon.
    fn max_backoff(&self) -> Duration {
        MAX_BACKOFF
    }
    /// Whether messages must arrive in the outbox's order: while a message waits for its retry,
    /// nothing after it is sent (head-of-line), so a device's records never overtake each other.
    fn ordered(&self) -> bool {
        false
    }
    /// Whether a batch can be tried now (e.g. the connection is up). While not, messages stay in
    /// the store and no attempt is counted against them.
    fn ready(&self) -> bool {
        true
    }
    /// Resolves when [`Sink::ready`] may have changed.
    fn readiness(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(std::future::pending())
    }
    /// Starts delivering `batch`. Work that cannot wait (a file write) may be done here and
    /// a ready future returned.
    fn deliver(&mut self, batch: &[OutboxItem]) -> Delivery;
}

/// Messages that can never be delivered, one JSON line each in a file shared by the sinks:
/// `{"time", "sink", "target", "bytes", "reason", "payload"}`.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    pub path: PathBuf,
}

impl DeadLetters {
    /// Counts, logs and appends the dead letter (one `write` per line, so the lines of several
    /// sinks never interleave).
    pub fn write(&self, metrics: &TelemetryMetrics, sink: &'static str, item: &OutboxItem, reason: &str) {
        use std::io::Write as _;
        metrics.dead_lettered(sink).inc();
        tracing::error!(sink, target = %item.target, bytes = item.payload.len(), reason,
            "Outbox message can never be delivered; dead-lettered");
        let mut line = serde_json::to_vec(&serde_json::json!({
            "time": rfc3339(now_ms()),
            "sink": sink,
            "target": item.target,
            "bytes": item.payload.len(),
            "reason": reason,
            "payload": String::from_utf8_lossy(&item.payload),
        }))
        .unwrap_or_default();
        line.push(b'\n');
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line));
        if let Err(e) = written {
            warn!(file = %self.path.display(), error = %e, "Writing the dead letter failed");
        }
    }
}

fn yes() -> bool {
    true
}

/// `[sinks.*]` in `edgepm.toml`: the cloud sinks, each off unless its table is there. The MQTT,
/// e-mail files and message log sinks are always on (the log unless `[logs] mqtt_log = false`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    #[serde(default)]
    pub timestream: Option<timestream::TimestreamConfig>,
    #[serde(default)]
    pub influxdb: Option<influxdb::InfluxConfig>,
    #[serde(default)]
    pub sns: Option<sns::SnsConfig>,
    #[serde(default)]
    pub ses: Option<ses::SesConfig>,
}

impl SinksConfig {
    /// Every problem of the configured sinks, or `Ok`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let problems: Vec<String> = [
            self.timestream.as_ref().map(|c| c.validate()),
            self.influxdb.as_ref().map(|c| c.validate()),
            self.sns.as_ref().map(|c| c.validate()),
            self.ses.as_ref().map(|c| c.validate()),
        ]
        .into_iter()
        .flatten()
        .filter_map(Result::err)
        .collect();
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// What the outbox must make for these sinks.
    pub fn wanted(&self) -> crate::outbox::Wanted {
        crate::outbox::Wanted {
            records: self.timestream.is_some() || self.influxdb.is_some(),
            readings: self.timestream.as_ref().is_some_and(|c| c.readings)
                || self.influxdb.as_ref().is_some_and(|c| c.readings),
            alerts: self.sns.is_some(),
            email_from: self.ses.as_ref().map(|s| s.from.clone()),
        }
    }
}

/// What a driver shares with the rest of the host.
pub struct DriverContext {
    /// A connection of the driver's own (it only reads).
    pub store: SqliteStore,
    pub metrics: TelemetryMetrics,
    pub dead_letters: DeadLetters,
    /// To the ingest loop, which stores the cursors.
    pub settled: std::sync::mpsc::Sender<Settled>,
    /// At [`Stage::Sinks`] (the ingest loop has stored its last message) the driver delivers
    /// what it can within [`STOP_GRACE`] and ends.
    pub shutdown: Shutdown,
    /// Where it starts: the cursor stored for it (0 for a new sink).
    pub start_after: i64,
}

/// How long a stopping driver goes on delivering (and waiting for acknowledgements).
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Messages a driver keeps in memory for a retry before it leaves new ones in the store.
const MAX_RETRYING: usize = 10_000;
/// Messages read and not yet settled, at most.
const MAX_OPEN: usize = 20_000;
/// Longest wait before a failed message is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// The cloud sinks' longest wait: an uplink that comes back after hours is used within a minute.
pub const CLOUD_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The running drivers.
pub struct Drivers {
    pub waker: Waker,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The sinks' names, for the ingest loop's cursors.
    pub names: Vec<&'static str>,
}

impl Drivers {
    pub fn new() -> Drivers {
        Drivers { waker: Waker::default(), threads: Vec::new(), names: Vec::new() }
    }

    /// Starts the driver of `sink` on a thread of its own (named `edgepm-sink-<name>`); a
    /// driver that panics or ends before shutdown stops the process (see [`crate::worker`]).
    pub fn spawn(&mut self, sink: impl Sink, context: DriverContext) -> anyhow::Result<()> {
        let name = sink.name();
        let wake = Arc::new(Notify::new());
        let shutdown = context.shutdown.clone();
        let driver = Driver::new(sink, context, wake.clone());
        let thread = crate::worker::spawn(format!("edgepm-sink-{name}"), shutdown, move || driver.run())?;
        self.waker.add(wake);
        self.threads.push(thread);
        self.names.push(name);
        Ok(())
    }

    /// Waits for every driver to end (after [`Stage::Sinks`]).
    pub fn join(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Default for Drivers {
    fn default() -> Self {
        Self::new()
    }
}

/// Delivers the messages of one sink's kind, from its cursor on.
pub struct Driver<S: Sink> {
    sink: S,
    name: &'static str,
    kind: MessageKind,
    cx: DriverContext,
    wake: Arc<Notify>,
    /// Highest id read (or looked at) so far.
    cursor: i64,
    /// Ids read and not yet settled: under way or waiting for a retry.
    open: BTreeSet<i64>,
    /// Failed messages and the time of their next attempt (ms), soonest first.
    retry: VecDeque<(i64, OutboxItem)>,
    under_way: tokio::task::JoinSet<Vec<Outcome>>,
    batches: HashMap<tokio::task::Id, Vec<OutboxItem>>,
    /// Last cursor reported to the ingest loop.
    reported: i64,
    /// A batch read but not full yet, waiting for its linger time (see [`Sink::linger`]).
    lingering: Vec<OutboxItem>,
    next_gauges: Instant,
}

impl<S: Sink> Driver<S> {
    pub fn new(sink: S, cx: DriverContext, wake: Arc<Notify>) -> Driver<S> {
        let start = cx.start_after;
        Driver {
            name: sink.name(),
            kind: sink.kind(),
            sink,
            cx,
            wake,
            cursor: start,
            open: BTreeSet::new(),
            retry: VecDeque::new(),
            under_way: tokio::task::JoinSet::new(),
            batches: HashMap::new(),
            reported: start,
            lingering: Vec::new(),
            next_gauges: Instant::now(),
        }
    }

    /// Delivers until stopped, on a single-threaded runtime of its own.
    pub fn run(self) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        match runtime {
            Ok(rt) => rt.block_on(self.deliver_until_stopped()),
            Err(e) => tracing::error!(sink = self.name, error = %e, "Starting the sink's runtime failed"),
        }
    }

    async fn deliver_until_stopped(mut self) {
        let mut deadline: Option<tokio::time::Instant> = None;
        let stopping = self.cx.shutdown.wait(Stage::Sinks);
        tokio::pin!(stopping);
        loop {
            if deadline.is_none() && self.cx.shutdown.reached(Stage::Sinks) {
                deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
            }
            while self.under_way.len() < self.sink.concurrency().max(1) && self.sink.ready() {
                let batch = self.next_batch(deadline.is_some());
                if batch.is_empty() {
                    break;
                }
                let delivery = self.sink.deliver(&batch);
                let handle = self.under_way.spawn(delivery);
                self.batches.insert(handle.id(), batch);
            }
            self.report();
            self.gauges();
            if let Some(d) = deadline
                && (self.under_way.is_empty() || tokio::time::Instant::now() >= d)
            {
                break;
            }
            // Until the next retry falls due, when one could start; else a second (or a wake).
            let ready = self.sink.ready();
            let room = self.under_way.len() < self.sink.concurrency().max(1);
            let mut sleep = match self.retry.front() {
                Some((at, _)) if ready && room => {
                    Duration::from_millis((at - now_ms()).clamp(1, 1000) as u64)
                }
                _ => Duration::from_secs(1),
            };
            if let Some(first) = self.lingering.first()
                && ready
                && room
            {
                let at = first.created_ms + self.sink.linger().as_millis() as i64;
                sleep = sleep.min(Duration::from_millis((at - now_ms()).clamp(1, 1000) as u64));
            }
            tokio::select! {
                Some(done) = self.under_way.join_next_with_id(), if !self.under_way.is_empty() => {
                    let (id, outcomes) = match done {
                        Ok((id, outcomes)) => (id, outcomes),
                        Err(e) => (e.id(), Vec::new()),
                    };
                    let batch = self.batches.remove(&id).unwrap_or_default();
                    self.settle(batch, outcomes);
                }
                _ = self.wake.notified() => {}
                _ = &mut stopping, if deadline.is_none() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = self.sink.readiness(), if !ready => {}
            }
        }
        self.report();
        let left = self.open.len();
        if left > 0 {
            info!(
                sink = self.name,
                messages = left,
                "Undelivered messages at shutdown; delivered after the next start"
            );
        }
    }

    /// Due retries first, then new messages from the store. A batch that is not full waits for
    /// the sink's linger time, unless the driver is stopping.
    fn next_batch(&mut self, stopping: bool) -> Vec<OutboxItem> {
        let now = now_ms();
        let n = self.sink.batch_size().max(1);
        let mut due = Vec::new();
        while due.len() < n && self.retry.front().is_some_and(|(at, _)| *at <= now) {
            due.extend(self.retry.pop_front().map(|(_, item)| item));
        }
        let retrying = !due.is_empty();
        let lingering = std::mem::take(&mut self.lingering);
        let room = n.saturating_sub(due.len());
        if lingering.len() > room {
            // Only after a retry came due while a batch lingered: the rest lingers on.
            let (now_go, wait) = lingering.split_at(room);
            due.extend_from_slice(now_go);
            self.lingering = wait.to_vec();
            return due;
        }
        due.extend(lingering);
        // While many messages wait (the sink is unreachable), new ones stay in the store instead
        // of piling up in memory; an ordered sink reads nothing new while a retry waits.
        let blocked = self.sink.ordered() && !self.retry.is_empty();
        if due.len() < n && !blocked && self.retry.len() < MAX_RETRYING && self.open.len() < MAX_OPEN {
            match self.cx.store.outbox_after(self.cursor, self.kind, n - due.len()) {
                Ok(read) => {
                    self.cursor = read.scanned;
                    self.open.extend(read.items.iter().map(|i| i.id));
                    due.extend(read.items);
                }
                Err(e) => warn!(sink = self.name, error = %e, "Reading the outbox failed"),
            }
        }
        let linger = self.sink.linger().as_millis() as i64;
        if linger > 0
            && !retrying
            && due.len() < n
            && !stopping
            && due.first().is_some_and(|i| now - i.created_ms < linger)
        {
            self.lingering = due;
            return Vec::new();
        }
        due
    }

    fn settle(&mut self, batch: Vec<OutboxItem>, outcomes: Vec<Outcome>) {
        let metrics = &self.cx.metrics;
        let now = now_ms();
        let mut delivered = 0u64;
        let mut retried: Vec<(OutboxItem, String, Option<Duration>)> = Vec::new();
        let mut outcomes = outcomes.into_iter();
        for item in batch {
            let outcome =
                outcomes.next().unwrap_or_else(|| Outcome::retry("the delivery ended without an outcome"));
            match outcome {
                Outcome::Delivered => {
                    delivered += 1;
                    self.open.remove(&item.id);
                }
                Outcome::Permanent(reason) => {
                    self.cx.dead_letters.write(metrics, self.name, &item, &reason);
                    self.open.remove(&item.id);
                }
                Outcome::Retry { reason, after } => retried.push((item, reason, after)),
            }
        }
        metrics.delivered(self.name).inc_by(delivered);
        if let Some((_, reason, _)) = retried.first() {
            metrics.delivery_failures(self.name).inc();
            metrics.retried(self.name).inc_by(retried.len() as u64);
            warn!(sink = self.name, messages = retried.len(), error = %reason, "Delivery failed; will retry");
        }
        for (mut item, reason, after) in retried {
            let backoff = Duration::from_secs(1 << item.attempts.min(16)).min(self.sink.max_backoff());
            item.attempts += 1;
            tracing::debug!(
                sink = self.name,
                id = item.id,
                attempts = item.attempts,
                reason,
                "Delivery failed"
            );
            let at = now + after.unwrap_or(backoff).min(MAX_BACKOFF).as_millis() as i64;
            let pos = self.retry.partition_point(|(t, _)| *t <= at);
            self.retry.insert(pos, (at, item));
        }
    }

    /// Reports the cursor when it moved: everything of the sink's kind up to it is settled.
    fn report(&mut self) {
        let upto = match self.open.first() {
            Some(first) => first - 1,
            None => self.cursor,
        };
        if upto > self.reported && self.cx.settled.send(Settled { sink: self.name, upto }).is_ok() {
            self.reported = upto;
        }
    }

    /// Queue depth and age of the oldest unsettled message, once a second — less often when the
    /// count itself takes long (it reads every row after the cursor: a sink that has been down
    /// for hours spends at most 2 % of its thread counting).
    fn gauges(&mut self) {
        if Instant::now() < self.next_gauges {
            return;
        }
        let started = Instant::now();
        let pending = self.cx.store.outbox_pending(self.reported, self.kind);
        self.next_gauges = Instant::now() + Duration::from_secs(1).max(started.elapsed() * 50);
        match pending {
            Ok((n, oldest)) => {
                self.cx.metrics.outbox_queue(self.name).set(n.min(i64::MAX as u64) as i64);
                let age = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
                self.cx.metrics.outbox_oldest_seconds(self.name).set(age);
            }
            Err(e) => tracing::debug!(sink = self.name, error = %e, "Counting the sink's queue failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    /// Fails the message `"2"` once (retry soon) and `"4"` for good; delivers the rest.
    struct Scripted {
        failed_once: bool,
        batches: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    }

    impl Sink for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn kind(&self) -> MessageKind {
            MessageKind::Publication
        }
        fn deliver(&mut self, batch: &[OutboxItem]) -> Delivery {
            let payloads: Vec<String> =
                batch.iter().map(|i| String::from_utf8_lossy(&i.payload).into()).collect();
            self.batches.lock().unwrap().push(payloads.clone());
            let outcomes = payloads
                .iter()
                .map(|p| match p.as_str() {
                    "2" if !self.failed_once => {
                        self.failed_once = true;
                        Outcome::Retry { reason: "busy".into(), after: Some(Duration::from_millis(300)) }
                    }
                    "4" => Outcome::Permanent("refused".into()),
                    _ => Outcome::Delivered,
                })
                .collect();
            Box::pin(std::future::ready(outcomes))
        }
    }

    #[test]
    fn the_cursor_waits_for_a_retry_and_passes_a_dead_letter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("edgepm.db");
        let store = SqliteStore::open(&db, Durability::Normal).expect("store");
        for i in 1..=5 {
            store.enqueue(MessageKind::Publication, "t", i.to_string().as_bytes(), 0).expect("enqueue");
        }
        store.enqueue(MessageKind::Email, "x.eml", b"not for this sink", 0).expect("enqueue");
        let metrics = crate::metrics::Metrics::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let shutdown = Shutdown::new();
        let cx = DriverContext {
            store: SqliteStore::open_reader(&db).expect("reader"),
            metrics: metrics.telemetry.clone(),
            dead_letters: DeadLetters { path: dir.path().join("undeliverable.jsonl") },
            settled: tx,
            shutdown: shutdown.clone(),
            start_after: 0,
        };
        let batches = Arc::default();
        let sink = Scripted { failed_once: false, batches: Arc::clone(&batches) };
        let wake = Arc::new(Notify::new());
        let driver = Driver::new(sink, cx, wake.clone());
        let thread = std::thread::spawn(move || driver.run());

        let first = rx.recv_timeout(Duration::from_secs(5)).expect("a report");
        assert_eq!(
            first,
            Settled { sink: "scripted", upto: 1 },
            "not past the message waiting for its retry"
        );
        let last = rx.recv_timeout(Duration::from_secs(5)).expect("a second report");
        assert_eq!(last.upto, 6, "everything settled once the retry went through, the e-mail row passed");
        assert_eq!(
            *batches.lock().unwrap(),
            vec![vec!["1", "2", "3", "4", "5"], vec!["2"]],
            "only the failed message is tried again"
        );
        let dead = std::fs::read_to_string(dir.path().join("undeliverable.jsonl")).expect("dead letters");
        let line: serde_json::Value = serde_json::from_str(dead.trim()).expect("one JSON line");
        assert_eq!(
            (line["sink"].as_str(), line["payload"].as_str(), line["reason"].as_str()),
            (Some("scripted"), Some("4"), Some("refused"))
        );
        let text = metrics.encode();
        let m = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}{{sink=\"scripted\"}}")))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(-1.0)
        };
        assert_eq!(
            (
                m("edgepm_outbox_delivered_total"),
                m("edgepm_outbox_retried_total"),
                m("edgepm_outbox_dead_lettered_total")
            ),
            (4.0, 1.0, 1.0)
        );
        shutdown.advance(Stage::Sinks);
        thread.join().expect("the driver stops");
    }

    /// An ordered sink with a linger: the first attempt of `"2"` fails; records every batch.
    struct Ordered {
        failed_once: bool,
        batches: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    }

    impl Sink for Ordered {
        fn name(&self) -> &'static str {
            "ordered"
        }
        fn kind(&self) -> MessageKind {
            MessageKind::Record
        }
        fn batch_size(&self) -> usize {
            4
        }
        fn linger(&self) -> Duration {
            Duration::from_millis(400)
        }
        fn ordered(&self) -> bool {
            true
        }
        fn max_backoff(&self) -> Duration {
            Duration::from_secs(60)
        }
        fn deliver(&mut self, batch: &[OutboxItem]) -> Delivery {
            let payloads: Vec<String> =
                batch.iter().map(|i| String::from_utf8_lossy(&i.payload).into()).collect();
            self.batches.lock().unwrap().push(payloads.clone());
            let outcomes = payloads
                .iter()
                .map(|p| match p.as_str() {
                    "2" if !self.failed_once => {
                        self.failed_once = true;
                        Outcome::Retry { reason: "throttled".into(), after: Some(Duration::from_millis(300)) }
                    }
                    _ => Outcome::Delivered,
                })
                .collect();
            Box::pin(std::future::ready(outcomes))
        }
    }

    #[test]
    fn a_sink_s_back_off_stops_at_its_maximum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("edgepm.db");
        SqliteStore::open(&db, Durability::Normal).expect("store");
        let (tx, _rx) = std::sync::mpsc::channel();
        let cx = DriverContext {
            store: SqliteStore::open_reader(&db).expect("reader"),
            metrics: crate::metrics::Metrics::new().telemetry.clone(),
            dead_letters: DeadLetters { path: dir.path().join("undeliverable.jsonl") },
            settled: tx,
            shutdown: Shutdown::new(),
            start_after: 0,
        };
        let sink = Ordered { failed_once: false, batches: Arc::default() };
        assert_eq!(sink.max_backoff(), Duration::from_secs(60));
        let mut driver = Driver::new(sink, cx, Arc::new(Notify::new()));
        let item = OutboxItem {
            id: 1,
            kind: MessageKind::Record,
            target: "t".into(),
            payload: b"x".to_vec(),
            created_ms: 0,
            attempts: 12, // 2^12 s would be over an hour
        };
        let before = now_ms();
        driver.settle(vec![item], vec![Outcome::retry("down")]);
        let (at, _) = driver.retry.front().expect("waiting for its retry");
        assert!(*at - before <= 60_000 + 100, "next attempt in {} ms", at - before);
    }

    #[test]
    fn an_ordered_sink_sends_nothing_past_a_waiting_retry_and_a_short_batch_lingers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("edgepm.db");
        let store = SqliteStore::open(&db, Durability::Normal).expect("store");
        let enqueue = |range: std::ops::RangeInclusive<i32>| {
            for i in range {
                store.enqueue(MessageKind::Record, "t", i.to_string().as_bytes(), now_ms()).expect("enqueue");
            }
        };
        enqueue(1..=2);
        let (tx, rx) = std::sync::mpsc::channel();
        let shutdown = Shutdown::new();
        let cx = DriverContext {
            store: SqliteStore::open_reader(&db).expect("reader"),
            metrics: crate::metrics::Metrics::new().telemetry.clone(),
            dead_letters: DeadLetters { path: dir.path().join("undeliverable.jsonl") },
            settled: tx,
            shutdown: shutdown.clone(),
            start_after: 0,
        };
        let batches: Arc<std::sync::Mutex<Vec<Vec<String>>>> = Arc::default();
        let sink = Ordered { failed_once: false, batches: Arc::clone(&batches) };
        let wake = Arc::new(Notify::new());
        let driver = Driver::new(sink, cx, wake.clone());
        let started = Instant::now();
        let thread = std::thread::spawn(move || driver.run());

        // Two messages of a batch of four: they wait for the linger time, then go.
        let first = rx.recv_timeout(Duration::from_secs(5)).expect("a report");
        assert!(started.elapsed() >= Duration::from_millis(350), "lingered: {:?}", started.elapsed());
        assert_eq!(first.upto, 1, "1 delivered, 2 waits for its retry");
        // While 2 waits, newer messages stay back; then all go, 2 first.
        enqueue(3..=6);
        wake.notify_one();
        let done = (0..5).find_map(|_| rx.recv_timeout(Duration::from_secs(5)).ok().filter(|s| s.upto == 6));
        assert!(done.is_some(), "everything settled");
        assert_eq!(
            *batches.lock().unwrap(),
            vec![vec!["1", "2"], vec!["2", "3", "4", "5"], vec!["6"]],
            "nothing overtook the retried message"
        );
        shutdown.advance(Stage::Sinks);
        thread.join().expect("the driver stops");
    }
}
