//! The running host: MQTT sessions, the ingest loop, the outbox dispatcher, the plugins folder
//! watcher and the HTTP endpoints, wired together from one [`HostConfig`].
//!
//! Threads: a small tokio runtime drives the two MQTT connections and HTTP; the ingest loop
//! (decode, store, windows, plugins) runs on a thread of its own and commits a batch of messages
//! per transaction, then hands the batch to the acknowledging thread (`Acknowledger`: with
//! `durability = "full"` it syncs the commits to disk first) and goes on with the next; the
//! outbox dispatcher runs on another thread with its own store connection.

use crate::health::Part;
use crate::ingest::mqtt::{self, ASSET_TOPIC, Connection, Delivery, ingest_session, publish_session};
use crate::ingest::{BatchReport, Ingestor};
use crate::metrics::Metrics;
use crate::outbox::{Dispatcher, MqttOut, Paths, Waker, now_ms};
use crate::plugins::{HostOptions, PluginHost};
use crate::store::{Counts, SqliteStore, StoreGone, WalSync};
use anyhow::Context as _;
use rumqttc::{AsyncClient, QoS};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

mod config;
pub use config::{HostConfig, HttpConfig, LimitsConfig, LogsConfig, StoreConfig, WindowsConfig};

/// Totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages: u64,
    pub batch: BatchReport,
    pub failed_batches: u64,
}

/// A running host. [`Service::stop`] shuts it down cleanly; dropping it stops it too.
pub struct Service {
    config: HostConfig,
    host: Arc<PluginHost>,
    store: Arc<SqliteStore>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Stops the ingest session (and with it the ingest loop).
    stop_ingest: tokio::sync::watch::Sender<bool>,
    /// Stops the publishing session and HTTP, after the outbox's last pass.
    stop_output: tokio::sync::watch::Sender<bool>,
    stop_outbox: Arc<AtomicBool>,
    /// Set when shutdown starts: worker threads that end after it are not a failure.
    shutting_down: Arc<AtomicBool>,
    outbox_waker: Waker,
    ingest_thread: Option<std::thread::JoinHandle<()>>,
    outbox_thread: Option<std::thread::JoinHandle<()>>,
    /// WAL checkpoints; stops with the outbox.
    checkpoint_thread: Option<std::thread::JoinHandle<()>>,
    totals: Arc<std::sync::Mutex<Totals>>,
    http_addr: Option<SocketAddr>,
    /// The ingest session (current connection, subscriptions acknowledged).
    connection: Connection,
    _watcher: Option<crate::plugins::Watcher>,
}

