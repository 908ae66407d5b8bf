//! The ingest thread and the acknowledging thread, beside the ingest session (`mqtt.rs`): the
//! loop takes batches of deliveries, commits each in one transaction (`batch.rs`), hands it to
//! the acknowledger (with `durability = "full"` after a sync) and goes on with the next; it is
//! also the store's only writer for the sinks' cursors and the outbox's bounds.

use super::mqtt::{Connection, Delivery, jitter};
use super::{BatchReport, Ingestor};
use crate::clock::now_ms;
use crate::health::Part;
use crate::shutdown::{Shutdown, Stage};
use crate::store::{OutboxBound, Settled, SqliteStore, StoreGone, Waker, WalSync};
use anyhow::Context as _;
use rumqttc::AsyncClient;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages: u64,
    pub batch: BatchReport,
    pub failed_batches: u64,
}

/// The ingest thread: batches of deliveries → one transaction each → acknowledgements.
pub(crate) struct IngestLoop {
    pub(crate) ingestor: Ingestor,
    pub(crate) rx: tokio::sync::mpsc::Receiver<Delivery>,
    /// The sinks' cursors, stored by this loop (the store's only writer), which deletes the
    /// outbox rows every sink has settled.
    pub(crate) settled: std::sync::mpsc::Receiver<Settled>,
    /// Acknowledgements of alerts from the API, written by this loop between two batches.
    pub(crate) acks: std::sync::mpsc::Receiver<crate::store::AckRequest>,
    /// Every active sink's cursor, as last reported.
    pub(crate) cursors: Vec<(&'static str, i64)>,
    /// A cursor moved since the last transaction.
    pub(crate) cursors_changed: bool,
    /// Moved on to [`Stage::Sinks`] by this loop once it has stored its last message.
    pub(crate) shutdown: Shutdown,
    /// Acknowledges committed batches (taken at the end, to finish its queue).
    pub(crate) acknowledger: Option<Acknowledger>,
    pub(crate) metrics: crate::metrics::TelemetryMetrics,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) waker: Waker,
    pub(crate) batch_max: usize,
    pub(crate) totals: Arc<std::sync::Mutex<Totals>>,
    pub(crate) store: Arc<SqliteStore>,
    pub(crate) retention_days: u32,
    pub(crate) outbox_max_rows: u64,
    pub(crate) outbox_max_age_days: u32,
    /// Fault injection for tests ([`PAUSE_BEFORE_ACK_ENV`]): a pause between a batch's commit
    /// and its acknowledgements.
    pub(crate) pause_before_ack: Option<Duration>,
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

pub(crate) fn pause_before_ack() -> anyhow::Result<Option<Duration>> {
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
    /// Starts the loop on its own thread (`edgepm-ingest`).
    pub(crate) fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        let shutdown = self.shutdown.clone();
        crate::worker::spawn("edgepm-ingest", shutdown, move || self.run())
    }

