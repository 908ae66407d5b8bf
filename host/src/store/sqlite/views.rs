//! What the HTTP API (and, through it, the dashboard and the report) reads: devices with their
//! asset attributes and latest prediction, a device's predictions over a time range (downsampled
//! for long ranges), alerts with the explanation behind them.

use super::SqliteStore;
use super::history::parse_attributes;
use rusqlite::{OptionalExtension as _, params};
use serde::Serialize;

/// A device as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceView {
    pub tenant: String,
    pub device: String,
    /// Registry attributes (`model`, `install_date`, `site`, `lat`/`lon`, ...).
    pub asset: serde_json::Map<String, serde_json::Value>,
    /// When its last reading arrived (host clock).
    pub last_seen_ms: i64,
    /// The newest prediction, if any.
    pub latest: Option<PredictionPoint>,
    /// The explanation of the newest prediction: each feature's contribution to its score.
    pub contributions: serde_json::Value,
}

/// One point of a probability curve. Downsampled, it is the bucket's highest probability (a risk
/// curve must not hide a peak), `is_failure` if any window of the bucket was one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictionPoint {
    pub ts_ms: i64,
    pub probability: f64,
    pub is_failure: bool,
    /// Windows behind the point (1 unless downsampled).
    pub windows: u32,
}

/// A device's predictions over `[from_ms, to_ms]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictionSeries {
    pub from_ms: i64,
    pub to_ms: i64,
    /// Windows in the range.
    pub windows: u64,
    /// Width of a bucket when downsampled, `None` when every window is a point.
    pub bucket_ms: Option<i64>,
    pub points: Vec<PredictionPoint>,
}

/// A device over a period (the weekly report): its newest prediction there, its highest, how
/// many windows were scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevicePeriod {
    pub tenant: String,
    pub device: String,
    pub asset: serde_json::Map<String, serde_json::Value>,
    pub windows: u64,
    /// Windows the policy called a failure.
    pub failure_windows: u64,
    /// The highest probability of the period and when.
    pub peak: PredictionPoint,
    /// The newest prediction of the period.
    pub latest: PredictionPoint,
    /// The newest prediction's explanation.
    pub contributions: serde_json::Value,
}

/// Plugin and model versions that served a tenant over a period, with the windows they scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServedVersions {
    pub tenant: String,
    pub model: String,
    /// Preprocess, score and policy plugin versions.
    pub plugins: Vec<String>,
    pub windows: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// An alert with the prediction it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    /// `<tenant>/<device>/<ts_ms>/<idx>`: the alert's address in the API.
    pub id: String,
    pub tenant: String,
    pub device: String,
    pub ts_ms: i64,
    pub idx: i64,
    pub severity: String,
    pub subject: String,
    pub body: String,
    pub probability: f64,
    /// The explanation: the features' contributions to the score (TreeSHAP for tree models),
    /// as the prediction stored them.
    pub contributions: serde_json::Value,
    /// Who acknowledged it, when and with what note; `None` while it is open.
    pub acknowledged: Option<Acknowledgement>,
}

/// An alert's acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Acknowledgement {
    pub by: String,
    pub note: String,
    /// When (host clock).
    pub at_ms: i64,
}

/// Which alert: its tenant, device, window end and index among the window's alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertKey {
    pub tenant: String,
    pub device: String,
    pub ts_ms: i64,
    pub idx: i64,
}

/// What acknowledging an alert did.
#[derive(Debug, Clone, PartialEq)]
pub enum AckOutcome {
    Acknowledged,
    /// It was acknowledged before (an acknowledgement is a record: it is not replaced).
    AlreadyAcknowledged,
    NoSuchAlert,
}

/// Which alerts: every field narrows; newest first (unless `oldest_first`), at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub tenant: Option<String>,
    pub device: Option<String>,
    pub severity: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// `Some(true)`: acknowledged ones only; `Some(false)`: open ones only.
    pub acknowledged: Option<bool>,
    /// One index among a window's alerts (with `from_ms` = `to_ms`: one alert).
    pub idx: Option<i64>,
    pub limit: u32,
    /// Oldest first (the weekly report) instead of newest first.
    pub oldest_first: bool,
}

