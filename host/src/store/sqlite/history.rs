//! History: predictions and alerts, features, the asset registry, and the `History` answers
//! policies ask for.

use super::SqliteStore;
use crate::store::{BaselinePeriod, History, median};
use crate::types::{Alert, Features, Severity};
use rusqlite::{Connection, OptionalExtension as _, params};
use std::sync::PoisonError;
use tracing::warn;

/// A prediction row as the store keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredPrediction {
    pub tenant: String,
    pub device: String,
    pub ts_ms: i64,
    pub probability: f64,
    pub is_failure: bool,
    pub model: String,
}

/// What one window produced, in the form the store keeps.
pub struct OutcomeRow<'a> {
    pub tenant: &'a str,
    pub device: &'a str,
    pub start_ms: i64,
    pub end_ms: i64,
    pub probability: f32,
    pub is_failure: bool,
    pub model: &'a str,
    pub versions: &'a [String; 3],
    pub contributions_json: &'a str,
    pub alerts: &'a [Alert],
}

/// Memos of one device, by (feature, threshold bits): a handful per device.
pub(super) type DeviceMemos = Vec<(String, u64, AboveMemo)>;

/// The answer of `above_since` through the window that ended at `through_ms`, so the next query
/// only reads the windows recorded since.
pub(super) struct AboveMemo {
    through_ms: i64,
    since: Option<i64>,
}

impl SqliteStore {
    /// Stores a prediction and its alerts; `false` when the window's prediction was already
    /// stored (a repeated window replaces nothing). Only that duplicate is ignored: any other
    /// constraint (a NULL where a value is required) fails the transaction.
    pub fn insert_outcome(&self, o: &OutcomeRow<'_>, now_ms: i64) -> rusqlite::Result<bool> {
        let conn = self.conn();
        let versions = serde_json::to_string(o.versions).unwrap_or_default();
        let inserted =
            conn.prepare_cached(
                "INSERT INTO predictions (tenant, device, ts_ms, start_ms, probability, is_failure,
               model, versions, contributions, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (tenant, device, ts_ms) DO NOTHING",
            )?
            .execute(params![
                o.tenant,
                o.device,
                o.end_ms,
                o.start_ms,
                o.probability as f64,
                o.is_failure,
                o.model,
                versions,
                o.contributions_json,
                now_ms
            ])? == 1;
        if !inserted {
            return Ok(false);
        }
        let mut alert = conn.prepare_cached(
            "INSERT INTO alerts (tenant, device, ts_ms, idx, severity, subject, body, probability)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for (i, a) in o.alerts.iter().enumerate() {
            alert.execute(params![
                o.tenant,
                o.device,
                o.end_ms,
                i as i64,
                severity_str(a.severity),
                a.subject,
                a.body,
                o.probability as f64
            ])?;
        }
        Ok(true)
    }

