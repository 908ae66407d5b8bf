//! A batch of MQTT messages through the host, in one store transaction.
//!
//! For each message: decode and validate it (a rejected one is dead-lettered), store the reading
//! (a reading already stored is a redelivery: nothing else happens), push it into its device's
//! window assembly, and run every completed window through the tenant's plugins; the features,
//! the prediction, its alerts and every message that must leave the host (prediction and alert
//! topics, alert e-mails, dead letters) are written to the store in the same transaction. The
//! caller acknowledges the batch's messages to the broker only after [`Ingestor::process`]
//! returned `Ok`: a crash at any point loses nothing that was acknowledged, and because window
//! state is rebuilt from the store, a redelivered reading never makes a second window.

use super::decode::{Limits, Reject, decode, decode_asset, parse_asset_topic};
use crate::metrics::TelemetryMetrics;
use crate::pipeline::{PipelineError, WindowOutcome, process_windows};
use crate::plugins::PluginHost;
use crate::store::{DeferredWindow, SqliteStore};
use crate::types::{Reading, Window};
use crate::windows::{DeviceWindows, Pushed};
use prometheus_client::metrics::counter::Counter;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: bytes::Bytes,
    pub received: Instant,
}

/// What a batch did, for logs, summaries and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub readings: u64,
    pub duplicates: u64,
    pub late: u64,
    pub rejected: u64,
    pub windows: u64,
    pub predictions: u64,
    pub alerts: u64,
    pub window_errors: u64,
}

/// Window state per device plus the asset registry cache.
struct DeviceState {
    windows: DeviceWindows,
    size: usize,
    hop: usize,
    /// When the device's last reading arrived (host clock, ms): states of devices silent for
    /// long are evicted and rebuilt from the store if the device comes back.
    seen_ms: i64,
}

/// Window states kept at most; past it the least recently heard devices' are evicted.
pub const MAX_DEVICE_STATES: usize = 100_000;
/// A device silent for this long loses its window state (rebuilt from the store when it is heard
/// from again).
pub const DEVICE_IDLE_MS: i64 = 3_600_000;
/// How often idle window states are looked for.
const EVICT_EVERY_MS: i64 = 60_000;
/// Deferred windows of one tenant taken up again per batch at most (each is assembled again
/// from the store, so a long queue is not re-read whole every batch).
const DEFERRED_PER_BATCH: usize = 256;

/// How much plugin time a tenant gets per batch, and how many of its windows may wait for the
/// next (`[windows] tenant_budget_ms`, `max_deferred`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowBudget {
    /// `None`: every window of a batch runs in that batch, however long its tenant takes.
    pub per_batch: Option<Duration>,
    /// Deferred windows of one tenant kept at most; past it the oldest are shed (unscored,
    /// logged and counted: `edgepm_windows_shed_total`).
    pub max_deferred: usize,
}

impl WindowBudget {
    /// No budget: what `edgepm replay` and the library's default use.
    pub const UNLIMITED: WindowBudget = WindowBudget { per_batch: None, max_deferred: usize::MAX };
}

/// What a batch sends out. Ingest says what happened — a window's outcome stored, a message
/// refused — and the outbox (`outbox::Router`) decides which messages that makes and queues them
/// in the store inside the batch's transaction, so an outcome and its messages commit together.
pub trait Outputs: Send + Sync {
    /// The outcome `o` of the window from `start_ms` (`readings` readings) was stored.
    fn window(
        &self,
        store: &SqliteStore,
        o: &WindowOutcome,
        start_ms: i64,
        readings: usize,
        now_ms: i64,
    ) -> anyhow::Result<()>;
    /// A new reading was stored (not a redelivery). Most outputs make nothing of it.
    fn reading(&self, _store: &SqliteStore, _reading: &Reading, _now_ms: i64) -> anyhow::Result<()> {
        Ok(())
    }
    /// The message `payload` on `topic` was refused for `reject`.
    fn refused(
        &self,
        store: &SqliteStore,
        topic: &str,
        payload: &[u8],
        reject: &Reject,
        now_ms: i64,
    ) -> anyhow::Result<()>;
}

