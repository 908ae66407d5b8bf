//! Equipment health over the stored windows: which equipment degrades.
//!
//! **Degradation**: a device whose vibration amplitude (the `vibration_rms` feature of its
//! windows) rose by at least `percent` over the last `days` against the `days` before. Each
//! period is summarised by its **median** window, so a few outlier windows move nothing, and a
//! gap in the data only thins a period out; a period with fewer than `min_windows` windows is
//! not judged (the device is listed as lacking data instead). "Now" is the newest stored window
//! unless given, so a store filled faster than real time (a replay, a simulation) reads the same.
//! The equivalent queries for Timestream and InfluxDB 3 are in `docs/operations.md`.

use super::SqliteStore;
use rusqlite::params;

/// What the degradation query looks for.
#[derive(Debug, Clone, PartialEq)]
pub struct DegradationQuery {
    /// The smallest rise reported, in percent of the baseline (default 15).
    pub percent: f64,
    /// Length of the recent period and of the baseline before it (default 7 days).
    pub days: f64,
    /// The feature compared (default `vibration_rms`).
    pub feature: String,
    /// Fewest windows a period needs to be judged (default 10).
    pub min_windows: u32,
    /// End of the recent period; `None`: the newest stored window.
    pub as_of_ms: Option<i64>,
}

impl Default for DegradationQuery {
    fn default() -> DegradationQuery {
        DegradationQuery {
            percent: 15.0,
            days: 7.0,
            feature: "vibration_rms".into(),
            min_windows: 10,
            as_of_ms: None,
        }
    }
}

/// One device's two periods.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceTrend {
    pub tenant: String,
    pub device: String,
    /// Median of the feature over the baseline period (`None`: no window there).
    pub baseline: Option<f64>,
    /// Median over the recent period.
    pub recent: Option<f64>,
    pub baseline_windows: u32,
    pub recent_windows: u32,
    /// `100 × (recent − baseline) / baseline`, when both periods have enough windows.
    pub rise_percent: Option<f64>,
}

/// The answer: the degrading devices (largest rise first) and the devices that could not be
/// judged, over `[as_of − 2 days, as_of]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Degradation {
    pub as_of_ms: Option<i64>,
    pub percent: f64,
    pub days: f64,
    pub feature: String,
    pub degrading: Vec<DeviceTrend>,
    /// Devices with windows in the range but too few in one period.
    pub not_enough_data: Vec<DeviceTrend>,
    /// Every device judged, degrading or not (largest rise first).
    pub judged: Vec<DeviceTrend>,
}

/// The medians of both periods per device: the rows of each (tenant, device, period) ranked by
/// value, the middle one (or the mean of the middle two) kept.
const DEGRADATION_SQL: &str = "
WITH w AS (
  SELECT tenant, device, json_extract(features, ?1) AS v,
         CASE WHEN ts_ms > ?3 THEN 'recent' ELSE 'baseline' END AS period
  FROM features
  WHERE ts_ms > ?2 AND ts_ms <= ?4 AND json_type(features, ?1) IN ('real', 'integer')
),
ranked AS (
  SELECT tenant, device, period, v,
         row_number() OVER (PARTITION BY tenant, device, period ORDER BY v) AS i,
         count(*) OVER (PARTITION BY tenant, device, period) AS n
  FROM w
)
SELECT tenant, device, period, avg(v) AS median, max(n) AS n
FROM ranked WHERE i IN ((n + 1) / 2, (n + 2) / 2)
GROUP BY tenant, device, period
ORDER BY tenant, device, period";

impl SqliteStore {
    /// The newest window's end time in the store.
    pub fn newest_window_ms(&self) -> rusqlite::Result<Option<i64>> {
        self.conn().query_row("SELECT max(ts_ms) FROM features", [], |r| r.get(0))
    }