    /// Predictions of a device (or of every device when `device` is `None`), oldest first.
    pub fn predictions(&self, tenant: &str, device: Option<&str>) -> rusqlite::Result<Vec<StoredPrediction>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT device, ts_ms, probability, is_failure, model FROM predictions
             WHERE tenant = ?1 AND (?2 IS NULL OR device = ?2) ORDER BY ts_ms, device",
        )?;
        let rows = stmt.query_map(params![tenant, device], |r| {
            Ok(StoredPrediction {
                tenant: tenant.to_string(),
                device: r.get(0)?,
                ts_ms: r.get(1)?,
                probability: r.get(2)?,
                is_failure: r.get(3)?,
                model: r.get(4)?,
            })
        })?;
        rows.collect()
    }

    /// Registry metadata of a device, e.g. `[("model", "W22 15 kW"), ("site", "Plant A")]`.
    pub fn asset(&self, tenant: &str, device: &str) -> rusqlite::Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT attributes FROM assets WHERE tenant = ?1 AND device = ?2")?;
        let json: Option<String> = stmt.query_row(params![tenant, device], |r| r.get(0)).optional()?;
        Ok(json.as_deref().map(parse_attributes).unwrap_or_default())
    }

    /// Replaces the registry metadata of a device.
    pub fn upsert_asset(
        &self,
        tenant: &str,
        device: &str,
        attributes: &[(String, String)],
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        let map: serde_json::Map<String, serde_json::Value> =
            attributes.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO assets (tenant, device, attributes, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, device) DO UPDATE SET attributes = excluded.attributes,
               updated_ms = excluded.updated_ms",
        )?
        .execute(params![tenant, device, serde_json::Value::Object(map).to_string(), now_ms])?;
        Ok(())
    }

    fn feature_path(feature: &str) -> String {
        // A JSON path selecting one key, whatever characters it holds.
        format!("$.{}", serde_json::Value::String(feature.to_string()))
    }

    fn above_since_sql(
        conn: &Connection,
        tenant: &str,
        device: &str,
        feature: &str,
        threshold: f64,
        memo: Option<&AboveMemo>,
    ) -> rusqlite::Result<AboveMemo> {
        let path = Self::feature_path(feature);
        match memo {
            // Continue from the memo with the windows recorded since, oldest first.
            Some(m) => {
                let mut stmt = conn.prepare_cached(
                    "SELECT ts_ms, json_extract(features, ?4) FROM features
                     WHERE tenant = ?1 AND device = ?2 AND ts_ms > ?3 ORDER BY ts_ms",
                )?;
                let mut rows = stmt.query(params![tenant, device, m.through_ms, path])?;
                let mut next = AboveMemo { through_ms: m.through_ms, since: m.since };
                while let Some(row) = rows.next()? {
                    let ts: i64 = row.get(0)?;
                    let v: Option<f64> = row.get(1)?;
                    next.since =
                        if v.is_some_and(|v| v > threshold) { next.since.or(Some(ts)) } else { None };
                    next.through_ms = ts;
                }
                Ok(next)
            }
            // From scratch: the newest window at or below the threshold bounds the current run.
            None => {
                let newest: Option<i64> = conn
                    .prepare_cached("SELECT max(ts_ms) FROM features WHERE tenant = ?1 AND device = ?2")?
                    .query_row(params![tenant, device], |r| r.get(0))?;
                let Some(newest) = newest else {
                    return Ok(AboveMemo { through_ms: i64::MIN, since: None });
                };
                let last_not_above: Option<i64> = conn
                    .prepare_cached(
                        "SELECT ts_ms FROM features WHERE tenant = ?1 AND device = ?2
                         AND NOT coalesce(json_extract(features, ?3) > ?4, 0) ORDER BY ts_ms DESC LIMIT 1",
                    )?
                    .query_row(params![tenant, device, path, threshold], |r| r.get(0))
                    .optional()?;
                let since: Option<i64> = conn
                    .prepare_cached(
                        "SELECT min(ts_ms) FROM features WHERE tenant = ?1 AND device = ?2 AND ts_ms > ?3",
                    )?
                    .query_row(params![tenant, device, last_not_above.unwrap_or(i64::MIN)], |r| r.get(0))?;
                Ok(AboveMemo { through_ms: newest, since })
            }
        }
    }

    fn log_error<T: Default>(what: &str, r: rusqlite::Result<T>) -> T {
        r.unwrap_or_else(|e| {
            warn!(error = %e, "History query ({what}) failed; answering as if there were no history");
            T::default()
        })
    }
}

