//! `edgepm replay`: rows of a CSV file fed as readings through a tenant's real pipeline —
//! window assembly, preprocess, score (model), policy — with one prediction written per window.
//! This is how a model is checked on history, and how a new plugin version is tried before it is
//! deployed.
//!
//! Each row is one reading of the device named in the device column; windows are cut as under
//! `edgepm run` (the preprocessor's window size, the tenant's `hop`, default 8). Numeric columns become
//! channels, named in snake case without units (`Air temperature [K]` → `air_temperature`);
//! text columns become asset attributes (`Type` → `Type`), as a registry would provide them.
//! Label columns (by default the AI4I ones and `label`) are dropped before anything else sees the
//! row, so they cannot influence a prediction. Rows are timestamped by the time column when there
//! is one (epoch ms or RFC 3339), else one second apart in file order.

use crate::pipeline::process_windows;
use crate::plugins::PluginHost;
use crate::types::Window;
use crate::types::{Reading, Samples};
use crate::windows::{DeviceWindows, Pushed};
use anyhow::Context as _;
use std::collections::HashMap;
use std::io::{Read, Write};

/// Columns never passed to the pipeline unless asked otherwise.
pub const DEFAULT_LABEL_COLUMNS: &[&str] = &["Machine failure", "TWF", "HDF", "PWF", "OSF", "RNF", "label"];

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub tenant: String,
    /// Column naming the device (default `Product ID`).
    pub device_column: String,
    /// Column identifying a row in the output (default `UDI`; the row number when absent).
    pub id_column: String,
    /// Column with the reading's time, if any.
    pub time_column: Option<String>,
    /// Columns dropped before the pipeline.
    pub label_columns: Vec<String>,
}

