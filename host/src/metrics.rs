//! Prometheus metrics. Names are constants; labels are low-cardinality (tenant, stage, outcome —
//! never a device id). Handles are resolved once per tenant and stage, not per call.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
        Metrics { registry, calls, call_seconds, loads, quarantines, windows }
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
            seconds: self
                .call_seconds
                .get_or_create(&StageLabels { tenant: tenant.to_string(), stage })
                .clone(),
        }
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