/// Turns batches of messages into stored readings, windows, predictions and outbox messages.
pub struct Ingestor {
    host: Arc<PluginHost>,
    store: Arc<SqliteStore>,
    outputs: Arc<dyn Outputs>,
    limits: Limits,
    default_hop: u32,
    devices: HashMap<(String, String), DeviceState>,
    assets: HashMap<(String, String), Vec<(String, String)>>,
    metrics: TelemetryMetrics,
    /// Per-tenant counters, resolved once (a label lookup allocates).
    counters: HashMap<String, TenantCounters>,
    /// What the open transaction will count once it commits (nothing, if it rolls back): every
    /// counter counts what was committed.
    uncounted: Uncounted,
    /// When idle window states are looked for next.
    next_eviction_ms: i64,
    budget: WindowBudget,
    /// Windows waiting for their tenant's next budget, oldest first — what the store's
    /// `deferred` table holds (`None`: to be read from it, at start and after a rollback).
    deferred: Option<Vec<DeferredWindow>>,
}

/// Counts of the open transaction, added to the metrics after its commit.
#[derive(Default)]
struct Uncounted {
    /// readings, predictions, alerts, window errors, deferred and shed windows per tenant.
    tenants: HashMap<String, [u64; 6]>,
    duplicates: u64,
    late: u64,
    parked: u64,
    rejected: Vec<&'static str>,
}

const READINGS: usize = 0;
const PREDICTIONS: usize = 1;
const ALERTS: usize = 2;
const WINDOW_ERRORS: usize = 3;
const DEFERRED: usize = 4;
const SHED: usize = 5;

struct TenantCounters {
    readings: Counter,
    predictions: Counter,
    alerts: Counter,
    window_errors: Counter,
    deferred: Counter,
    shed: Counter,
}

impl Ingestor {
    /// An ingestor committing into `store`, whose outputs `outputs` queues (the host's is
    /// `outbox::Router`).
    pub fn new(
        host: Arc<PluginHost>,
        store: Arc<SqliteStore>,
        outputs: Arc<dyn Outputs>,
        limits: Limits,
        default_hop: u32,
    ) -> Ingestor {
        let metrics = host.metrics().telemetry.clone();
        Ingestor {
            host,
            store,
            outputs,
            limits,
            default_hop: default_hop.max(1),
            devices: HashMap::new(),
            assets: HashMap::new(),
            metrics,
            counters: HashMap::new(),
            uncounted: Uncounted::default(),
            next_eviction_ms: 0,
            budget: WindowBudget::UNLIMITED,
            deferred: None,
        }
    }

    /// Gives each tenant `budget` of plugin time per batch (see [`process_windows`]): the
    /// windows past it wait, in the store, for the next batch.
    pub fn with_budget(mut self, budget: WindowBudget) -> Ingestor {
        self.budget = budget;
        self
    }

    /// Windows waiting for their tenant's next budget. While there are any, the caller should
    /// run [`Ingestor::process`] soon, with or without messages.
    pub fn deferred_waiting(&self) -> usize {
        self.deferred.as_ref().map_or(0, Vec::len)
    }

    /// Window states kept (one per device heard from recently).
    pub fn device_states(&self) -> usize {
        self.devices.len()
    }

    /// Drops the window state of devices silent for [`DEVICE_IDLE_MS`], and beyond
    /// [`MAX_DEVICE_STATES`] that of the least recently heard: memory stays bounded however many
    /// devices come and go. Nothing is lost: a state is rebuilt from the store on the device's
    /// next reading.
    fn evict_idle(&mut self, now_ms: i64) {
        if now_ms < self.next_eviction_ms && self.devices.len() <= MAX_DEVICE_STATES {
            return;
        }
        self.next_eviction_ms = now_ms + EVICT_EVERY_MS;
        let before = self.devices.len();
        self.devices.retain(|_, s| now_ms - s.seen_ms < DEVICE_IDLE_MS);
        if self.devices.len() > MAX_DEVICE_STATES {
            let mut seen: Vec<i64> = self.devices.values().map(|s| s.seen_ms).collect();
            let cut = self.devices.len() - MAX_DEVICE_STATES * 3 / 4;
            let (_, &mut oldest_kept, _) = seen.select_nth_unstable(cut);
            self.devices.retain(|_, s| s.seen_ms >= oldest_kept);
        }
        let devices = &self.devices;
        self.assets.retain(|k, _| devices.contains_key(k));
        if self.devices.len() < before {
            debug!(
                evicted = before - self.devices.len(),
                kept = self.devices.len(),
                "Window states of idle devices evicted"
            );
        }
    }

