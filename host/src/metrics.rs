//! Prometheus metrics. Names are constants; labels are low-cardinality (tenant, stage, outcome —
//! never a device id). Handles are resolved once per tenant and stage, not per call.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use crate::types::Stage;

/// Plugin calls by tenant, stage and outcome (`_total` is appended on export).
pub const PLUGIN_CALLS: &str = "edgepm_plugin_calls";
/// Duration of plugin calls, seconds.
pub const PLUGIN_CALL_SECONDS: &str = "edgepm_plugin_call_seconds";
/// Plugin versions loaded or rejected, by tenant, stage and result.
pub const PLUGIN_LOADS: &str = "edgepm_plugin_loads";
/// Plugin versions quarantined after repeated traps.
pub const PLUGIN_QUARANTINES: &str = "edgepm_plugin_quarantines";
/// Windows that went through all three stages.
pub const WINDOWS_PROCESSED: &str = "edgepm_windows_processed";
/// Rows scored by one batched model call for windows ready together.
pub const MODEL_BATCHED_ROWS: &str = "edgepm_model_batched_rows";

/// How a plugin call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    Ok,
    /// The plugin returned `err(...)`: an expected failure.
    Error,
    /// Deadline exceeded.
    Timeout,
    /// Memory cap exceeded.
    Memory,
    /// Any other trap: a bug in the plugin.
    Trap,
    /// The plugin tried to wait inside WASI (sleep, poll, blocking I/O): refused.
    Blocked,
    /// The plugin returned something the host refuses (a probability outside [0, 1], features
    /// whose names and values do not pair up, another device's history, ...).
    InvalidOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadResult {
    Loaded,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    tenant: String,
    stage: Stage,
    outcome: CallOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabels {
    tenant: String,
    stage: Stage,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoadLabels {
    tenant: String,
    stage: Stage,
    result: LoadResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

fn call_histogram() -> Histogram {
    // 1 µs .. ~4 s
    Histogram::new(exponential_buckets(1e-6, 4.0, 12))
}

/// All metrics of one host.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    loads: Family<LoadLabels, Counter>,
    quarantines: Family<StageLabels, Counter>,
    windows: Family<TenantLabels, Counter>,
    batched_rows: Family<TenantLabels, Counter>,
    /// The telemetry path: readings in, rejections, outputs, MQTT session.
    pub telemetry: TelemetryMetrics,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabels {
    sink: &'static str,
}

/// Metrics of the telemetry path (MQTT in, store, outbox out).
#[derive(Clone)]
pub struct TelemetryMetrics {
    readings: Family<TenantLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    /// Readings already stored (MQTT redelivery), acknowledged again and otherwise ignored.
    pub duplicates: Counter,
    /// Readings older than the device's last window: stored, but they cannot change a window.
    pub late: Counter,
    /// Readings kept for replay after a refusal for a host-side cause (unknown tenant).
    pub parked: Counter,
    predictions: Family<TenantLabels, Counter>,
    alerts: Family<TenantLabels, Counter>,
    window_errors: Family<TenantLabels, Counter>,
    windows_deferred: Family<TenantLabels, Counter>,
    windows_shed: Family<TenantLabels, Counter>,
    /// Deferred windows waiting for a batch with budget left (all tenants).
    pub windows_waiting: Gauge,
    /// Messages waiting in the outbox.
    pub outbox_depth: Gauge,
    delivered: Family<SinkLabels, Counter>,
    delivery_failures: Family<SinkLabels, Counter>,
    retried: Family<SinkLabels, Counter>,
    dead_lettered: Family<SinkLabels, Counter>,
    outbox_queue: Family<SinkLabels, Gauge>,
    outbox_oldest: Family<SinkLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    clock_skew: Family<SinkLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Outbox messages dropped by its bounds, by reason (`rows`, `age`).
    outbox_dropped: Family<ReasonLabels, Counter>,
    /// Seconds from receiving a message to sending its acknowledgement (after the commit).
    pub ack_seconds: Histogram,
    /// Seconds per store transaction (a batch of messages).
    pub commit_seconds: Histogram,
    /// Seconds per sync of the store's commits to disk (`durability = "full"`).
    pub sync_seconds: Histogram,
    /// Syncs of the store to disk that failed (their messages are not acknowledged).
    pub sync_failures: Counter,
    /// Seconds the ingest loop spent letting the WAL restart (its own checkpoint, between two
    /// batches: every reading waiting meanwhile waits that long).
    pub wal_restart_seconds: Histogram,
    /// 1 while the ingest MQTT session is connected.
    pub mqtt_connected: Gauge,
    /// Connection losses of the ingest MQTT session.
    pub mqtt_disconnects: Counter,
    /// Store transactions of the ingest loop that failed (the batch is retried in place).
    pub failed_batches: Counter,
    /// Bytes free for the store on the data folder's filesystem.
    pub free_bytes: Gauge,
    /// What keeps the host from being ready (`/readyz`).
    pub health: std::sync::Arc<crate::health::Health>,
}

impl std::fmt::Debug for TelemetryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TelemetryMetrics")
    }
}

fn latency_histogram() -> Histogram {
    // 10 µs .. ~40 s
    Histogram::new(exponential_buckets(1e-5, 2.5, 17))
}

impl TelemetryMetrics {
    fn new() -> TelemetryMetrics {
        TelemetryMetrics {
            readings: Family::default(),
            rejected: Family::default(),
            duplicates: Counter::default(),
            late: Counter::default(),
            parked: Counter::default(),
            predictions: Family::default(),
            alerts: Family::default(),
            window_errors: Family::default(),
            windows_deferred: Family::default(),
            windows_shed: Family::default(),
            windows_waiting: Gauge::default(),
            outbox_depth: Gauge::default(),
            delivered: Family::default(),
            delivery_failures: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            outbox_queue: Family::default(),
            outbox_oldest: Family::default(),
            clock_skew: Family::default(),
            outbox_dropped: Family::default(),
            ack_seconds: latency_histogram(),
            commit_seconds: latency_histogram(),
            sync_seconds: latency_histogram(),
            sync_failures: Counter::default(),
            wal_restart_seconds: latency_histogram(),
            mqtt_connected: Gauge::default(),
            mqtt_disconnects: Counter::default(),
            failed_batches: Counter::default(),
            free_bytes: Gauge::default(),
            health: Default::default(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register("edgepm_readings", "Readings stored, by tenant", self.readings.clone());
        r.register("edgepm_readings_rejected", "Messages dead-lettered, by reason", self.rejected.clone());
        r.register("edgepm_readings_duplicate", "Redelivered readings ignored", self.duplicates.clone());
        r.register("edgepm_readings_late", "Readings older than the last window", self.late.clone());
        r.register(
            "edgepm_readings_parked",
            "Readings of a tenant not deployed, kept and replayed once it is",
            self.parked.clone(),
        );
        r.register("edgepm_predictions", "Predictions stored, by tenant", self.predictions.clone());
        r.register("edgepm_alerts", "Alerts raised, by tenant", self.alerts.clone());
        r.register("edgepm_window_errors", "Windows a plugin failed on", self.window_errors.clone());
        r.register(
            "edgepm_windows_deferred",
            "Windows whose tenant had used its plugin time budget of the batch, run in a later one, by tenant",
            self.windows_deferred.clone(),
        );
        r.register(
            "edgepm_windows_shed",
            "Deferred windows dropped unscored because the tenant had max_deferred waiting, by tenant",
            self.windows_shed.clone(),
        );
        r.register(
            "edgepm_windows_waiting",
            "Deferred windows waiting for their tenant's next budget",
            self.windows_waiting.clone(),
        );
        r.register("edgepm_outbox_depth", "Messages waiting in the outbox", self.outbox_depth.clone());
        r.register("edgepm_outbox_delivered", "Outbox messages delivered, by sink", self.delivered.clone());
        r.register(
            "edgepm_outbox_failures",
            "Outbox deliveries (batches) that failed, by sink",
            self.delivery_failures.clone(),
        );
        r.register(
            "edgepm_outbox_retried",
            "Outbox messages whose delivery failed and is tried again, by sink",
            self.retried.clone(),
        );
        r.register(
            "edgepm_outbox_queue",
            "Outbox messages a sink has not settled (delivered or dead-lettered) yet, by sink",
            self.outbox_queue.clone(),
        );
        r.register(
            "edgepm_outbox_oldest_seconds",
            "Age of the oldest outbox message a sink has not settled yet, by sink",
            self.outbox_oldest.clone(),
        );
        r.register(
            "edgepm_sink_clock_skew_seconds",
            "The gateway's clock minus the service's (from its HTTP Date header), by sink",
            self.clock_skew.clone(),
        );
        r.register(
            "edgepm_outbox_dead_lettered",
            "Outbox messages that can never be delivered (too large, refused N times), by sink",
            self.dead_lettered.clone(),
        );
        r.register(
            "edgepm_outbox_dropped",
            "Outbox messages dropped by the outbox's bounds (outbox_max_rows, outbox_max_age_days), by reason",
            self.outbox_dropped.clone(),
        );
        r.register("edgepm_ack_latency_seconds", "Receive to MQTT acknowledgement", self.ack_seconds.clone());
        r.register("edgepm_store_commit_seconds", "Store transaction per batch", self.commit_seconds.clone());
        r.register(
            "edgepm_store_sync_seconds",
            "Sync of the store's commits to disk before their acknowledgement (durability full)",
            self.sync_seconds.clone(),
        );
        r.register(
            "edgepm_store_sync_failures",
            "Syncs to disk that failed (messages left unacknowledged)",
            self.sync_failures.clone(),
        );
        r.register(
            "edgepm_store_wal_restart_seconds",
            "Pauses of the ingest loop while the WAL restarts (the writer's checkpoint)",
            self.wal_restart_seconds.clone(),
        );
        r.register("edgepm_mqtt_connected", "1 while the MQTT session is up", self.mqtt_connected.clone());
        r.register("edgepm_mqtt_disconnects", "MQTT connection losses", self.mqtt_disconnects.clone());
        r.register(
            "edgepm_store_failed_batches",
            "Store transactions that failed (disk full, I/O error); the batch is retried, not acknowledged",
            self.failed_batches.clone(),
        );
        r.register(
            "edgepm_store_free_bytes",
            "Bytes free on the data folder's filesystem",
            self.free_bytes.clone(),
        );
    }

    pub fn readings(&self, tenant: &str) -> Counter {
        self.readings.get_or_create(&TenantLabels { tenant: tenant.to_string() }).clone()
    }
    pub fn rejected(&self, reason: &'static str) -> Counter {
        self.rejected.get_or_create(&ReasonLabels { reason }).clone()
    }
    pub fn predictions(&self, tenant: &str) -> Counter {
        self.predictions.get_or_create(&TenantLabels { tenant: tenant.to_string() }).clone()
    }
    pub fn alerts(&self, tenant: &str) -> Counter {
        self.alerts.get_or_create(&TenantLabels { tenant: tenant.to_string() }).clone()
    }
    pub fn window_errors(&self, tenant: &str) -> Counter {
        self.window_errors.get_or_create(&TenantLabels { tenant: tenant.to_string() }).clone()
    }
    pub fn windows_deferred(&self, tenant: &str) -> Counter {
        self.windows_deferred.get_or_create(&TenantLabels { tenant: tenant.to_string() }).clone()
    }
    pub fn windows_shed(&self, tenant: &str) -> Counter {
        self.windows_shed.get_or_create(&TenantLabels { tenant: tenant.to_string() }).clone()
    }
    pub fn delivered(&self, sink: &'static str) -> Counter {
        self.delivered.get_or_create(&SinkLabels { sink }).clone()
    }
    pub fn dead_lettered(&self, sink: &'static str) -> Counter {
        self.dead_lettered.get_or_create(&SinkLabels { sink }).clone()
    }
    pub fn outbox_dropped(&self, reason: &'static str) -> Counter {
        self.outbox_dropped.get_or_create(&ReasonLabels { reason }).clone()
    }
    pub fn delivery_failures(&self, sink: &'static str) -> Counter {
        self.delivery_failures.get_or_create(&SinkLabels { sink }).clone()
    }
    pub fn retried(&self, sink: &'static str) -> Counter {
        self.retried.get_or_create(&SinkLabels { sink }).clone()
    }
    pub fn clock_skew(&self, sink: &'static str) -> Gauge<f64, std::sync::atomic::AtomicU64> {
        self.clock_skew.get_or_create(&SinkLabels { sink }).clone()
    }
    pub fn outbox_queue(&self, sink: &'static str) -> Gauge {
        self.outbox_queue.get_or_create(&SinkLabels { sink }).clone()
    }
    pub fn outbox_oldest_seconds(&self, sink: &'static str) -> Gauge<f64, std::sync::atomic::AtomicU64> {
        self.outbox_oldest.get_or_create(&SinkLabels { sink }).clone()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        let call_seconds =
            Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(call_histogram);
        let loads = Family::<LoadLabels, Counter>::default();
        let quarantines = Family::<StageLabels, Counter>::default();
        let windows = Family::<TenantLabels, Counter>::default();
        registry.register(PLUGIN_CALLS, "Plugin calls by outcome", calls.clone());
        registry.register(PLUGIN_CALL_SECONDS, "Duration of plugin calls", call_seconds.clone());
        registry.register(PLUGIN_LOADS, "Plugin versions loaded or rejected", loads.clone());
        registry.register(
            PLUGIN_QUARANTINES,
            "Plugin versions quarantined after repeated traps",
            quarantines.clone(),
        );
        registry.register(WINDOWS_PROCESSED, "Windows processed by all three stages", windows.clone());
        let batched_rows = Family::<TenantLabels, Counter>::default();
        registry.register(
            MODEL_BATCHED_ROWS,
            "Rows scored in batched model calls (windows ready together), by tenant",
            batched_rows.clone(),
        );
        let telemetry = TelemetryMetrics::new();
        telemetry.register(&mut registry);
        Metrics { registry, calls, call_seconds, loads, quarantines, windows, batched_rows, telemetry }
    }

    /// The handles a plugin of `tenant` at `stage` updates on every call.
    pub fn stage(&self, tenant: &str, stage: Stage) -> StageMetrics {
        let outcome = |outcome| {
            self.calls.get_or_create(&CallLabels { tenant: tenant.to_string(), stage, outcome }).clone()
        };
        StageMetrics {
            ok: outcome(CallOutcome::Ok),
            error: outcome(CallOutcome::Error),
            timeout: outcome(CallOutcome::Timeout),
            memory: outcome(CallOutcome::Memory),
            trap: outcome(CallOutcome::Trap),
            blocked: outcome(CallOutcome::Blocked),
            invalid_output: outcome(CallOutcome::InvalidOutput),
            seconds: self
                .call_seconds
                .get_or_create(&StageLabels { tenant: tenant.to_string(), stage })
                .clone(),
        }
    }

    pub fn model_batched_rows(&self, tenant: &str) -> Counter {
        self.batched_rows.get_or_create(&TenantLabels { tenant: tenant.to_string() }).clone()
    }

    pub fn plugin_loaded(&self, tenant: &str, stage: Stage, result: LoadResult) {
        self.loads.get_or_create(&LoadLabels { tenant: tenant.to_string(), stage, result }).inc();
    }

    pub fn plugin_quarantined(&self, tenant: &str, stage: Stage) {
        self.quarantines.get_or_create(&StageLabels { tenant: tenant.to_string(), stage }).inc();
    }

    pub fn window_processed(&self, tenant: &str) -> Counter {
        self.windows.get_or_create(&TenantLabels { tenant: tenant.to_string() }).clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Per tenant and stage handles.
#[derive(Clone, Debug)]
pub struct StageMetrics {
    ok: Counter,
    error: Counter,
    timeout: Counter,
    memory: Counter,
    trap: Counter,
    blocked: Counter,
    invalid_output: Counter,
    seconds: Histogram,
}

impl StageMetrics {
    pub fn record(&self, outcome: CallOutcome, seconds: f64) {
        match outcome {
            CallOutcome::Ok => &self.ok,
            CallOutcome::Error => &self.error,
            CallOutcome::Timeout => &self.timeout,
            CallOutcome::Memory => &self.memory,
            CallOutcome::Trap => &self.trap,
            CallOutcome::Blocked => &self.blocked,
            CallOutcome::InvalidOutput => &self.invalid_output,
        }
        .inc();
        self.seconds.observe(seconds);
    }
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Memory => "memory",
            CallOutcome::Trap => "trap",
            CallOutcome::Blocked => "blocked",
            CallOutcome::InvalidOutput => "invalid_output",
        }
    }
}

impl EncodeLabelValue for CallOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

impl EncodeLabelValue for LoadResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(
            encoder,
            match self {
                LoadResult::Loaded => "loaded",
                LoadResult::Rejected => "rejected",
            },
        )
    }
}