impl Service {
    /// Opens the store and the plugin host, connects to the broker and starts serving.
    pub fn start(config: HostConfig) -> anyhow::Result<Service> {
        let store = Arc::new(SqliteStore::open(&config.store_path(), config.store.durability)?);
        let metrics = Arc::new(Metrics::new());
        let mut options = HostOptions::new(config.plugins_dir(), config.models_dir());
        options.cache_dir = Some(config.data_dir.join("cache"));
        options.refused_file = Some(config.data_dir.join("refused-plugins.json"));
        let host = PluginHost::open(options, store.clone(), metrics.clone())?;
        if host.tenant_names().is_empty() {
            warn!(plugins_dir = %config.plugins_dir().display(), "No tenant folder: every reading will be dead-lettered until one is added");
        }
        let watcher = if config.watch_plugins {
            Some(host.watch().context("watching the plugins folder")?)
        } else {
            None
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("edgepm-io")
            .enable_all()
            .build()?;
        let (stop_ingest, stop_ingest_rx) = tokio::sync::watch::channel(false);
        let (stop_output, stop_output_rx) = tokio::sync::watch::channel(false);
        let stop_outbox = Arc::new(AtomicBool::new(false));
        let telemetry = metrics.telemetry.clone();

        // Publishing session and the outbox dispatcher.
        let (out_client, out_loop) =
            mqtt::client(config.mqtt.options(&format!("{}-out", config.mqtt.client_id), true)?, 4096);
        let (acks_tx, acks_rx) = tokio::sync::watch::channel(0u64);
        let out_connected = Arc::new(AtomicBool::new(false));
        runtime.spawn(publish_session(out_loop, acks_tx, out_connected.clone(), stop_output_rx.clone()));
        let (delivered_tx, delivered_rx) = std::sync::mpsc::channel::<Vec<i64>>();
        let (dispatcher, waker) = Dispatcher::new(
            SqliteStore::open(&config.store_path(), config.store.durability)?,
            MqttOut {
                client: out_client.clone(),
                acks: acks_rx,
                connected: out_connected,
                runtime: runtime.handle().clone(),
                max_publish_bytes: config.mqtt.max_publish_bytes,
            },
            Paths {
                email_dir: config.email_dir(),
                mqtt_log: config.logs.mqtt_log.then(|| config.mqtt_log()),
                mqtt_log_max_bytes: config.logs.mqtt_log_max_mib.max(1) << 20,
                dead_letters: config.data_dir.join("logs").join("undeliverable.jsonl"),
            },
            telemetry.clone(),
            stop_outbox.clone(),
            delivered_tx,
        )?;
        let outbox_waker = waker.clone();
        let shutting_down = Arc::new(AtomicBool::new(false));
        let outbox_thread =
            crate::worker::spawn("edgepm-outbox", shutting_down.clone(), move || dispatcher.run())?;
        let checkpoint_thread = store.spawn_checkpointer(stop_outbox.clone())?;

        // Ingest session and loop.
        // Persistent session, and acknowledgements sent after each commit (by the acknowledging
        // thread, see below) — never by the client on receipt.
        let mut in_options = config.mqtt.options(&config.mqtt.client_id, false)?;
        in_options.set_manual_acks(true);
        let (in_client, in_loop) = mqtt::client(in_options, 65_536);
        let filters = vec![
            (config.mqtt.telemetry_filter(), QoS::AtLeastOnce),
            (ASSET_TOPIC.to_string(), QoS::AtLeastOnce),
        ];
        let (tx, rx) = tokio::sync::mpsc::channel::<Delivery>(4 * config.store.batch_max);
        let connection = Connection::default();
        runtime.spawn(ingest_session(
            in_loop,
            in_client.clone(),
            filters,
            tx,
            telemetry.clone(),
            connection.clone(),
            stop_ingest_rx,
        ));
        let totals = Arc::new(std::sync::Mutex::new(Totals::default()));
        let ingestor = Ingestor::new(host.clone(), store.clone(), config.limits.limits(), config.windows.hop)
            .with_budget(config.windows.budget());
        let acker = Acker {
            connection: connection.clone(),
            client: in_client,
            runtime: runtime.handle().clone(),
            metrics: telemetry.clone(),
        };
        // A thread of its own acknowledges the committed batches — with `durability = "full"`
        // after syncing them to disk — while the ingest loop goes on with the next batch.
        let sync = store.defer_sync()?;
        let acknowledger = Acknowledger::spawn(sync, acker, shutting_down.clone())?;
        let ingest = IngestLoop {
            ingestor,
            rx,
            delivered: delivered_rx,
            stop_outbox: stop_outbox.clone(),
            acknowledger: Some(acknowledger),
            metrics: telemetry,
            runtime: runtime.handle().clone(),
            waker,
            batch_max: config.store.batch_max,
            totals: totals.clone(),
            store: store.clone(),
            retention_days: config.store.retention_days,
            outbox_max_rows: config.store.outbox_max_rows,
            outbox_max_age_days: config.store.outbox_max_age_days,
            pause_before_ack: pause_before_ack()?,
        };
        let ingest_thread =
            crate::worker::spawn("edgepm-ingest", shutting_down.clone(), move || ingest.run())?;

        let http_addr = match config.http.listen {
            Some(addr) => {
                let mut stop = stop_output_rx.clone();
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                let state = crate::api::ApiState { host: host.clone(), needs_mqtt: true };
                Some(crate::api::start(runtime.handle(), addr, state, shutdown).context("[http] listen")?)
            }
            None => None,
        };
        info!(broker = %config.mqtt.url, data_dir = %config.data_dir.display(), tenants = ?host.tenant_names(), "edgepm host running");
        Ok(Service {
            config,
            host,
            store,
            runtime: Some(runtime),
            stop_ingest,
            stop_output,
            stop_outbox,
            shutting_down,
            outbox_waker,
            ingest_thread: Some(ingest_thread),
            outbox_thread: Some(outbox_thread),
            checkpoint_thread: Some(checkpoint_thread),
            totals,
            http_addr,
            connection,
            _watcher: watcher,
        })
    }

    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }
    pub fn store(&self) -> &Arc<SqliteStore> {
        &self.store
    }
    pub fn config(&self) -> &HostConfig {
        &self.config
    }
    /// Where the HTTP endpoints listen, when enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }
    /// Waits until the broker acknowledged the ingest subscriptions (readings published before
    /// that reach no one unless the session already existed). `false` on timeout.
    pub fn wait_subscribed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.connection.subscribed() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    pub fn totals(&self) -> Totals {
        *self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops taking messages, finishes the batch in progress, delivers what the outbox can and
    /// disconnects. Returns the store's row counts.
    pub fn stop(mut self) -> anyhow::Result<Counts> {
        self.shutdown();
        Ok(self.store.counts()?)
    }

    fn shutdown(&mut self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        // The ingest loop stores what it received, then stops the outbox after its last pass.
        let _ = self.stop_ingest.send(true);
        if let Some(t) = self.ingest_thread.take() {
            let _ = t.join();
        }
        self.stop_outbox.store(true, Ordering::Relaxed); // in case the ingest loop died
        self.outbox_waker.wake();
        if let Some(t) = self.outbox_thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.checkpoint_thread.take() {
            let _ = t.join();
        }
        let _ = self.stop_output.send(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The ingest thread: batches of deliveries → one transaction each → acknowledgements.
struct IngestLoop {
    ingestor: Ingestor,
    rx: tokio::sync::mpsc::Receiver<Delivery>,
    /// Outbox ids the dispatcher delivered, deleted by this loop (the store's only writer).
    delivered: std::sync::mpsc::Receiver<Vec<i64>>,
    /// Set once this loop has stored its last message: the dispatcher makes a last pass.
    stop_outbox: Arc<AtomicBool>,
    /// Acknowledges committed batches (taken at the end, to finish its queue).
    acknowledger: Option<Acknowledger>,
    metrics: crate::metrics::TelemetryMetrics,
    runtime: tokio::runtime::Handle,
    waker: Waker,
    batch_max: usize,
    totals: Arc<std::sync::Mutex<Totals>>,
    store: Arc<SqliteStore>,
    retention_days: u32,
    outbox_max_rows: u64,
    outbox_max_age_days: u32,
    /// Fault injection for tests ([`PAUSE_BEFORE_ACK_ENV`]): a pause between a batch's commit
    /// and its acknowledgements.
    pause_before_ack: Option<Duration>,
}

/// How long the ingest loop waits for a message before it does its idle work.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// ... and while deferred windows wait for their tenant's next budget.
const DEFERRED_WAIT: Duration = Duration::from_millis(1);
/// First pause before a failed batch is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Free space under which `/readyz` reports the disk (the store needs room for its WAL).
const LOW_DISK_BYTES: u64 = 32 << 20;
/// How often the ingest loop looks at the free disk space.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Environment variable (milliseconds) that makes the ingest loop pause after each commit,
/// before acknowledging: the window in which a crash leaves messages stored but unacknowledged,
/// made wide enough for a test to kill the process inside it. Never set it in production.
pub const PAUSE_BEFORE_ACK_ENV: &str = "EDGEPM_FAULT_PAUSE_BEFORE_ACK_MS";

fn pause_before_ack() -> anyhow::Result<Option<Duration>> {
    match std::env::var(PAUSE_BEFORE_ACK_ENV) {
        Err(_) => Ok(None),
        Ok(ms) => {
            let ms: u64 = ms.trim().parse().with_context(|| format!("{PAUSE_BEFORE_ACK_ENV}={ms:?}"))?;
            warn!(ms, "Fault injection: pausing between each commit and its acknowledgements");
            Ok(Some(Duration::from_millis(ms)))
        }
    }
}

impl IngestLoop {
    fn run(mut self) {
        let mut batch: Vec<Delivery> = Vec::with_capacity(self.batch_max);
        let mut messages = Vec::with_capacity(self.batch_max);
        let mut next_purge = Instant::now();
        let mut next_disk_check = Instant::now();
        let runtime = self.runtime.clone();
        loop {
            // Wait for messages; every 100 ms without any, delete what the outbox delivered.
            // Deferred windows (a tenant past its budget) run in a batch of their own at once
            // when no message comes within a millisecond.
            let wait = if self.ingestor.deferred_waiting() > 0 { DEFERRED_WAIT } else { IDLE_WAIT };
            let first = runtime.block_on(async { tokio::time::timeout(wait, self.rx.recv()).await });
            let mut delivered: Vec<i64> = self.delivered.try_iter().flatten().collect();
            match first {
                Ok(Some(d)) => batch.push(d),
                Ok(None) => {
                    // The ingest session is gone (shutdown) and every received message is
                    // stored (and synced: the acknowledging thread finishes its queue): let the
                    // outbox make its last pass, and record its deliveries until it is done (it
                    // drops its end of the channel).
                    if let Some(acknowledger) = self.acknowledger.take() {
                        acknowledger.finish();
                    }
                    self.stop_outbox.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.waker.wake();
                    delivered.extend(self.delivered.iter().flatten());
                    self.delete_delivered(&delivered);
                    return;
                }
                Err(_) if self.ingestor.deferred_waiting() == 0 => {
                    self.delete_delivered(&delivered);
                    self.housekeeping(&mut next_disk_check);
                    continue;
                }
                Err(_) => {}
            }
            // Group commit without waiting: everything that queued up while the previous batch
            // was processed shares this transaction (and a sync), so batches grow with the load
            // and a lone reading is committed at once.
            while batch.len() < self.batch_max {
                match self.rx.try_recv() {
                    Ok(d) => batch.push(d),
                    Err(_) => break,
                }
            }
            messages.clear();
            messages.extend(batch.iter().map(|d| d.message.clone()));
            if let Some(report) = self.store_batch(&messages, &mut delivered) {
                if let Some(pause) = self.pause_before_ack {
                    std::thread::sleep(pause);
                }
                let messages = batch.len() as u64;
                if let Some(acknowledger) = self.acknowledger.as_ref().filter(|_| !batch.is_empty()) {
                    // The next batch gets a vector of its own, sized like this one.
                    let next = Vec::with_capacity(batch.len());
                    acknowledger.acknowledge(std::mem::replace(&mut batch, next));
                }
                // The outputs leave as soon as they are committed, without waiting for the
                // acknowledging thread's sync (`durability = "full"`): delivery is at least
                // once, and should a power cut take the commit, the broker redelivers its
                // unacknowledged readings, which produce the same outputs again.
                self.waker.wake();
                let mut t = self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                t.messages += messages;
                add(&mut t.batch, &report);
            }
            self.housekeeping(&mut next_disk_check);
            batch.clear();
            // Let a large WAL start over (see `SqliteStore::restart_wal_when_due`).
            let started = Instant::now();
            match self.store.restart_wal_when_due() {
                Some(Ok((frames, copied))) => {
                    let paused = started.elapsed();
                    self.metrics.wal_restart_seconds.observe(paused.as_secs_f64());
                    tracing::debug!(
                        frames,
                        copied,
                        ms = paused.as_millis() as u64,
                        "WAL checkpoint by the writer: the WAL restarts"
                    )
                }
                Some(Err(e)) => warn!(error = %e, "WAL checkpoint failed"),
                None => {}
            }
            if self.retention_days > 0 && Instant::now() >= next_purge {
                next_purge = Instant::now() + Duration::from_secs(3600);
                let before = now_ms() - i64::from(self.retention_days) * 86_400_000;
                match self.store.purge_before(before) {
                    Ok(0) => {}
                    Ok(n) => info!(rows = n, retention_days = self.retention_days, "Old rows purged"),
                    Err(e) => warn!(error = %e, "Purging old rows failed"),
                }
            }
        }
    }

    /// Stores a batch, trying again in place with back-off while the store fails (disk full, I/O
    /// error): its messages stay unacknowledged and in hand, so none is lost, and the broker —
    /// whose in-flight window they fill — holds back the rest meanwhile. Each failure is counted
    /// and `/readyz` reports it until a batch commits again. A database file removed or replaced
    /// under the host cannot come back: that stops the process (see [`StoreGone`]). `None` only
    /// when the session closed (shutdown) while the store was failing: the messages are left
    /// unacknowledged for the broker to redeliver.
    fn store_batch(
        &mut self,
        messages: &[crate::ingest::Message],
        delivered: &mut Vec<i64>,
    ) -> Option<BatchReport> {
        let health = self.metrics.health.clone();
        let mut pause = RETRY_FIRST;
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let e = match self.ingestor.process(messages, delivered, now_ms()) {
                Ok(report) => {
                    if health.recover(Part::Store) {
                        info!(
                            attempt,
                            messages = messages.len(),
                            "The store works again; the batch is stored"
                        );
                    }
                    return Some(report);
                }
                Err(e) => e,
            };
            self.metrics.failed_batches.inc();
            self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).failed_batches += 1;
            // Sent again later: at least once.
            delivered.clear();
            if let Some(gone) = e.downcast_ref::<StoreGone>() {
                health.fail(Part::Store, gone.to_string());
                tracing::error!(error = %gone, "Stopping: nothing committed after this was acknowledged; a restart opens the file that is there now");
                std::process::exit(crate::worker::WORKER_DIED_EXIT);
            }
            let reason = format!("{e:#}");
            health.fail(Part::Store, format!("storing a batch failed {attempt} time(s): {reason}"));
            tracing::error!(error = %reason, attempt, messages = messages.len(), retry_ms = pause.as_millis() as u64,
                "Storing a batch failed; it is not acknowledged and will be tried again");
            self.check_disk();
            if self.rx.is_closed() {
                warn!(
                    messages = messages.len(),
                    "Shutting down with a batch the store refused; the broker will redeliver it"
                );
                return None;
            }
            std::thread::sleep(crate::ingest::mqtt::jitter(pause));
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// Every [`DISK_CHECK_EVERY`], with or without traffic: the free disk space, the outbox's
    /// bounds, and the replay of parked messages whose tenant is served now.
    fn housekeeping(&mut self, next: &mut Instant) {
        if Instant::now() < *next {
            return;
        }
        *next = Instant::now() + DISK_CHECK_EVERY;
        self.check_disk();
        self.bound_outbox();
        match self.ingestor.replay_parked(now_ms()) {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(messages = n, "Parked messages replayed");
                self.waker.wake()
            }
            Err(e) => warn!(error = %format!("{e:#}"), "Replaying parked messages failed; tried again later"),
        }
    }

    /// Drops what exceeds the outbox's bounds — the one explicit drop policy for undelivered
    /// messages: logged and counted, never silent.
    fn bound_outbox(&self) {
        let oldest = (self.outbox_max_age_days > 0)
            .then(|| now_ms() - i64::from(self.outbox_max_age_days) * 86_400_000);
        match self.store.bound_outbox(self.outbox_max_rows, oldest) {
            Ok((0, 0)) => {}
            Ok((aged, rows)) => {
                self.metrics.outbox_dropped("age").inc_by(aged);
                self.metrics.outbox_dropped("rows").inc_by(rows);
                warn!(
                    aged,
                    rows,
                    max_rows = self.outbox_max_rows,
                    max_age_days = self.outbox_max_age_days,
                    "Undelivered outbox messages dropped: the outbox is over its bounds"
                );
            }
            Err(e) => warn!(error = %e, "Bounding the outbox failed"),
        }
    }

    /// Updates the free-space gauge and the disk's part of `/readyz`.
    fn check_disk(&self) {
        let Some(free) = self.store.free_bytes() else { return };
        self.metrics.free_bytes.set(free.min(i64::MAX as u64) as i64);
        let health = &self.metrics.health;
        if free < LOW_DISK_BYTES {
            health.fail(Part::Disk, format!("{} MiB free on the data folder's filesystem", free >> 20));
        } else if health.recover(Part::Disk) {
            info!(free_mib = free >> 20, "Free disk space is back");
        }
    }

    /// Deletes outbox messages the dispatcher delivered, in a transaction of their own.
    fn delete_delivered(&mut self, ids: &[i64]) {
        if !ids.is_empty()
            && let Err(e) = self.ingestor.process(&[], ids, now_ms())
        {
            warn!(error = %format!("{e:#}"), "Deleting delivered outbox messages failed; they may be sent again");
        }
    }
}

/// Sends the acknowledgements of stored (with `durability = "full"`: stored and synced)
/// messages to the ingest session.
struct Acker {
    /// The ingest session's current connection: acknowledgements go to it only.
    connection: Connection,
    client: AsyncClient,
    runtime: tokio::runtime::Handle,
    metrics: crate::metrics::TelemetryMetrics,
}

impl Acker {
    fn acknowledge(&self, batch: &[Delivery]) {
        let client = &self.client;
        let current = self.connection.current();
        let sent = self.runtime.block_on(async {
            // Messages of an earlier connection are not acknowledged: the broker sends them again
            // on the new one (they are duplicates by then, stored once, acknowledged then).
            for d in batch.iter().filter(|d| d.connection == current) {
                if client.ack(&d.publish).await.is_err() {
                    return false;
                }
            }
            true
        });
        if !sent {
            warn!("The MQTT session is closed; acknowledgements not sent (the broker will redeliver)");
        }
        for d in batch {
            self.metrics.ack_seconds.observe(d.message.received.elapsed().as_secs_f64());
        }
    }
}

/// The thread that acknowledges committed batches, so the ingest loop does not spend its time
/// on acknowledgements (one request each). With a [`WalSync`] ([`SqliteStore::defer_sync`],
/// `durability = "full"`) it first syncs the WAL — once for every batch queued since its last
/// sync, so the ingest loop never waits for the disk and a slow sync covers many commits.
struct Acknowledger {
    tx: std::sync::mpsc::Sender<Vec<Delivery>>,
    thread: std::thread::JoinHandle<()>,
}

impl Acknowledger {
    fn spawn(
        sync: Option<WalSync>,
        acker: Acker,
        shutting_down: Arc<AtomicBool>,
    ) -> anyhow::Result<Acknowledger> {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Delivery>>();
        let metrics = acker.metrics.clone();
        // After a failed sync the thread ends, which stops the process (see `sync_then_acknowledge`).
        let thread = crate::worker::spawn("edgepm-ack", shutting_down, move || {
            sync_then_acknowledge(
                &rx,
                || sync.as_ref().map(WalSync::sync).transpose().map(|synced| synced.is_some()),
                |batches| {
                    for batch in batches {
                        acker.acknowledge(batch);
                    }
                },
                &metrics,
            )
        })?;
        Ok(Acknowledger { tx, thread })
    }

    /// Acknowledges `batch`, committed — with a [`WalSync`], once it is on disk.
    fn acknowledge(&self, batch: Vec<Delivery>) {
        if self.tx.send(batch).is_err() {
            warn!("The acknowledging thread is gone; acknowledgements not sent (the broker will redeliver)");
        }
    }

    /// Syncs and acknowledges what is queued, then stops the thread.
    fn finish(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

/// The acknowledging thread's loop, until every sender is gone: waits for a committed batch,
/// takes every other one queued by then (all committed before the sync starts), syncs once
/// (`sync` says whether there was anything to sync) and hands them to `acknowledge`. When a sync
/// fails the loop ends at once and nothing is acknowledged any more: after a failed fsync the
/// kernel may have dropped the dirty pages, so no later sync can vouch for the commits before it
/// (the host then stops, and the broker redelivers every unacknowledged message to the restarted
/// one, which stores what is missing).
fn sync_then_acknowledge<T>(
    rx: &std::sync::mpsc::Receiver<Vec<T>>,
    mut sync: impl FnMut() -> std::io::Result<bool>,
    mut acknowledge: impl FnMut(&[Vec<T>]),
    metrics: &crate::metrics::TelemetryMetrics,
) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        batches.extend(rx.try_iter());
        let started = Instant::now();
        match sync() {
            Ok(synced) => {
                if synced {
                    metrics.sync_seconds.observe(started.elapsed().as_secs_f64());
                }
                acknowledge(&batches);
            }
            Err(e) => {
                metrics.sync_failures.inc();
                metrics.health.fail(Part::Sync, format!("syncing the store to disk failed: {e}"));
                let messages: usize = batches.iter().map(Vec::len).sum();
                tracing::error!(error = %e, messages, "Syncing the store to disk failed; nothing is acknowledged any more");
                return;
            }
        }
    }
}

fn add(total: &mut BatchReport, r: &BatchReport) {
    total.readings += r.readings;
    total.duplicates += r.duplicates;
    total.late += r.late;
    total.rejected += r.rejected;
    total.windows += r.windows;
    total.predictions += r.predictions;
    total.alerts += r.alerts;
    total.window_errors += r.window_errors;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn batches_are_acknowledged_only_after_a_sync_that_covers_them() {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u32>>();
        let events = RefCell::new(Vec::<String>::new());
        let metrics = crate::metrics::Metrics::default().telemetry.clone();
        // Two batches queued before the thread looks: one sync for both, then both acknowledged.
        tx.send(vec![1, 2]).unwrap();
        tx.send(vec![3]).unwrap();
        drop(tx);
        sync_then_acknowledge(
            &rx,
            || {
                events.borrow_mut().push("sync".into());
                Ok(true)
            },
            |batches| events.borrow_mut().push(format!("ack {batches:?}")),
            &metrics,
        );
        assert_eq!(*events.borrow(), ["sync", "ack [[1, 2], [3]]"]);
        assert_eq!(metrics.sync_failures.get(), 0);
    }

    #[test]
    fn a_failed_sync_acknowledges_nothing_then_or_after_and_is_counted() {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u32>>();
        let metrics = crate::metrics::Metrics::default().telemetry.clone();
        tx.send(vec![1]).unwrap();
        let mut syncs = 0;
        let mut acknowledged = Vec::new();
        sync_then_acknowledge(
            &rx,
            || {
                syncs += 1;
                // The first sync fails; a later one would succeed, and must not be trusted.
                if syncs == 1 { Err(std::io::Error::other("EIO")) } else { Ok(true) }
            },
            |batches| acknowledged.extend(batches.iter().flatten().copied()),
            &metrics,
        );
        // The loop ended at the failure although the sender is still there: a later batch would
        // not be acknowledged either.
        tx.send(vec![2]).unwrap();
        assert!(acknowledged.is_empty());
        assert_eq!(syncs, 1);
        assert_eq!(metrics.sync_failures.get(), 1);
        assert_eq!(metrics.health.problems().len(), 1, "readiness reports the failed sync");
    }
}
