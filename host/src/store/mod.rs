//! The host's memory of each device: feature history and past alerts.
//!
//! It answers the `history` imports of policy plugins, which is how plugins stay stateless
//! (cool-downs, "abnormal since" lines). [`MemoryHistory`] keeps a bounded in-process history;
//! the durable [`SqliteStore`] of the telemetry path implements the same [`History`] trait.

mod memory;
mod sqlite;

pub use memory::{DEFAULT_WINDOWS_PER_DEVICE, MemoryHistory};
pub use sqlite::{
    Counts, DeferredWindow, Durability, OutboxItem, OutcomeRow, Sink, SqliteStore, StoreGone,
    StoredPrediction, WalSync, decode_channels, encode_channels,
};

use crate::types::Features;

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