    /// Adds `n` to one of `tenant`'s counters when the transaction commits.
    fn count(&mut self, tenant: &str, which: usize, n: u64) {
        match self.uncounted.tenants.get_mut(tenant) {
            Some(c) => c[which] += n,
            None => {
                let mut c = [0; 6];
                c[which] = n;
                self.uncounted.tenants.insert(tenant.to_string(), c);
            }
        }
    }

    /// The transaction committed: its counts go to the metrics.
    fn counted(&mut self) {
        let mut u = std::mem::take(&mut self.uncounted);
        for (tenant, c) in u.tenants.drain() {
            let counters = self.counters(&tenant);
            counters.readings.inc_by(c[READINGS]);
            counters.predictions.inc_by(c[PREDICTIONS]);
            counters.alerts.inc_by(c[ALERTS]);
            counters.window_errors.inc_by(c[WINDOW_ERRORS]);
            counters.deferred.inc_by(c[DEFERRED]);
            counters.shed.inc_by(c[SHED]);
        }
        self.metrics.windows_waiting.set(self.deferred_waiting() as i64);
        self.metrics.duplicates.inc_by(u.duplicates);
        self.metrics.late.inc_by(u.late);
        self.metrics.parked.inc_by(u.parked);
        for reason in u.rejected.drain(..) {
            self.metrics.rejected(reason).inc();
        }
        // Keep the (emptied) map's allocation for the next batch.
        self.uncounted = Uncounted { tenants: u.tenants, rejected: u.rejected, ..Uncounted::default() };
    }

    fn counters(&mut self, tenant: &str) -> &TenantCounters {
        if !self.counters.contains_key(tenant) {
            let m = &self.metrics;
            let c = TenantCounters {
                readings: m.readings(tenant),
                predictions: m.predictions(tenant),
                alerts: m.alerts(tenant),
                window_errors: m.window_errors(tenant),
                deferred: m.windows_deferred(tenant),
                shed: m.windows_shed(tenant),
            };
            self.counters.insert(tenant.to_string(), c);
        }
        &self.counters[tenant]
    }

    /// Processes `batch` in one transaction, which also records the sinks' cursors `settled`
    /// (sink name, outbox id up to which it settled everything) and deletes the outbox rows all
    /// of them settled; `settled` names every active sink, or is empty.
    /// On `Err` nothing of the batch is stored, the window state is dropped (it is rebuilt from
    /// the store), and the messages must not be acknowledged.
    pub fn process(
        &mut self,
        batch: &[Message],
        settled: &[(&str, i64)],
        now_ms: i64,
    ) -> anyhow::Result<BatchReport> {
        self.transaction(batch, settled, &[], now_ms)
    }

    /// Replays parked messages (see [`SqliteStore::park`]) of the tenants now served, up to 1,000
    /// per call, in one transaction that also deletes them from the parked table: each is stored
    /// exactly once. Returns how many were replayed.
    pub fn replay_parked(&mut self, now_ms: i64) -> anyhow::Result<usize> {
        let mut replayed = 0;
        for tenant in self.store.parked_tenants()? {
            if self.host.tenant(&tenant).is_none() {
                continue;
            }
            let rows = self.store.parked(&tenant, 1000)?;
            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let messages: Vec<Message> = rows
                .into_iter()
                .map(|(_, topic, payload)| Message {
                    topic,
                    payload: payload.into(),
                    received: Instant::now(),
                })
                .collect();
            self.transaction(&messages, &[], &ids, now_ms)?;
            tracing::info!(%tenant, messages = messages.len(), "Parked messages replayed: the tenant is served now");
            replayed += messages.len();
        }
        Ok(replayed)
    }

