//! The host's memory of each device: feature history and past alerts.
//!
//! It answers the `history` imports of policy plugins, which is how plugins stay stateless
//! (cool-downs, "abnormal since" lines). [`MemoryHistory`] keeps a bounded in-process history;
//! the durable [`SqliteStore`] of the telemetry path implements the same [`History`] trait.

mod memory;
mod sqlite;

pub use memory::{DEFAULT_WINDOWS_PER_DEVICE, MemoryHistory};
pub use sqlite::{
    AckOutcome, Acknowledgement, AlertFilter, AlertKey, AlertView, Counts, DeferredWindow, Degradation,
    DegradationQuery, DevicePeriod, DeviceTrend, DeviceView, Durability, MessageKind, OutboxBound,
    OutboxItem, OutboxRead, OutcomeRow, PredictionPoint, PredictionSeries, ServedVersions, SqliteStore,
    StoreGone, StoredPrediction, WalSync, decode_channels, encode_channels,
};

use crate::types::Features;

/// The API's request to record an alert's acknowledgement. The ingest loop — the store's only
/// writer — carries it out between two batches and answers on `reply`.
pub struct AckRequest {
    pub key: AlertKey,
    pub by: String,
    pub note: String,
    pub reply: tokio::sync::oneshot::Sender<Result<AckOutcome, String>>,
}
use std::sync::Arc;
use tokio::sync::Notify;

/// A sink's report to the store's writer: `sink` has settled (delivered or dead-lettered) every
/// outbox message of its kind with an id up to `upto` (see [`SqliteStore::settle_outbox`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub sink: &'static str,
    pub upto: i64,
}

/// Wakes the store's readers that wait for new outbox rows (the sinks' drivers) after a commit.
/// Cheap and never blocks; a wake while a reader is busy is kept for its next wait.
#[derive(Clone, Default)]
pub struct Waker(Vec<Arc<Notify>>);

impl Waker {
    pub fn add(&mut self, reader: Arc<Notify>) {
        self.0.push(reader);
    }
    pub fn wake(&self) {
        for n in &self.0 {
            n.notify_one();
        }
    }
}

/// What the pipeline records and what policies may ask. Timestamps are milliseconds since the
/// Unix epoch; all queries are scoped to one tenant.
pub trait History: Send + Sync {
    /// Records the features of the window of `device` that ended at `ts_ms`.
    fn record_features(&self, tenant: &str, device: &str, ts_ms: i64, features: &Features);
    /// Records that an alert was raised for `device` at `ts_ms`.
    fn record_alert(&self, tenant: &str, device: &str, ts_ms: i64);
    /// Start of the current uninterrupted run of windows with `feature` above `threshold`.
    fn above_since(&self, tenant: &str, device: &str, feature: &str, threshold: f64) -> Option<i64>;
    /// Mean of `feature` over windows that ended in `[from_ms, to_ms]`.
    fn mean(&self, tenant: &str, device: &str, feature: &str, from_ms: i64, to_ms: i64) -> Option<f64>;
    /// Time of the last alert of `device`.
    fn last_alert_ms(&self, tenant: &str, device: &str) -> Option<i64>;
    /// The device's healthy baseline of `feature`: the median over the windows of its
    /// commissioning `period` (the median so far while the period runs). A baseline whose period
    /// is over is kept, so it does not change as old windows are dropped.
    fn baseline(&self, tenant: &str, device: &str, feature: &str, period: BaselinePeriod) -> Option<f64>;
}

/// A device's commissioning period: from its first window at or after `since_ms` (its first
/// window at all without one), `minutes` long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselinePeriod {
    pub since_ms: Option<i64>,
    pub minutes: f64,
}

impl BaselinePeriod {
    /// The end of the period that starts at `start_ms`.
    pub fn end_ms(&self, start_ms: i64) -> i64 {
        start_ms.saturating_add((self.minutes.max(0.0) * 60_000.0) as i64)
    }
}

/// The median of `values` (NaN ignored), `None` when there is none.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

/// Baselines whose period is over, by (tenant, device, feature, `since_ms` of the period): they
/// no longer change, so they are answered without a query.
#[derive(Default)]
pub(crate) struct FinalBaselines(
    std::sync::Mutex<std::collections::HashMap<(String, String, String, i64), f64>>,
);

impl FinalBaselines {
    pub(crate) fn get(&self, tenant: &str, device: &str, feature: &str, since_ms: i64) -> Option<f64> {
        let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(tenant.to_string(), device.to_string(), feature.to_string(), since_ms)).copied()
    }

    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    pub(crate) fn put(&self, tenant: &str, device: &str, feature: &str, since_ms: i64, value: f64) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 1_000_000 {
            map.clear(); // a bound on memory; they are recomputed from the store
        }
        map.insert((tenant.to_string(), device.to_string(), feature.to_string(), since_ms), value);
    }
}

/// What every [`History`] answers for baselines, checked on each implementation.
#[cfg(test)]
pub(crate) fn check_baselines(h: &dyn History) {
    let f =
        |rms: f32| Features { names: vec!["vibration_rms".into(), "x".into()], values: vec![rms, f32::NAN] };
    let period = BaselinePeriod { since_ms: None, minutes: 10.0 };
    assert_eq!(h.baseline("t", "d", "vibration_rms", period), None, "nothing recorded yet");
    // One window a minute: 1, 3, 2 in the first ten minutes (median 2) ...
    h.record_features("t", "d", 0, &f(1.0));
    assert_eq!(h.baseline("t", "d", "vibration_rms", period), Some(1.0), "the median so far");
    h.record_features("t", "d", 60_000, &f(3.0));
    h.record_features("t", "d", 120_000, &f(2.0));
    assert_eq!(h.baseline("t", "d", "vibration_rms", period), Some(2.0));
    // ... then a failing bearing: the baseline stays what the period made it.
    for minute in 3..=30 {
        h.record_features("t", "d", minute * 60_000, &f(if minute <= 10 { 2.0 } else { 50.0 }));
    }
    assert_eq!(h.baseline("t", "d", "vibration_rms", period), Some(2.0));
    assert_eq!(h.baseline("t", "d", "x", period), None, "a feature never measured");
    assert_eq!(h.baseline("t", "d", "missing", period), None);
    assert_eq!(h.baseline("t", "other", "vibration_rms", period), None);
    // A replaced bearing (asset baseline_since): a new period from the first window after it.
    let replaced = BaselinePeriod { since_ms: Some(20 * 60_000 + 1), minutes: 5.0 };
    assert_eq!(h.baseline("t", "d", "vibration_rms", replaced), Some(50.0));
}