impl History for SqliteStore {
    fn record_features(&self, tenant: &str, device: &str, ts_ms: i64, features: &Features) {
        let json = features_json(features);
        let result = {
            let conn = self.conn();
            conn.prepare_cached(
                "INSERT OR REPLACE INTO features (tenant, device, ts_ms, features) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![tenant, device, ts_ms, json]))
        };
        if let Err(e) = result {
            warn!(tenant, device, ts_ms, error = %e, "Storing features failed");
        }
        // A window older than a memo's end changes that run: forget those memos of the device.
        let mut above = self.above.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(memos) = above.get_mut(&(tenant.to_string(), device.to_string())) {
            memos.retain(|(_, _, m)| ts_ms > m.through_ms);
        }
    }

    fn record_alert(&self, _tenant: &str, _device: &str, _ts_ms: i64) {
        // Alerts are stored with their prediction by `insert_outcome`, in the same transaction.
    }

    fn above_since(&self, tenant: &str, device: &str, feature: &str, threshold: f64) -> Option<i64> {
        let mut above = self.above.lock().unwrap_or_else(PoisonError::into_inner);
        if above.len() > 100_000 {
            above.clear(); // a bound on memory; memos are only a shortcut
        }
        let memos = above.entry((tenant.to_string(), device.to_string())).or_default();
        let bits = threshold.to_bits();
        let slot = memos.iter().position(|(f, t, _)| f == feature && *t == bits);
        let conn = self.conn();
        match Self::above_since_sql(&conn, tenant, device, feature, threshold, slot.map(|i| &memos[i].2)) {
            Ok(memo) => {
                let since = memo.since;
                match slot {
                    Some(i) => memos[i].2 = memo,
                    None => memos.push((feature.to_string(), bits, memo)),
                }
                since
            }
            Err(e) => {
                warn!(error = %e, "History query (above-since) failed; answering none");
                None
            }
        }
    }

    fn mean(&self, tenant: &str, device: &str, feature: &str, from_ms: i64, to_ms: i64) -> Option<f64> {
        let conn = self.conn();
        let r = conn
            .prepare_cached(
                "SELECT avg(json_extract(features, ?3)) FROM features
                 WHERE tenant = ?1 AND device = ?2 AND ts_ms BETWEEN ?4 AND ?5",
            )
            .and_then(|mut s| {
                s.query_row(params![tenant, device, Self::feature_path(feature), from_ms, to_ms], |r| {
                    r.get::<_, Option<f64>>(0)
                })
            });
        Self::log_error("mean", r)
    }

    fn last_alert_ms(&self, tenant: &str, device: &str) -> Option<i64> {
        let conn = self.conn();
        let r = conn
            .prepare_cached("SELECT max(ts_ms) FROM alerts WHERE tenant = ?1 AND device = ?2")
            .and_then(|mut s| s.query_row(params![tenant, device], |r| r.get::<_, Option<i64>>(0)));
        Self::log_error("last-alert-ms", r)
    }

    fn baseline(&self, tenant: &str, device: &str, feature: &str, period: BaselinePeriod) -> Option<f64> {
        let since = period.since_ms.unwrap_or(i64::MIN);
        if let Some(b) = self.baselines.get(tenant, device, feature, since) {
            return Some(b);
        }
        let conn = self.conn();
        let path = Self::feature_path(feature);
        let r = (|| -> rusqlite::Result<Option<f64>> {
            let kept: Option<f64> = conn
                .prepare_cached(
                    "SELECT value FROM baselines WHERE tenant = ?1 AND device = ?2 AND feature = ?3 AND since_ms = ?4",
                )?
                .query_row(params![tenant, device, feature, since], |r| r.get(0))
                .optional()?;
            if let Some(b) = kept {
                self.baselines.put(tenant, device, feature, since, b);
                return Ok(Some(b));
            }
            let start: Option<i64> = conn
                .prepare_cached(
                    "SELECT min(ts_ms) FROM features WHERE tenant = ?1 AND device = ?2 AND ts_ms >= ?3",
                )?
                .query_row(params![tenant, device, since], |r| r.get(0))?;
            let Some(start) = start else { return Ok(None) };
            let end = period.end_ms(start);
            let values = conn
                .prepare_cached(
                    "SELECT json_extract(features, ?3) FROM features
                     WHERE tenant = ?1 AND device = ?2 AND ts_ms BETWEEN ?4 AND ?5",
                )?
                .query_map(params![tenant, device, path, start, end], |r| r.get::<_, Option<f64>>(0))?
                .filter_map(|v| v.transpose())
                .collect::<rusqlite::Result<Vec<f64>>>()?;
            let Some(b) = median(values) else { return Ok(None) };
            let over: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM features WHERE tenant = ?1 AND device = ?2 AND ts_ms > ?3)",
                )?
                .query_row(params![tenant, device, end], |r| r.get(0))?;
            if over {
                // Kept in the store: retention may purge the period's windows, the baseline stays.
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO baselines (tenant, device, feature, since_ms, value)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![tenant, device, feature, since, b])?;
                self.baselines.put(tenant, device, feature, since, b);
            }
            Ok(Some(b))
        })();
        Self::log_error("baseline", r)
    }
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn features_json(f: &Features) -> String {
    let map: std::collections::BTreeMap<&str, f32> =
        f.names.iter().map(String::as_str).zip(f.values.iter().copied()).collect();
    serde_json::to_string(&map).unwrap_or_default()
}