const DEVICES_SQL: &str = "
SELECT d.tenant, d.device, d.last_seen_ms, a.attributes,
       p.ts_ms, p.probability, p.is_failure, p.contributions
FROM devices d
LEFT JOIN assets a ON a.tenant = d.tenant AND a.device = d.device
LEFT JOIN predictions p ON p.rowid = (
    SELECT rowid FROM predictions q WHERE q.tenant = d.tenant AND q.device = d.device
    ORDER BY q.ts_ms DESC LIMIT 1)
WHERE (?1 IS NULL OR d.tenant = ?1) AND (?2 IS NULL OR d.device = ?2)
ORDER BY d.tenant, d.device";

impl SqliteStore {
    /// Every device the host has seen (or the one named), with its asset attributes and newest
    /// prediction.
    pub fn devices(&self, tenant: Option<&str>, device: Option<&str>) -> rusqlite::Result<Vec<DeviceView>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(DEVICES_SQL)?;
        let rows = stmt.query_map(params![tenant, device], |r| {
            let attributes: Option<String> = r.get(3)?;
            let asset = attributes.as_deref().map(parse_attributes).unwrap_or_default();
            let latest = match r.get::<_, Option<i64>>(4)? {
                Some(ts_ms) => {
                    Some(PredictionPoint { ts_ms, probability: r.get(5)?, is_failure: r.get(6)?, windows: 1 })
                }
                None => None,
            };
            let contributions: Option<String> = r.get(7)?;
            Ok(DeviceView {
                contributions: contributions
                    .and_then(|c| serde_json::from_str(&c).ok())
                    .unwrap_or(serde_json::Value::Array(Vec::new())),
                tenant: r.get(0)?,
                device: r.get(1)?,
                asset: asset.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect(),
                last_seen_ms: r.get(2)?,
                latest,
            })
        })?;
        rows.collect()
    }

    /// The predictions of a device over `[from_ms, to_ms]`: every window when there are at most
    /// `max_points`, else `max_points` equal time buckets (see [`PredictionPoint`]).
    pub fn prediction_series(
        &self,
        tenant: &str,
        device: &str,
        from_ms: i64,
        to_ms: i64,
        max_points: u32,
    ) -> rusqlite::Result<PredictionSeries> {
        let conn = self.conn();
        let windows: u64 = conn
            .prepare_cached(
                "SELECT count(*) FROM predictions WHERE tenant = ?1 AND device = ?2 AND ts_ms BETWEEN ?3 AND ?4",
            )?
            .query_row(params![tenant, device, from_ms, to_ms], |r| r.get(0))?;
        let max_points = max_points.max(1) as u64;
        let bucket_ms = (windows > max_points).then(|| ((to_ms - from_ms) / max_points as i64 + 1).max(1));
        let mut stmt = conn.prepare_cached(
            "SELECT max(ts_ms), max(probability), max(is_failure), count(*) FROM predictions
             WHERE tenant = ?1 AND device = ?2 AND ts_ms BETWEEN ?3 AND ?4
             GROUP BY (ts_ms - ?3) / ?5 ORDER BY 1",
        )?;
        // Without downsampling each window is a bucket of its own (width 1 ms: ts are unique).
        let width = bucket_ms.unwrap_or(1);
        let points = stmt
            .query_map(params![tenant, device, from_ms, to_ms, width], |r| {
                Ok(PredictionPoint {
                    ts_ms: r.get(0)?,
                    probability: r.get(1)?,
                    is_failure: r.get(2)?,
                    windows: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(PredictionSeries { from_ms, to_ms, windows, bucket_ms, points })
    }

    /// Alerts matching `filter`, newest first.
    pub fn alerts(&self, filter: &AlertFilter) -> rusqlite::Result<Vec<AlertView>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT a.tenant, a.device, a.ts_ms, a.idx, a.severity, a.subject, a.body, a.probability,
                    p.contributions, k.acked_by, k.note, k.acked_ms
             FROM alerts a
             LEFT JOIN predictions p ON p.tenant = a.tenant AND p.device = a.device AND p.ts_ms = a.ts_ms
             LEFT JOIN alert_acks k ON k.tenant = a.tenant AND k.device = a.device AND k.ts_ms = a.ts_ms
                                   AND k.idx = a.idx
             WHERE (?1 IS NULL OR a.tenant = ?1) AND (?2 IS NULL OR a.device = ?2)
               AND (?3 IS NULL OR a.severity = ?3) AND (?4 IS NULL OR a.ts_ms >= ?4)
               AND (?5 IS NULL OR a.ts_ms <= ?5)
               AND (?7 IS NULL OR (k.acked_ms IS NOT NULL) = ?7)
               AND (?8 IS NULL OR a.idx = ?8)
             ORDER BY CASE WHEN ?9 THEN a.ts_ms END, a.ts_ms DESC, a.tenant, a.device, a.idx LIMIT ?6",
        )?;
        let rows = stmt.query_map(
            params![
                filter.tenant,
                filter.device,
                filter.severity,
                filter.from_ms,
                filter.to_ms,
                filter.limit,
                filter.acknowledged,
                filter.idx,
                filter.oldest_first
            ],
            |r| {
                let contributions: Option<String> = r.get(8)?;
                let (tenant, device, ts_ms, idx): (String, String, i64, i64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                let acknowledged = match r.get::<_, Option<i64>>(11)? {
                    Some(at_ms) => Some(Acknowledgement { by: r.get(9)?, note: r.get(10)?, at_ms }),
                    None => None,
                };
                Ok(AlertView {
                    id: format!("{tenant}/{device}/{ts_ms}/{idx}"),
                    tenant,
                    device,
                    ts_ms,
                    idx,
                    severity: r.get(4)?,
                    subject: r.get(5)?,
                    body: r.get(6)?,
                    probability: r.get(7)?,
                    contributions: contributions
                        .and_then(|c| serde_json::from_str(&c).ok())
                        .unwrap_or(serde_json::Value::Null),
                    acknowledged,
                })
            },
        )?;
        rows.collect()
    }

    /// How many alerts `[from_ms, to_ms)` holds, and how many of them are acknowledged.
    pub fn alert_counts(&self, from_ms: i64, to_ms: i64) -> rusqlite::Result<(u64, u64)> {
        let conn = self.conn();
        conn.prepare_cached(
            "SELECT count(*), count(k.acked_ms) FROM alerts a
             LEFT JOIN alert_acks k ON k.tenant = a.tenant AND k.device = a.device AND k.ts_ms = a.ts_ms
                                   AND k.idx = a.idx
             WHERE a.ts_ms >= ?1 AND a.ts_ms < ?2",
        )?
        .query_row(params![from_ms, to_ms], |r| Ok((r.get(0)?, r.get(1)?)))
    }

    /// The alert `key`, if it exists.
    pub fn alert(&self, key: &AlertKey) -> rusqlite::Result<Option<AlertView>> {
        let filter = AlertFilter {
            tenant: Some(key.tenant.clone()),
            device: Some(key.device.clone()),
            from_ms: Some(key.ts_ms),
            to_ms: Some(key.ts_ms),
            idx: Some(key.idx),
            limit: 1,
            ..AlertFilter::default()
        };
        Ok(self.alerts(&filter)?.pop())
    }

    /// Records who acknowledged the alert `key`. Writes: the ingest loop (the store's only
    /// writer) calls it on its connection, between two batches.
    pub fn acknowledge_alert(
        &self,
        key: &AlertKey,
        by: &str,
        note: &str,
        now_ms: i64,
    ) -> rusqlite::Result<AckOutcome> {
        let conn = self.conn();
        let exists: Option<i64> = conn
            .prepare_cached(
                "SELECT 1 FROM alerts WHERE tenant = ?1 AND device = ?2 AND ts_ms = ?3 AND idx = ?4",
            )?
            .query_row(params![key.tenant, key.device, key.ts_ms, key.idx], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Ok(AckOutcome::NoSuchAlert);
        }
        let inserted = conn
            .prepare_cached(
                "INSERT INTO alert_acks (tenant, device, ts_ms, idx, acked_by, note, acked_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            )?
            .execute(params![key.tenant, key.device, key.ts_ms, key.idx, by, note, now_ms])?;
        Ok(if inserted == 1 { AckOutcome::Acknowledged } else { AckOutcome::AlreadyAcknowledged })
    }

    /// Predictions stored after row `after` (oldest first, at most `limit`), with their row ids:
    /// what the API's event stream sends. `after = None`: only the newest row id.
    pub fn predictions_after(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> rusqlite::Result<(i64, Vec<serde_json::Value>)> {
        let conn = self.conn();
        let newest: i64 =
            conn.query_row("SELECT coalesce(max(rowid), 0) FROM predictions", [], |r| r.get(0))?;
        let Some(after) = after else { return Ok((newest, Vec::new())) };
        let mut stmt = conn.prepare_cached(
            "SELECT rowid, tenant, device, ts_ms, probability, is_failure, model FROM predictions
             WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )?;
        let mut last = after;
        let rows = stmt
            .query_map(params![after, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    serde_json::json!({
                        "tenant": r.get::<_, String>(1)?,
                        "device": r.get::<_, String>(2)?,
                        "ts_ms": r.get::<_, i64>(3)?,
                        "probability": r.get::<_, f64>(4)?,
                        "is_failure": r.get::<_, bool>(5)?,
                        "model": r.get::<_, String>(6)?,
                    }),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let values = rows
            .into_iter()
            .map(|(id, v)| {
                last = id;
                v
            })
            .collect();
        Ok((last, values))
    }

    /// Alerts stored after row `after`, like [`SqliteStore::predictions_after`].
    pub fn alerts_after(&self, after: Option<i64>, limit: u32) -> rusqlite::Result<(i64, Vec<AlertView>)> {
        let (last, keys) = {
            let conn = self.conn();
            let newest: i64 =
                conn.query_row("SELECT coalesce(max(rowid), 0) FROM alerts", [], |r| r.get(0))?;
            let Some(after) = after else { return Ok((newest, Vec::new())) };
            let mut stmt = conn.prepare_cached(
                "SELECT rowid, tenant, device, ts_ms, idx FROM alerts WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )?;
            let keys = stmt
                .query_map(params![after, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        AlertKey { tenant: r.get(1)?, device: r.get(2)?, ts_ms: r.get(3)?, idx: r.get(4)? },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            (keys.last().map(|(id, _)| *id).unwrap_or(after), keys)
        };
        let mut alerts = Vec::with_capacity(keys.len());
        for (_, key) in &keys {
            if let Some(a) = self.alert(key)? {
                alerts.push(a);
            }
        }
        Ok((last, alerts))
    }

    /// The devices the store knows (every device whose readings were windowed).
    fn device_keys(&self) -> rusqlite::Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT tenant, device FROM devices ORDER BY tenant, device")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Every device with predictions in `[from_ms, to_ms)`, as [`DevicePeriod`]s. Each device is
    /// read through its own range of the `(tenant, device, ts_ms)` index: the cost is the
    /// period's windows, not the whole history.
    pub fn device_periods(&self, from_ms: i64, to_ms: i64) -> rusqlite::Result<Vec<DevicePeriod>> {
        let mut out = Vec::new();
        for (tenant, device) in self.device_keys()? {
            let conn = self.conn();
            let (windows, failure_windows, last): (u64, u64, Option<i64>) = conn
                .prepare_cached(
                    "SELECT count(*), coalesce(sum(is_failure), 0), max(ts_ms) FROM predictions
                     WHERE tenant = ?1 AND device = ?2 AND ts_ms >= ?3 AND ts_ms < ?4",
                )?
                .query_row(params![tenant, device, from_ms, to_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            let Some(last) = last else { continue };
            let peak = conn
                .prepare_cached(
                    "SELECT ts_ms, probability, is_failure FROM predictions
                     WHERE tenant = ?1 AND device = ?2 AND ts_ms >= ?3 AND ts_ms < ?4
                     ORDER BY probability DESC, ts_ms LIMIT 1",
                )?
                .query_row(params![tenant, device, from_ms, to_ms], |r| {
                    Ok(PredictionPoint {
                        ts_ms: r.get(0)?,
                        probability: r.get(1)?,
                        is_failure: r.get(2)?,
                        windows: 1,
                    })
                })?;
            let (latest, contributions) = conn
                .prepare_cached(
                    "SELECT probability, is_failure, contributions FROM predictions
                     WHERE tenant = ?1 AND device = ?2 AND ts_ms = ?3",
                )?
                .query_row(params![tenant, device, last], |r| {
                    let contributions: String = r.get(2)?;
                    Ok((
                        PredictionPoint {
                            ts_ms: last,
                            probability: r.get(0)?,
                            is_failure: r.get(1)?,
                            windows: 1,
                        },
                        serde_json::from_str(&contributions).unwrap_or(serde_json::Value::Array(Vec::new())),
                    ))
                })?;
            let attributes: Option<String> = conn
                .prepare_cached("SELECT attributes FROM assets WHERE tenant = ?1 AND device = ?2")?
                .query_row(params![tenant, device], |r| r.get(0))
                .optional()?;
            let asset = attributes.as_deref().map(parse_attributes).unwrap_or_default();
            drop(conn);
            out.push(DevicePeriod {
                asset: asset.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect(),
                tenant,
                device,
                windows,
                failure_windows,
                peak,
                latest,
                contributions,
            });
        }
        Ok(out)
    }

    /// The plugin and model versions that scored windows in `[from_ms, to_ms)`, per tenant,
    /// oldest first (read per device, like [`SqliteStore::device_periods`]).
    pub fn versions_served(&self, from_ms: i64, to_ms: i64) -> rusqlite::Result<Vec<ServedVersions>> {
        let mut out: Vec<ServedVersions> = Vec::new();
        for (tenant, device) in self.device_keys()? {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT model, versions, count(*), min(ts_ms), max(ts_ms) FROM predictions
                 WHERE tenant = ?1 AND device = ?2 AND ts_ms >= ?3 AND ts_ms < ?4 GROUP BY model, versions",
            )?;
            let rows = stmt
                .query_map(params![tenant, device, from_ms, to_ms], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<Vec<(String, String, u64, i64, i64)>>>()?;
            for (model, versions, windows, first_ms, last_ms) in rows {
                let plugins: Vec<String> = serde_json::from_str(&versions).unwrap_or_else(|_| vec![versions]);
                match out.iter_mut().find(|v| v.tenant == tenant && v.model == model && v.plugins == plugins)
                {
                    Some(v) => {
                        v.windows += windows;
                        v.first_ms = v.first_ms.min(first_ms);
                        v.last_ms = v.last_ms.max(last_ms);
                    }
                    None => out.push(ServedVersions {
                        tenant: tenant.clone(),
                        model,
                        plugins,
                        windows,
                        first_ms,
                        last_ms,
                    }),
                }
            }
        }
        out.sort_by(|a, b| (&a.tenant, a.first_ms).cmp(&(&b.tenant, b.first_ms)));
        Ok(out)
    }

    /// The oldest and newest prediction's window end, if any (per device through the index).
    pub fn prediction_span(&self) -> rusqlite::Result<Option<(i64, i64)>> {
        let mut span: Option<(i64, i64)> = None;
        for (tenant, device) in self.device_keys()? {
            let conn = self.conn();
            let (first, last): (Option<i64>, Option<i64>) = conn
                .prepare_cached(
                    "SELECT min(ts_ms), max(ts_ms) FROM predictions WHERE tenant = ?1 AND device = ?2",
                )?
                .query_row(params![tenant, device], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if let (Some(f), Some(l)) = (first, last) {
                span = Some(span.map_or((f, l), |(a, b)| (a.min(f), b.max(l))));
            }
        }
        Ok(span)
    }

    /// Whether the store knows the device.
    pub fn has_device(&self, tenant: &str, device: &str) -> rusqlite::Result<bool> {
        let conn = self.conn();
        let found: Option<i64> = conn
            .prepare_cached("SELECT 1 FROM devices WHERE tenant = ?1 AND device = ?2")?
            .query_row(params![tenant, device], |r| r.get(0))
            .optional()?;
        Ok(found.is_some())
    }
}