    fn run(mut self) {
        let mut batch: Vec<Delivery> = Vec::with_capacity(self.batch_max);
        let mut messages = Vec::with_capacity(self.batch_max);
        let mut next_purge = Instant::now();
        let mut next_disk_check = Instant::now();
        let runtime = self.runtime.clone();
        loop {
            // Wait for messages; every 100 ms without any, store the sinks' cursors.
            // Deferred windows (a tenant past its budget) run in a batch of their own at once
            // when no message comes within a millisecond.
            let wait = if self.ingestor.deferred_waiting() > 0 { DEFERRED_WAIT } else { IDLE_WAIT };
            let first = runtime.block_on(async { tokio::time::timeout(wait, self.rx.recv()).await });
            self.take_settled();
            self.take_acks();
            match first {
                Ok(Some(d)) => batch.push(d),
                Ok(None) => {
                    // The ingest session is gone (shutdown) and every received message is
                    // stored (and synced: the acknowledging thread finishes its queue): let the
                    // sinks make their last pass, and record their cursors until they are done
                    // (each drops its end of the channel).
                    if let Some(acknowledger) = self.acknowledger.take() {
                        acknowledger.finish();
                    }
                    self.shutdown.advance(Stage::Sinks);
                    while let Ok(s) = self.settled.recv() {
                        self.settle(s);
                    }
                    self.store_cursors();
                    return;
                }
                Err(_) if self.ingestor.deferred_waiting() == 0 => {
                    self.store_cursors();
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
            if let Some(report) = self.store_batch(&messages) {
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
    fn store_batch(&mut self, messages: &[crate::ingest::Message]) -> Option<BatchReport> {
        let health = self.metrics.health.clone();
        let mut pause = RETRY_FIRST;
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let cursors: &[(&str, i64)] = if self.cursors_changed { &self.cursors } else { &[] };
            let e = match self.ingestor.process(messages, cursors, now_ms()) {
                Ok(report) => {
                    self.cursors_changed = false;
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
            std::thread::sleep(jitter(pause));
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
    /// messages: logged and counted, never silent. Sets the outbox depth gauge from what is left.
    fn bound_outbox(&self) {
        let oldest = (self.outbox_max_age_days > 0)
            .then(|| now_ms() - i64::from(self.outbox_max_age_days) * 86_400_000);
        match self.store.bound_outbox(self.outbox_max_rows, oldest) {
            Ok(bound) => {
                self.metrics.outbox_depth.set(bound.left.min(i64::MAX as u64) as i64);
                let OutboxBound { aged, rows, .. } = bound;
                if aged == 0 && rows == 0 {
                    return;
                }
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

    /// Takes the cursors the sinks reported since the last call.
    fn take_settled(&mut self) {
        while let Ok(s) = self.settled.try_recv() {
            self.settle(s);
        }
    }

    /// Writes the alert acknowledgements the API asked for since the last call (outside any
    /// batch's transaction: each commits on its own).
    fn take_acks(&mut self) {
        while let Ok(a) = self.acks.try_recv() {
            let outcome = self.store.acknowledge_alert(&a.key, &a.by, &a.note, now_ms()).map_err(|e| {
                warn!(error = %e, "Storing an alert acknowledgement failed");
                e.to_string()
            });
            let _ = a.reply.send(outcome);
        }
    }

    fn settle(&mut self, s: Settled) {
        if let Some(c) = self.cursors.iter_mut().find(|c| c.0 == s.sink)
            && s.upto > c.1
        {
            c.1 = s.upto;
            self.cursors_changed = true;
        }
    }

    /// Stores the sinks' cursors (and deletes what all of them settled) in a transaction of its
    /// own, when one moved.
    fn store_cursors(&mut self) {
        if !self.cursors_changed {
            return;
        }
        match self.ingestor.process(&[], &self.cursors, now_ms()) {
            Ok(_) => self.cursors_changed = false,
            Err(e) => warn!(error = %format!("{e:#}"), "Storing the sinks' cursors failed; tried again"),
        }
    }
}

/// Sends the acknowledgements of stored (with `durability = "full"`: stored and synced)
/// messages to the ingest session.
pub(crate) struct Acker {
    /// The ingest session's current connection: acknowledgements go to it only.
    pub(crate) connection: Connection,
    pub(crate) client: AsyncClient,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) metrics: crate::metrics::TelemetryMetrics,
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
pub(crate) struct Acknowledger {
    tx: std::sync::mpsc::Sender<Vec<Delivery>>,
    thread: std::thread::JoinHandle<()>,
}

impl Acknowledger {
    pub(crate) fn spawn(
        sync: Option<WalSync>,
        acker: Acker,
        shutdown: Shutdown,
    ) -> anyhow::Result<Acknowledger> {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Delivery>>();
        let metrics = acker.metrics.clone();
        // After a failed sync the thread ends, which stops the process (see `sync_then_acknowledge`).
        let thread = crate::worker::spawn("edgepm-ack", shutdown, move || {
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
