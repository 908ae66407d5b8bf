//! A bounded, in-process [`History`].

use super::{BaselinePeriod, FinalBaselines, History, median};
use crate::types::Features;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// Windows kept per device when not told otherwise (a week of 1-minute windows).
pub const DEFAULT_WINDOWS_PER_DEVICE: usize = 10_080;

#[derive(Default)]
struct Device {
    /// Feature names of the windows below; a change of names starts a new history.
    names: Arc<[String]>,
    /// (window end, values), oldest first, ordered by time.
    windows: VecDeque<(i64, Vec<f32>)>,
    last_alert_ms: Option<i64>,
}

/// Feature history and alert times per (tenant, device), newest `capacity` windows each.
pub struct MemoryHistory {
    capacity: usize,
    devices: Mutex<HashMap<(String, String), Device>>,
    baselines: FinalBaselines,
}

impl Default for MemoryHistory {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOWS_PER_DEVICE)
    }
}

impl MemoryHistory {
    pub fn new(capacity: usize) -> MemoryHistory {
        MemoryHistory {
            capacity: capacity.max(1),
            devices: Mutex::new(HashMap::new()),
            baselines: Default::default(),
        }
    }

    fn with_device<R>(&self, tenant: &str, device: &str, f: impl FnOnce(&Device) -> Option<R>) -> Option<R> {
        let devices = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        devices.get(&(tenant.to_string(), device.to_string())).and_then(f)
    }
}

fn column(d: &Device, feature: &str) -> Option<usize> {
    d.names.iter().position(|n| n == feature)
}

impl History for MemoryHistory {
    fn record_features(&self, tenant: &str, device: &str, ts_ms: i64, features: &Features) {
        let mut devices = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        let d = devices.entry((tenant.to_string(), device.to_string())).or_default();
        if *d.names != *features.names {
            d.names = features.names.clone().into();
            d.windows.clear();
        }
        // Keep time order; a late window is inserted in place, a repeated one replaces.
        let at = d.windows.partition_point(|(t, _)| *t < ts_ms);
        match d.windows.get_mut(at) {
            Some((t, values)) if *t == ts_ms => *values = features.values.clone(),
            _ => d.windows.insert(at, (ts_ms, features.values.clone())),
        }
        while d.windows.len() > self.capacity {
            d.windows.pop_front();
        }
    }

    fn record_alert(&self, tenant: &str, device: &str, ts_ms: i64) {
        let mut devices = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        let d = devices.entry((tenant.to_string(), device.to_string())).or_default();
        d.last_alert_ms = Some(d.last_alert_ms.map_or(ts_ms, |t| t.max(ts_ms)));
    }

    fn above_since(&self, tenant: &str, device: &str, feature: &str, threshold: f64) -> Option<i64> {
        self.with_device(tenant, device, |d| {
            let i = column(d, feature)?;
            let mut since = None;
            for (ts, values) in d.windows.iter().rev() {
                if (values[i] as f64) > threshold {
                    since = Some(*ts);
                } else {
                    break;
                }
            }
            since
        })
    }

    fn mean(&self, tenant: &str, device: &str, feature: &str, from_ms: i64, to_ms: i64) -> Option<f64> {
        self.with_device(tenant, device, |d| {
            let i = column(d, feature)?;
            let (sum, n) = d
                .windows
                .iter()
                .filter(|(ts, v)| (from_ms..=to_ms).contains(ts) && v[i].is_finite())
                .fold((0.0, 0usize), |(s, n), (_, v)| (s + v[i] as f64, n + 1));
            (n > 0).then(|| sum / n as f64)
        })
    }

    fn last_alert_ms(&self, tenant: &str, device: &str) -> Option<i64> {
        self.with_device(tenant, device, |d| d.last_alert_ms)
    }

    fn baseline(&self, tenant: &str, device: &str, feature: &str, period: BaselinePeriod) -> Option<f64> {
        let since = period.since_ms.unwrap_or(i64::MIN);
        if let Some(b) = self.baselines.get(tenant, device, feature, since) {
            return Some(b);
        }
        let (values, over) = self.with_device(tenant, device, |d| {
            let i = column(d, feature)?;
            let start = d.windows.iter().map(|(t, _)| *t).find(|t| *t >= since)?;
            let end = period.end_ms(start);
            let values = d
                .windows
                .iter()
                .filter(|(t, _)| (start..=end).contains(t))
                .map(|(_, v)| v[i] as f64)
                .collect();
            Some((values, d.windows.back().is_some_and(|(t, _)| *t > end)))
        })?;
        let b = median(values)?;
        if over {
            self.baselines.put(tenant, device, feature, since, b);
        }
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(rms: f32) -> Features {
        Features { names: vec!["vibration_rms".into()], values: vec![rms] }
    }

    #[test]
    fn above_since_is_the_start_of_the_current_run() {
        let h = MemoryHistory::new(100);
        for (ts, v) in [(1, 5.0), (2, 1.0), (3, 5.0), (4, 6.0), (5, 7.0)] {
            h.record_features("t", "d", ts, &f(v));
        }
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), Some(3));
        h.record_features("t", "d", 6, &f(1.0));
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), None);
        assert_eq!(h.above_since("t", "other", "vibration_rms", 4.5), None);
        assert_eq!(h.above_since("t", "d", "unknown", 4.5), None);
    }

    #[test]
    fn mean_over_a_range_and_capacity() {
        let h = MemoryHistory::new(3);
        for ts in 1..=5 {
            h.record_features("t", "d", ts, &f(ts as f32));
        }
        assert_eq!(h.mean("t", "d", "vibration_rms", 0, 100), Some(4.0)); // 3, 4, 5 kept
        assert_eq!(h.mean("t", "d", "vibration_rms", 4, 4), Some(4.0));
        assert_eq!(h.mean("t", "d", "vibration_rms", 10, 20), None);
    }

    #[test]
    fn baselines() {
        super::super::check_baselines(&MemoryHistory::new(100));
        // Once its period is over, a baseline outlives the windows it was made of.
        let h = MemoryHistory::new(5);
        let period = BaselinePeriod { since_ms: None, minutes: 1.0 };
        for ts in 0..4 {
            h.record_features("t", "d", ts * 30_000, &f(1.0 + ts as f32));
        }
        assert_eq!(h.baseline("t", "d", "vibration_rms", period), Some(2.0));
        for ts in 4..20 {
            h.record_features("t", "d", ts * 30_000, &f(100.0));
        }
        assert_eq!(h.baseline("t", "d", "vibration_rms", period), Some(2.0));
    }

    #[test]
    fn last_alert_keeps_the_newest() {
        let h = MemoryHistory::default();
        h.record_alert("t", "d", 10);
        h.record_alert("t", "d", 5);
        assert_eq!(h.last_alert_ms("t", "d"), Some(10));
    }
}