    fn transaction(
        &mut self,
        batch: &[Message],
        settled: &[(&str, i64)],
        parked: &[i64],
        now_ms: i64,
    ) -> anyhow::Result<BatchReport> {
        let started = Instant::now();
        self.store.begin()?;
        let mut report = BatchReport::default();
        let result = self.store.settle_outbox(settled).map_err(anyhow::Error::from);
        let result = result.and_then(|()| Ok(self.store.delete_parked(parked)?));
        let mut ready = Vec::new();
        let result = result
            .and_then(|()| batch.iter().try_for_each(|m| self.message(m, now_ms, &mut ready, &mut report)));
        let result = result.and_then(|()| self.windows(ready, now_ms, &mut report));
        // A database file removed under the host would take every commit with it: never commit
        // (and so never acknowledge) into a file that is gone.
        let result = result.and_then(|()| Ok(self.store.check_file()?));
        let result = result.and_then(|()| Ok(self.store.commit()?));
        if let Err(e) = result {
            self.store.rollback();
            self.devices.clear();
            self.assets.clear();
            self.uncounted = Uncounted::default();
            self.deferred = None;
            return Err(e);
        }
        self.counted();
        self.evict_idle(now_ms);
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        Ok(report)
    }

    /// Stores `m`; a window it completes is added to `ready`.
    fn message(
        &mut self,
        m: &Message,
        now_ms: i64,
        ready: &mut Vec<Window>,
        report: &mut BatchReport,
    ) -> anyhow::Result<()> {
        if let Some((tenant, device)) = parse_asset_topic(&m.topic) {
            return match decode_asset(&m.payload) {
                Ok(attributes) => {
                    self.store.upsert_asset(tenant, device, &attributes, now_ms)?;
                    self.assets.insert((tenant.to_string(), device.to_string()), attributes);
                    Ok(())
                }
                Err(reject) => self.reject(m, &reject, now_ms, report),
            };
        }
        let reading = match decode(&m.topic, &m.payload, &self.limits, now_ms) {
            Ok(r) => r,
            Err(reject) => return self.reject(m, &reject, now_ms, report),
        };
        let Some(pipeline) = self.host.tenant(&reading.tenant) else {
            // Perhaps only for a moment (a tenant folder being redeployed): kept, and replayed
            // once the tenant is served (the dead letter tells operators meanwhile).
            let reject = Reject::UnknownTenant(reading.tenant.clone());
            self.store.park(&reading.tenant, &m.topic, &m.payload, reject.reason(), now_ms)?;
            self.uncounted.parked += 1;
            return self.reject(m, &reject, now_ms, report);
        };
        let size = pipeline.window_size.max(1) as usize;
        let hop = pipeline.config.hop.unwrap_or(self.default_hop).max(1) as usize;
        drop(pipeline);
        // The window state must reflect the store *before* this reading is inserted.
        let key = (reading.tenant.clone(), reading.device.clone());
        self.device_state(&key, size, hop, now_ms)?;
        if !self.store.insert_reading(&reading, now_ms)? {
            report.duplicates += 1;
            self.uncounted.duplicates += 1;
            return Ok(());
        }
        self.outputs.reading(&self.store, &reading, now_ms)?;
        report.readings += 1;
        self.count(&reading.tenant, READINGS, 1);
        let pushed = match self.devices.get_mut(&key) {
            Some(state) => {
                state.seen_ms = now_ms;
                state.windows.push(reading)
            }
            None => return Ok(()),
        };
        match pushed {
            Pushed::Window(mut window) => {
                window.asset = self.asset(&window.tenant, &window.device)?;
                self.store.record_window(&window.tenant, &window.device, window.end_ms, now_ms)?;
                report.windows += 1;
                ready.push(window);
            }
            Pushed::Late => {
                report.late += 1;
                self.uncounted.late += 1;
            }
            Pushed::Held | Pushed::Duplicate => {}
        }
        Ok(())
    }