impl ReplayOptions {
    pub fn new(tenant: &str) -> ReplayOptions {
        ReplayOptions {
            tenant: tenant.to_string(),
            device_column: "Product ID".into(),
            id_column: "UDI".into(),
            time_column: None,
            label_columns: DEFAULT_LABEL_COLUMNS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Totals of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub rows: u64,
    pub windows: u64,
    pub failures: u64,
    pub errors: u64,
}

/// `Air temperature [K]` → `air_temperature`.
pub fn channel_name(column: &str) -> String {
    let base = column.split(['[', '(']).next().unwrap_or(column).trim();
    let mut out = String::new();
    for c in base.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// Replays `input` (CSV with a header) through `host`'s tenant and writes
/// `row_id,device,timestamp,probability,is_failure,model,alerts,top_feature` to `output`.
pub fn replay(
    host: &PluginHost,
    opts: &ReplayOptions,
    input: impl Read,
    output: impl Write,
) -> anyhow::Result<ReplaySummary> {
    let pipeline = host.tenant(&opts.tenant).with_context(|| {
        let shipped = crate::tenants::SHIPPED.iter().any(|t| t.name == opts.tenant);
        let hint = if shipped {
            format!(" (deploy the shipped one: edgepm tenant deploy {})", opts.tenant)
        } else {
            String::new()
        };
        format!("no tenant {:?} in the plugins folder{hint}", opts.tenant)
    })?;
    let size = pipeline.window_size.max(1) as usize;
    // The same window hop as `edgepm run` with a default configuration.
    let hop = pipeline.config.hop.unwrap_or(crate::windows::DEFAULT_HOP).max(1) as usize;
    drop(pipeline);
    let mut reader = csv::Reader::from_reader(input);
    let headers = reader.headers().context("reading the CSV header")?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let device_col = col(&opts.device_column)
        .with_context(|| format!("no device column {:?} (use --device-column)", opts.device_column))?;
    let id_col = col(&opts.id_column);
    let time_col = match &opts.time_column {
        Some(t) => Some(col(t).with_context(|| format!("no time column {t:?}"))?),
        None => None,
    };
    let skip: Vec<usize> = opts
        .label_columns
        .iter()
        .filter_map(|l| col(l))
        .chain([device_col])
        .chain(id_col)
        .chain(time_col)
        .collect();
    let names: Vec<String> = headers.iter().map(channel_name).collect();
    let mut out = csv::Writer::from_writer(output);
    out.write_record(["row_id", "device", "timestamp"].into_iter().chain(OUTCOME_COLUMNS))?;
    let mut windows: HashMap<String, DeviceWindows> = HashMap::new();
    let mut assets: HashMap<String, Vec<(String, String)>> = HashMap::new();
    // Row ids of each device's recent readings by time: the row that completes a window names
    // the prediction.
    let mut row_ids: HashMap<String, std::collections::BTreeMap<i64, String>> = HashMap::new();
    let mut summary = ReplaySummary::default();
    let mut ready = Vec::with_capacity(REPLAY_BATCH);
    const BASE_MS: i64 = 1_577_836_800_000; // 2020-01-01T00:00:00Z
    for (n, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("CSV row {}", n + 2))?;
        summary.rows += 1;
        let device = record.get(device_col).unwrap_or_default().trim().to_string();
        anyhow::ensure!(!device.is_empty(), "CSV row {}: empty device column", n + 2);
        let row_id = id_col.and_then(|c| record.get(c)).map_or_else(|| (n + 1).to_string(), str::to_string);
        let ts_ms = match time_col.and_then(|c| record.get(c)) {
            Some(t) => parse_time(t).with_context(|| format!("CSV row {}: time {t:?}", n + 2))?,
            None => BASE_MS + n as i64 * 1000,
        };
        let mut channels = Vec::new();
        let mut attributes = Vec::new();
        for (i, field) in record.iter().enumerate() {
            if skip.contains(&i) || field.trim().is_empty() {
                continue;
            }
            match field.trim().parse::<f32>() {
                Ok(v) if v.is_finite() => channels.push((names[i].clone(), Samples::Scalar(v))),
                Ok(_) => {}
                Err(_) => attributes.push((headers[i].to_string(), field.trim().to_string())),
            }
        }
        channels.sort_by(|a, b| a.0.cmp(&b.0));
        if !attributes.is_empty() {
            assets.insert(device.clone(), attributes);
        }
        let ids = row_ids.entry(device.clone()).or_default();
        ids.insert(ts_ms, row_id);
        while ids.len() > size + hop {
            ids.pop_first();
        }
        let reading = Reading {
            tenant: opts.tenant.clone(),
            device: device.clone(),
            ts_ms,
            seq: None,
            channels,
            described: Vec::new(),
        };
        let w = windows.entry(device.clone()).or_insert_with(|| DeviceWindows::new(size, hop));
        let Pushed::Window(mut window) = w.push(reading) else { continue };
        window.asset = assets.get(&device).cloned().unwrap_or_default();
        summary.windows += 1;
        let id = row_ids.get(&device).and_then(|ids| ids.get(&window.end_ms)).cloned().unwrap_or_default();
        ready.push((id, window));
        if ready.len() >= REPLAY_BATCH {
            score(host, std::mem::take(&mut ready), &mut out, &mut summary)?;
        }
    }
    score(host, ready, &mut out, &mut summary)?;
    out.flush()?;
    Ok(summary)
}

/// Totals of a recording's replay: when its windows were first called a failure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordingSummary {
    pub snapshots: u64,
    pub windows: u64,
    pub failures: u64,
    pub errors: u64,
    /// Seconds before the recording's end of the first window called a failure.
    pub first_failure_lead_s: Option<f64>,
    /// Windows called a failure in the first half of the recording (false alarms on a run to
    /// failure).
    pub first_half_failures: u64,
}

/// How a recording is replayed.
#[derive(Debug, Clone, Default)]
pub struct RecordingOptions {
    /// The axis read as `vibration` (default: the first); the others come as `vibration_<axis>`.
    pub axis: Option<String>,
    /// Asset attributes of the recorded machine besides the recording's own `fs_hz`, `rpm`,
    /// `unit` and `[asset]` (e.g. the bearing's geometry: `balls`, `ball_diameter_mm`, ...);
    /// these win.
    pub asset: Vec<(String, String)>,
    /// Run the preprocessor only and write its features instead of scores: the training data of
    /// a new model, computed by the very plugin that will serve it.
    pub features_only: bool,
}

/// Replays a recording of bursts ([`crate::recordings`]) through `host`'s `tenant`: snapshot `i`
/// becomes a reading at `t_s[i]` whose `vibration` channel is the burst of the chosen axis —
/// other axes as `vibration_<axis>` — with the recording's `fs_hz`, `rpm`, unit and asset record
/// as asset attributes. Windows are processed one at a time, in order, as a live host receiving the
/// snapshots would (each window's features are recorded before the next one's are computed:
/// baselines see every earlier window). Writes
/// `snapshot,device,timestamp,minutes_to_end,life,probability,is_failure,model,alerts,top_feature`,
/// or with `features_only` `snapshot,device,timestamp,minutes_to_end,life,<features...>`.
pub fn replay_recording(
    host: &PluginHost,
    tenant: &str,
    rec: &crate::recordings::Recording,
    opts: &RecordingOptions,
    output: impl Write,
) -> anyhow::Result<RecordingSummary> {
    let pipeline =
        host.tenant(tenant).with_context(|| format!("no tenant {tenant:?} in the plugins folder"))?;
    let size = pipeline.window_size.max(1) as usize;
    let hop = pipeline.config.hop.unwrap_or(crate::windows::DEFAULT_HOP).max(1) as usize;
    drop(pipeline);
    let main = match &opts.axis {
        Some(a) => rec.axes.iter().position(|x| &x.name == a).with_context(|| {
            let names: Vec<&str> = rec.axes.iter().map(|x| x.name.as_str()).collect();
            format!("{}: no axis {a:?} (it has {})", rec.name, names.join(", "))
        })?,
        None => 0,
    };
    let unit = match rec.axes[main].unit {
        bearing_features::spectrum::Unit::G => "g",
        bearing_features::spectrum::Unit::MetersPerSecond2 => "m/s2",
        bearing_features::spectrum::Unit::MillimetersPerSecond => "mm/s",
    };
    let mut asset = vec![("fs_hz".to_string(), rec.fs_hz.to_string()), ("unit".to_string(), unit.into())];
    if let Some(rpm) = rec.rpm {
        asset.push(("rpm".to_string(), rpm.to_string()));
    }
    for (k, v) in rec.asset.iter().chain(&opts.asset) {
        asset.retain(|(key, _)| key != k);
        asset.push((k.clone(), v.clone()));
    }
    const BASE_MS: i64 = 1_577_836_800_000; // 2020-01-01T00:00:00Z
    let (first, last) = (rec.t_s[0], *rec.t_s.last().expect("a recording has snapshots"));
    let span = last - first;
    let mut out = csv::Writer::from_writer(output);
    let mut header_written = false;
    let mut windows = DeviceWindows::new(size, hop);
    let mut summary = RecordingSummary::default();
    for (i, &t) in rec.t_s.iter().enumerate() {
        summary.snapshots += 1;
        let ts_ms = BASE_MS + ((t - first) * 1000.0).round() as i64;
        let mut channels =
            vec![("vibration".to_string(), Samples::Burst(rec.axes[main].snapshots[i].clone()))];
        for (_, a) in rec.axes.iter().enumerate().filter(|(k, _)| *k != main) {
            channels.push((format!("vibration_{}", a.name), Samples::Burst(a.snapshots[i].clone())));
        }
        let reading = Reading {
            tenant: tenant.to_string(),
            device: rec.name.clone(),
            ts_ms,
            seq: None,
            channels,
            described: Vec::new(),
        };
        let Pushed::Window(mut window) = windows.push(reading) else { continue };
        window.asset = asset.clone();
        summary.windows += 1;
        let life = if span > 0.0 { (t - first) / span } else { 1.0 };
        let when = [
            i.to_string(),
            window.device.clone(),
            crate::clock::rfc3339(window.end_ms),
            format!("{:.2}", (last - t) / 60.0),
            format!("{life:.4}"),
        ];
        if opts.features_only {
            match crate::pipeline::preprocess(host, window) {
                Ok(f) => {
                    if !header_written {
                        let names = f.names.iter().map(String::as_str);
                        out.write_record(RECORDING_COLUMNS.into_iter().chain(names))?;
                        header_written = true;
                    }
                    out.write_record(when.iter().cloned().chain(f.values.iter().map(|v| v.to_string())))?;
                }
                Err(e) => {
                    summary.errors += 1;
                    tracing::warn!(snapshot = i, error = %e, "Window not preprocessed");
                }
            }
            continue;
        }
        if !header_written {
            out.write_record(RECORDING_COLUMNS.into_iter().chain(OUTCOME_COLUMNS))?;
            header_written = true;
        }
        for (_, outcome) in process_windows(host, vec![window], None) {
            match outcome {
                Ok(o) => {
                    if o.decision.is_failure {
                        summary.failures += 1;
                        summary.first_failure_lead_s.get_or_insert(last - t);
                        summary.first_half_failures += u64::from(life < 0.5);
                    }
                    out.write_record(when.iter().cloned().chain(outcome_columns(&o)))?;
                }
                Err(e) => {
                    summary.errors += 1;
                    tracing::warn!(snapshot = i, error = %e, "Window not scored");
                }
            }
        }
    }
    out.flush()?;
    Ok(summary)
}

/// What a recording's replay writes of each window before its outcome or features.
const RECORDING_COLUMNS: [&str; 5] = ["snapshot", "device", "timestamp", "minutes_to_end", "life"];

/// The outcome columns both replays write, [`outcome_columns`] their values.
const OUTCOME_COLUMNS: [&str; 5] = ["probability", "is_failure", "model", "alerts", "top_feature"];

/// probability, is_failure, model, alerts, top_feature: the columns both replays write.
fn outcome_columns(o: &crate::pipeline::WindowOutcome) -> [String; 5] {
    let top = crate::outbox::messages::top_contributions(&o.score.contributions, 1);
    [
        format!("{:.6}", o.score.probability),
        (o.decision.is_failure as u8).to_string(),
        o.score.model.clone(),
        o.decision.alerts.len().to_string(),
        top.first().map(|c| format!("{}:{:+.4}", c.feature, c.value)).unwrap_or_default(),
    ]
}

/// Windows scored together (one model call for the batch), as the live host does with the
/// windows a batch of messages completes.
const REPLAY_BATCH: usize = 256;

/// Runs `ready` (row id, window) through the tenant and writes one line per window.
fn score(
    host: &PluginHost,
    ready: Vec<(String, Window)>,
    out: &mut csv::Writer<impl Write>,
    summary: &mut ReplaySummary,
) -> anyhow::Result<()> {
    let (rows, windows): (Vec<String>, Vec<Window>) = ready.into_iter().unzip();
    for (row, (window, outcome)) in rows.into_iter().zip(process_windows(host, windows, None)) {
        match outcome {
            Ok(o) => {
                summary.failures += o.decision.is_failure as u64;
                let [p, f, m, n, top] = outcome_columns(&o);
                out.write_record([
                    row,
                    window.device,
                    crate::clock::rfc3339(window.end_ms),
                    p,
                    f,
                    m,
                    n,
                    top,
                ])?;
            }
            Err(e) => {
                summary.errors += 1;
                tracing::warn!(%row, device = %window.device, error = %e, "Window not scored");
            }
        }
    }
    Ok(())
}

fn parse_time(t: &str) -> anyhow::Result<i64> {
    let t = t.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    Ok(crate::clock::parse_rfc3339(t)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_become_channel_names() {
        assert_eq!(channel_name("Air temperature [K]"), "air_temperature");
        assert_eq!(channel_name("Rotational speed [rpm]"), "rotational_speed");
        assert_eq!(channel_name("Tool wear [min]"), "tool_wear");
        assert_eq!(channel_name("vibration"), "vibration");
    }
}
