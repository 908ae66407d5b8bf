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
}