    /// Makes sure the device's window state exists and matches the tenant's window size and hop
    /// (a new preprocess plugin may change the size): otherwise it is rebuilt from the store.
    fn device_state(
        &mut self,
        key: &(String, String),
        size: usize,
        hop: usize,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        if self.devices.get(key).is_some_and(|s| s.size == size && s.hop == hop) {
            return Ok(());
        }
        let (tenant, device) = key;
        let recent = self.store.recent_readings(tenant, device, size + hop)?;
        let last = self.store.last_window_ms(tenant, device)?;
        debug!(%tenant, %device, restored = recent.len(), "Window state rebuilt from the store");
        self.devices.insert(
            key.clone(),
            DeviceState {
                windows: DeviceWindows::restore(size, hop, recent, last),
                size,
                hop,
                seen_ms: now_ms,
            },
        );
        Ok(())
    }

    fn asset(&mut self, tenant: &str, device: &str) -> anyhow::Result<Vec<(String, String)>> {
        let key = (tenant.to_string(), device.to_string());
        if let Some(a) = self.assets.get(&key) {
            return Ok(a.clone());
        }
        let a = self.store.asset(tenant, device)?;
        self.assets.insert(key, a.clone());
        Ok(a)
    }

    /// Runs the windows the batch completed through their tenants' plugins together (windows
    /// ready at once share one model call per tenant) and stores what they produced. Windows
    /// deferred by earlier batches go first, each tenant's in order; a tenant's windows past its
    /// budget are deferred to the next batch (kept in the store, so a restart runs them too).
    fn windows(&mut self, ready: Vec<Window>, now_ms: i64, report: &mut BatchReport) -> anyhow::Result<()> {
        let earlier = match self.deferred.take() {
            Some(d) => d,
            None => self.store.deferred_windows()?,
        };
        if ready.is_empty() && earlier.is_empty() {
            self.deferred = Some(earlier);
            return Ok(());
        }
        let mut waiting = Vec::new();
        let mut group = Vec::with_capacity(earlier.len().min(DEFERRED_PER_BATCH) + ready.len());
        let mut origins: Vec<Option<DeferredWindow>> = Vec::with_capacity(group.capacity());
        let mut taken: HashMap<String, usize> = HashMap::new();
        // Tenants with deferred windows left for a later batch: their new windows wait behind.
        let mut behind: HashSet<String> = HashSet::new();
        for d in earlier {
            let n = taken.entry(d.tenant.clone()).or_default();
            if *n >= DEFERRED_PER_BATCH {
                behind.insert(d.tenant.clone());
                waiting.push(d);
                continue;
            }
            *n += 1;
            let readings = self.store.window_readings(&d)?;
            if readings.is_empty() {
                warn!(tenant = %d.tenant, device = %d.device, end_ms = d.end_ms, "Deferred window dropped: its readings were purged");
                self.store.delete_deferred(&[d.id])?;
                continue;
            }
            let mut window = crate::windows::assemble(&readings.iter().collect::<Vec<_>>());
            window.asset = self.asset(&d.tenant, &d.device)?;
            group.push(window);
            origins.push(Some(d));
        }
        for window in ready {
            if behind.contains(&window.tenant) {
                waiting.push(self.defer(
                    &window.tenant,
                    &window.device,
                    window.start_ms,
                    window.end_ms,
                    now_ms,
                )?);
            } else {
                group.push(window);
                origins.push(None);
            }
        }
        // Lazily: each outcome is stored before the next window's policy asks the history.
        let host = self.host.clone();
        for ((id, outcome), origin) in process_windows(&host, group, self.budget.per_batch).zip(origins) {
            let outcome = match (outcome, origin) {
                (Err(PipelineError::OverBudget(_)), Some(d)) => {
                    waiting.push(d);
                    continue;
                }
                (Err(PipelineError::OverBudget(_)), None) => {
                    waiting.push(self.defer(&id.tenant, &id.device, id.start_ms, id.end_ms, now_ms)?);
                    continue;
                }
                (outcome, origin) => {
                    if let Some(d) = origin {
                        self.store.delete_deferred(&[d.id])?;
                    }
                    outcome
                }
            };
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    report.window_errors += 1;
                    self.count(&id.tenant, WINDOW_ERRORS, 1);
                    warn!(tenant = %id.tenant, device = %id.device, end_ms = id.end_ms, error = %e, "Window not scored");
                    continue;
                }
            };
            if !self.store_outcome(&outcome, id.start_ms, id.readings, now_ms)? {
                debug!(tenant = %id.tenant, device = %id.device, end_ms = id.end_ms, "Prediction of this window already stored");
                continue;
            }
            report.predictions += 1;
            report.alerts += outcome.decision.alerts.len() as u64;
            self.count(&id.tenant, PREDICTIONS, 1);
            self.count(&id.tenant, ALERTS, outcome.decision.alerts.len() as u64);
        }
        // Ids follow the order windows were completed in: each tenant's stay in order.
        waiting.sort_by_key(|d| d.id);
        self.shed(&mut waiting)?;
        self.deferred = Some(waiting);
        Ok(())
    }

    /// Keeps a window for the tenant's next budget.
    fn defer(
        &mut self,
        tenant: &str,
        device: &str,
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> anyhow::Result<DeferredWindow> {
        let id = self.store.defer_window(tenant, device, start_ms, end_ms, now_ms)?;
        self.count(tenant, DEFERRED, 1);
        Ok(DeferredWindow {
            id,
            tenant: tenant.to_string(),
            device: device.to_string(),
            start_ms,
            end_ms,
            deferred_ms: now_ms,
        })
    }

    /// Drops the oldest deferred windows of each tenant beyond [`WindowBudget::max_deferred`]: a
    /// tenant whose plugins cannot keep up with its devices loses windows of its own (their
    /// readings stay stored), not the others' time. Logged and counted.
    fn shed(&mut self, waiting: &mut Vec<DeferredWindow>) -> anyhow::Result<()> {
        let max = self.budget.max_deferred;
        if waiting.len() <= max {
            return Ok(());
        }
        let mut per_tenant: HashMap<&str, usize> = HashMap::new();
        for d in waiting.iter() {
            *per_tenant.entry(&d.tenant).or_default() += 1;
        }
        let mut excess: HashMap<String, usize> =
            per_tenant.into_iter().filter(|&(_, n)| n > max).map(|(t, n)| (t.to_string(), n - max)).collect();
        if excess.is_empty() {
            return Ok(());
        }
        let mut shed = Vec::new();
        waiting.retain(|d| match excess.get_mut(&d.tenant) {
            Some(n) if *n > 0 => {
                *n -= 1;
                shed.push((d.id, d.tenant.clone()));
                false
            }
            _ => true,
        });
        self.store.delete_deferred(&shed.iter().map(|s| s.0).collect::<Vec<_>>())?;
        for (_, tenant) in &shed {
            self.count(tenant, SHED, 1);
        }
        warn!(
            windows = shed.len(),
            max_deferred = max,
            "Deferred windows shed: their tenants' plugins cannot keep up with their devices"
        );
        Ok(())
    }

    fn store_outcome(
        &self,
        o: &WindowOutcome,
        start_ms: i64,
        readings: usize,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let contributions_json = serde_json::to_string(&o.score.contributions)?;
        let inserted = self.store.insert_outcome(&o.row(start_ms, &contributions_json), now_ms)?;
        if !inserted {
            return Ok(false);
        }
        self.outputs.window(&self.store, o, start_ms, readings, now_ms)?;
        Ok(true)
    }

    fn reject(
        &mut self,
        m: &Message,
        reject: &Reject,
        now_ms: i64,
        report: &mut BatchReport,
    ) -> anyhow::Result<()> {
        report.rejected += 1;
        self.uncounted.rejected.push(reject.reason());
        debug!(topic = %m.topic.chars().take(200).collect::<String>(), reason = reject.reason(), "Message dead-lettered: {reject}");
        self.outputs.refused(&self.store, &m.topic, &m.payload, reject, now_ms)
    }
}