pub(super) fn parse_attributes(json: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::tests::{features, store};

    #[test]
    fn a_prediction_without_a_probability_fails_instead_of_vanishing() {
        let (_d, s) = store();
        let versions = ["a".to_string(), "b".to_string(), "c".to_string()];
        let row = |p: f32| OutcomeRow {
            tenant: "t",
            device: "d",
            start_ms: 0,
            end_ms: 1,
            probability: p,
            is_failure: false,
            model: "m",
            versions: &versions,
            contributions_json: "[]",
            alerts: &[],
        };
        assert!(s.insert_outcome(&row(0.5), 0).expect("stored"));
        assert!(!s.insert_outcome(&row(0.5), 0).expect("a repeated window is ignored"));
        // NaN binds as NULL: the NOT NULL constraint must fail the write, not skip it silently.
        let nan = OutcomeRow { end_ms: 2, ..row(f32::NAN) };
        assert!(s.insert_outcome(&nan, 0).is_err());
    }

    #[test]
    fn baselines_are_medians_of_the_commissioning_period_and_outlive_its_windows() {
        let (dir, s) = store();
        crate::store::check_baselines(&s);
        let period = BaselinePeriod { since_ms: None, minutes: 10.0 };
        // Retention purges the period's windows: the baseline was kept in the store, and a
        // store opened afresh (no memo) answers it too.
        s.purge_before(25 * 60_000).expect("purge");
        assert_eq!(s.baseline("t", "d", "vibration_rms", period), Some(2.0));
        drop(s);
        let again =
            SqliteStore::open(&dir.path().join("edgepm.db"), super::super::Durability::Normal).expect("open");
        assert_eq!(again.baseline("t", "d", "vibration_rms", period), Some(2.0));
    }

    #[test]
    fn above_since_and_mean_follow_the_stored_windows() {
        let (_d, s) = store();
        let h: &dyn History = &s;
        for (ts, v) in [(1, 1.0), (2, 5.0), (3, 6.0)] {
            h.record_features("t", "d", ts, &features(v));
        }
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), Some(2));
        h.record_features("t", "d", 4, &features(7.0));
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), Some(2), "run continues (memo)");
        h.record_features("t", "d", 5, &features(1.0));
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), None, "run broken");
        h.record_features("t", "d", 6, &features(9.0));
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), Some(6));
        // A late window inside the run invalidates the memo and is taken into account.
        h.record_features("t", "d", 5, &features(8.0));
        assert_eq!(h.above_since("t", "d", "vibration_rms", 4.5), Some(2));
        assert_eq!(h.above_since("t", "d", "missing", 0.0), None);
        assert_eq!(h.mean("t", "d", "vibration_rms", 1, 3), Some(4.0));
        assert_eq!(h.mean("t", "other", "vibration_rms", 1, 3), None);
    }
}