    /// Runs the degradation query (see the module's documentation).
    pub fn degradation(&self, q: &DegradationQuery) -> rusqlite::Result<Degradation> {
        let as_of = match q.as_of_ms {
            Some(t) => Some(t),
            None => self.newest_window_ms()?,
        };
        let mut answer = Degradation {
            as_of_ms: as_of,
            percent: q.percent,
            days: q.days,
            feature: q.feature.clone(),
            degrading: Vec::new(),
            not_enough_data: Vec::new(),
            judged: Vec::new(),
        };
        let Some(as_of) = as_of else { return Ok(answer) };
        let span = (q.days * 86_400_000.0).round() as i64;
        let path = format!("$.{}", serde_json::Value::String(q.feature.clone()));
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(DEGRADATION_SQL)?;
        let rows = stmt.query_map(params![path, as_of - 2 * span, as_of - span, as_of], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, u32>(4)?,
            ))
        })?;
        let mut trends: Vec<DeviceTrend> = Vec::new();
        for row in rows {
            let (tenant, device, period, median, n) = row?;
            if trends.last().is_none_or(|t| t.tenant != tenant || t.device != device) {
                trends.push(DeviceTrend {
                    tenant,
                    device,
                    baseline: None,
                    recent: None,
                    baseline_windows: 0,
                    recent_windows: 0,
                    rise_percent: None,
                });
            }
            let t = trends.last_mut().expect("pushed above");
            if period == "recent" {
                (t.recent, t.recent_windows) = (Some(median), n);
            } else {
                (t.baseline, t.baseline_windows) = (Some(median), n);
            }
        }
        for mut t in trends {
            match (t.baseline, t.recent) {
                (Some(b), Some(r))
                    if t.baseline_windows >= q.min_windows
                        && t.recent_windows >= q.min_windows
                        && b > 0.0 =>
                {
                    t.rise_percent = Some(100.0 * (r - b) / b);
                    answer.judged.push(t);
                }
                _ => answer.not_enough_data.push(t),
            }
        }
        let rise = |t: &DeviceTrend| t.rise_percent.unwrap_or(f64::NEG_INFINITY);
        answer.judged.sort_by(|a, b| rise(b).total_cmp(&rise(a)));
        answer.degrading = answer.judged.iter().filter(|t| rise(t) >= q.percent).cloned().collect();
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, History as _};
    use crate::types::Features;

    fn features(rms: f32) -> Features {
        Features { names: vec!["vibration_rms".into(), "temperature_mean".into()], values: vec![rms, 60.0] }
    }

    #[test]
    fn medians_resist_outliers_and_periods_need_enough_windows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("edgepm.db"), Durability::Normal).unwrap();
        let day = 86_400_000i64;
        // Hourly windows over 14 days; "up" rises 30 % in the second week, "flat" does not but has
        // three wild outliers there, "sparse" has only a few windows in the first week.
        for h in 0..14 * 24 {
            let t = h as i64 * 3_600_000 + 1;
            let second_week = t > 7 * day;
            store.record_features("acme", "up", t, &features(if second_week { 1.3 } else { 1.0 }));
            let flat = if second_week && h % 50 == 0 { 9.0 } else { 1.0 + 0.01 * (h % 3) as f32 };
            store.record_features("acme", "flat", t, &features(flat));
            if second_week || h % 40 == 0 {
                store.record_features("acme", "sparse", t, &features(if second_week { 2.0 } else { 1.0 }));
            }
        }
        let a = store.degradation(&DegradationQuery::default()).unwrap();
        assert_eq!(a.as_of_ms, Some((14 * 24 - 1) as i64 * 3_600_000 + 1));
        let names = |v: &[DeviceTrend]| v.iter().map(|t| t.device.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a.degrading), ["up"]);
        assert!((a.degrading[0].rise_percent.unwrap() - 30.0).abs() < 0.1, "{:?}", a.degrading[0]);
        assert_eq!(names(&a.judged), ["up", "flat"]);
        assert_eq!(names(&a.not_enough_data), ["sparse"], "5 baseline windows < 10");
        // A higher bar, or a period past the data, finds nothing.
        let strict = DegradationQuery { percent: 31.0, ..DegradationQuery::default() };
        assert!(store.degradation(&strict).unwrap().degrading.is_empty());
        let later = DegradationQuery { as_of_ms: Some(40 * day), ..DegradationQuery::default() };
        let none = store.degradation(&later).unwrap();
        assert!(none.judged.is_empty() && none.not_enough_data.is_empty());
        // An empty store answers with nothing, not an error.
        let empty = SqliteStore::open(&dir.path().join("empty.db"), Durability::Normal).unwrap();
        assert_eq!(empty.degradation(&DegradationQuery::default()).unwrap().as_of_ms, None);
    }
}
