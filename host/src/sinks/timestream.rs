//! Amazon Timestream for LiveAnalytics: each window's `record` (see `outbox::messages::Record`)
//! becomes multi-measure records in one table — `prediction` (probability, is_failure, model,
//! the three plugin versions) and `features` (every finite feature value; past 256 features,
//! `features_2`, `features_3`, ...) — with the dimensions `tenant`, `device` and, when the asset
//! registry has one, `site`; time = the window's end in milliseconds.
//!
//! - **Idempotent re-sends**: every record's `Version` is its outbox id. A record sent again
//!   after a crash has the same version and values, which Timestream accepts as a no-op; a
//!   `RejectedRecords` entry saying a higher version exists means it is already stored (counted
//!   as delivered).
//! - **Batching**: at most 100 records per `WriteRecords` (AWS's limit), a message's records
//!   never split; the driver waits up to `linger_ms` for a batch to fill.
//! - **Rejections per record**: AWS's `RejectedRecords` name the records it refused; those
//!   messages are dead-lettered with AWS's reason, the rest of the call is delivered. A
//!   `ValidationException` of a whole call is narrowed down by halving it.
//! - **Time limits**: Timestream refuses records older than the table's memory-store retention
//!   unless the table enables magnetic-store writes, and records more than 15 min in the future.
//!   A backlog after a long outage needs the magnetic store (the CloudFormation template enables
//!   it): with `magnetic_store_writes = false` such records are dead-lettered before they are
//!   sent, with that explanation, and so are records from a clock more than 15 min ahead.
//! - **Endpoint discovery** is on against AWS (Timestream requires it) and off with an
//!   `endpoint` override (an emulator, a VPC endpoint).

use super::aws::{AwsTarget, ClockSkew, classify, sdk_config};
use super::{Delivery, Outcome, Sink};
use crate::metrics::TelemetryMetrics;
use crate::outbox::messages::{CloudRecord, ReadingRecord, Record};
use crate::store::{MessageKind, OutboxItem};
use aws_sdk_sns::config::SharedCredentialsProvider;
use aws_sdk_timestreamwrite as ts;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use ts::operation::write_records::WriteRecordsError;
use ts::types::{Dimension, MeasureValue, MeasureValueType, TimeUnit};

/// `WriteRecords` takes at most this many records (AWS's limit).
pub const MAX_RECORDS: usize = 100;
/// Measures in one multi-measure record, at most (AWS's limit).
const MAX_MEASURES: usize = 256;
/// Timestream refuses records further in the future than this.
const MAX_FUTURE_MS: i64 = 15 * 60 * 1000;

/// `[sinks.timestream]` in `edgepm.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestreamConfig {
    pub database: String,
    pub table: String,
    /// Overrides the region of the default credential chain.
    #[serde(default)]
    pub region: Option<String>,
    /// An endpoint instead of AWS's discovered one (an emulator); turns discovery off.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The table's memory-store retention, hours (default 24).
    #[serde(default = "default_memory_store_hours")]
    pub memory_store_hours: u32,
    /// Whether the table accepts records older than the memory store (default true, as the
    /// CloudFormation template makes it).
    #[serde(default = "super::yes")]
    pub magnetic_store_writes: bool,
    /// Messages per `WriteRecords` call, at most (each is 2 records or more; default 50).
    #[serde(default = "default_batch")]
    pub batch_messages: usize,
    /// How long a batch that is not full waits for more messages (default 1,000 ms).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Also write every reading's scalar channels (measure `reading`; default false: windows only).
    #[serde(default)]
    pub readings: bool,
}

fn default_memory_store_hours() -> u32 {
    24
}
fn default_batch() -> usize {
    MAX_RECORDS / 2
}
fn default_linger_ms() -> u64 {
    1000
}

impl TimestreamConfig {
    /// Every problem of the table, or `Ok`.
    pub fn validate(&self) -> Result<(), String> {
        if self.database.is_empty() || self.table.is_empty() {
            return Err("[sinks.timestream] needs database and table".into());
        }
        if !(1..=MAX_RECORDS / 2).contains(&self.batch_messages) {
            return Err(format!("[sinks.timestream] batch_messages must be within 1..={}", MAX_RECORDS / 2));
        }
        Ok(())
    }
}

/// The Timestream sink.
pub struct TimestreamSink {
    shared: Arc<Shared>,
}

struct Shared {
    /// Credentials instead of the default chain's (see [`AwsTarget::credentials`]).
    credentials: Option<SharedCredentialsProvider>,
    config: TimestreamConfig,
    client: tokio::sync::OnceCell<ts::Client>,
    skew: ClockSkew,
}

impl TimestreamSink {
    pub fn new(config: TimestreamConfig, metrics: TelemetryMetrics) -> TimestreamSink {
        let skew = ClockSkew::new("timestream", metrics);
        TimestreamSink {
            shared: Arc::new(Shared {
                credentials: None,
                config,
                client: tokio::sync::OnceCell::new(),
                skew,
            }),
        }
    }

    /// Uses `credentials` instead of the default chain.
    pub fn with_credentials(self, credentials: SharedCredentialsProvider) -> TimestreamSink {
        let mut shared = Arc::into_inner(self.shared).expect("not delivering yet");
        shared.credentials = Some(credentials);
        TimestreamSink { shared: Arc::new(shared) }
    }
}

impl TimestreamSink {
    /// The health check of `edgepm validate --config` (see `Shared::check`).
    pub async fn check(&self) -> Result<String, String> {
        self.shared.check().await
    }
}

impl Sink for TimestreamSink {
    fn name(&self) -> &'static str {
        "timestream"
    }
    fn kind(&self) -> MessageKind {
        MessageKind::Record
    }
    fn batch_size(&self) -> usize {
        self.shared.config.batch_messages
    }
    fn linger(&self) -> Duration {
        Duration::from_millis(self.shared.config.linger_ms)
    }
    fn ordered(&self) -> bool {
        true
    }
    fn max_backoff(&self) -> Duration {
        super::CLOUD_MAX_BACKOFF
    }
    fn deliver(&mut self, batch: &[OutboxItem]) -> Delivery {
        let shared = self.shared.clone();
        let batch = batch.to_vec();
        Box::pin(async move { shared.deliver(&batch).await })
    }
}

impl Shared {
    /// The client, made at the first delivery (with endpoint discovery unless overridden).
    async fn client(&self) -> Result<ts::Client, String> {
        self.client
            .get_or_try_init(|| async {
                let target = AwsTarget {
                    region: self.config.region.clone(),
                    endpoint: self.config.endpoint.clone(),
                    credentials: self.credentials.clone(),
                };
                let sdk = sdk_config(&target).await;
                let conf = ts::config::Builder::from(&sdk).interceptor(self.skew.clone()).build();
                let client = ts::Client::from_conf(conf);
                if self.config.endpoint.is_some() {
                    return Ok(client);
                }
                let (client, reload) =
                    client.with_endpoint_discovery_enabled().await.map_err(|e| format!("endpoint discovery: {e}"))?;
                tokio::spawn(reload.reload_task());
                info!(database = %self.config.database, table = %self.config.table, "Timestream endpoint discovered");
                Ok(client)
            })
            .await
            .cloned()
    }

    /// `edgepm validate`: the client can be made (credentials, endpoint discovery) and the table
    /// exists; warns when its settings disagree with `memory_store_hours` and
    /// `magnetic_store_writes`.
    async fn check(&self) -> Result<String, String> {
        let client = self.client().await?;
        let table = client
            .describe_table()
            .database_name(&self.config.database)
            .table_name(&self.config.table)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "table {}.{}: {}",
                    self.config.database,
                    self.config.table,
                    aws_sdk_sns::error::DisplayErrorContext(&e)
                )
            })?;
        let t = table.table();
        let magnetic = t
            .and_then(|t| t.magnetic_store_write_properties())
            .is_some_and(|m| m.enable_magnetic_store_writes());
        let hours =
            t.and_then(|t| t.retention_properties()).map(|r| r.memory_store_retention_period_in_hours());
        let mut text = format!(
            "table {}.{}: magnetic-store writes {}, memory store {} h",
            self.config.database,
            self.config.table,
            if magnetic { "on" } else { "off" },
            hours.map_or("?".to_string(), |h| h.to_string())
        );
        if self.config.magnetic_store_writes && !magnetic {
            return Err(format!(
                "{text}: the table refuses records older than its memory store, so a backlog after an outage would be lost; enable magnetic-store writes (or set magnetic_store_writes = false)"
            ));
        }
        if hours.is_some_and(|h| h != i64::from(self.config.memory_store_hours)) {
            text.push_str(&format!(
                " (memory_store_hours = {} in edgepm.toml)",
                self.config.memory_store_hours
            ));
        }
        Ok(text)
    }

    async fn deliver(&self, batch: &[OutboxItem]) -> Vec<Outcome> {
        let now = crate::clock::now_ms();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        // The records of each message that can go, by message index.
        let mut sendable: Vec<(usize, Vec<ts::types::Record>)> = Vec::new();
        for (i, item) in batch.iter().enumerate() {
            let (time_ms, records) = match serde_json::from_slice::<CloudRecord>(&item.payload) {
                Err(e) => {
                    outcomes[i] = Some(Outcome::Permanent(format!("not a record: {e}")));
                    continue;
                }
                Ok(CloudRecord::Reading(_)) if !self.config.readings => {
                    outcomes[i] = Some(Outcome::Delivered); // for another sink: not wanted here
                    continue;
                }
                Ok(CloudRecord::Window(r)) => (r.time_ms, records(item.id, &r)),
                Ok(CloudRecord::Reading(r)) => (r.time_ms, reading_records(item.id, &r)),
            };
            match self.too_old_or_new(time_ms, now) {
                Some(why) => outcomes[i] = Some(Outcome::Permanent(why)),
                None => sendable.push((i, records)),
            }
        }
        if !sendable.is_empty() {
            match self.client().await {
                Err(e) => {
                    for (i, _) in &sendable {
                        outcomes[*i] = Some(Outcome::retry(format!("Timestream client: {e}")));
                    }
                }
                Ok(client) => {
                    // Calls of at most 100 records; a ValidationException halves the call.
                    let mut calls: Vec<Vec<(usize, Vec<ts::types::Record>)>> = chunk(sendable);
                    while let Some(call) = calls.pop() {
                        match self.write(&client, &call).await {
                            Written::Each(each)
                                if each.iter().all(|o| matches!(o, Outcome::Retry { .. })) =>
                            {
                                // Throttled or unreachable: the rest of the batch waits with it.
                                let rest = call.iter().chain(calls.iter().flatten());
                                for ((i, _), o) in rest.zip(std::iter::repeat(each[0].clone())) {
                                    outcomes[*i] = Some(o);
                                }
                                break;
                            }
                            Written::Each(each) => {
                                for ((i, _), o) in call.iter().zip(each) {
                                    outcomes[*i] = Some(o);
                                }
                            }
                            Written::Split if call.len() > 1 => {
                                let mut call = call;
                                let second = call.split_off(call.len() / 2);
                                calls.push(second);
                                calls.push(call);
                            }
                            Written::Split => unreachable!("a single message is never split"),
                        }
                    }
                }
            }
        }
        outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::retry("no outcome"))).collect()
    }

    /// Why Timestream would refuse the record for its time, if it would.
    fn too_old_or_new(&self, time_ms: i64, now: i64) -> Option<String> {
        if time_ms > now + MAX_FUTURE_MS {
            return Some(format!(
                "the record's time is {} s ahead of the gateway's clock: Timestream refuses more than 15 min in the future (the device's or the gateway's clock is off)",
                (time_ms - now) / 1000
            ));
        }
        let memory = i64::from(self.config.memory_store_hours) * 3_600_000;
        if !self.config.magnetic_store_writes && time_ms < now - memory {
            return Some(format!(
                "the record is older than the table's memory-store retention ({} h) and magnetic_store_writes is false: enable magnetic-store writes on the table (docs/operations.md, Timestream)",
                self.config.memory_store_hours
            ));
        }
        None
    }

    /// One `WriteRecords` call.
    async fn write(&self, client: &ts::Client, call: &[(usize, Vec<ts::types::Record>)]) -> Written {
        let records: Vec<ts::types::Record> = call.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
        let result = client
            .write_records()
            .database_name(&self.config.database)
            .table_name(&self.config.table)
            .set_records(Some(records))
            .send()
            .await;
        let e = match result {
            Ok(_) => return Written::Each(vec![Outcome::Delivered; call.len()]),
            Err(e) => e,
        };
        match e.as_service_error() {
            Some(WriteRecordsError::RejectedRecordsException(rejected)) => {
                // Record index → message index within this call.
                let owner: Vec<usize> =
                    call.iter().enumerate().flat_map(|(m, (_, r))| std::iter::repeat_n(m, r.len())).collect();
                let mut each = vec![Outcome::Delivered; call.len()];
                for r in rejected.rejected_records() {
                    let Some(&m) = owner.get(r.record_index().max(0) as usize) else { continue };
                    if r.existing_version().is_some() && r.reason().is_some_and(is_version_conflict) {
                        continue; // a newer (or this very) version is stored: delivered
                    }
                    let reason = r.reason().unwrap_or("rejected").to_string();
                    if reason.contains("memory store") || reason.contains("retention") {
                        warn!(
                            reason,
                            "Timestream refused a record for its age: enable magnetic-store writes on the table (docs/operations.md)"
                        );
                    }
                    each[m] = Outcome::Permanent(format!("Timestream rejected the record: {reason}"));
                }
                Written::Each(each)
            }
            Some(WriteRecordsError::ValidationException(v)) if call.len() > 1 => {
                tracing::debug!(error = %v, "Timestream refused a call; halving it to find the record");
                Written::Split
            }
            _ => Written::Each(vec![classify(&e); call.len()]),
        }
    }
}

/// What one call did: an outcome per message, or "split the call and try the halves".
enum Written {
    Each(Vec<Outcome>),
    Split,
}

fn is_version_conflict(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("version")
}

/// Groups messages into calls of at most [`MAX_RECORDS`] records, in order (the last call is
/// popped first by the caller: the groups are returned reversed).
fn chunk(sendable: Vec<(usize, Vec<ts::types::Record>)>) -> Vec<Vec<(usize, Vec<ts::types::Record>)>> {
    let mut calls: Vec<Vec<(usize, Vec<ts::types::Record>)>> = vec![Vec::new()];
    let mut records = 0;
    for message in sendable {
        if records + message.1.len() > MAX_RECORDS && !calls.last().is_some_and(Vec::is_empty) {
            calls.push(Vec::new());
            records = 0;
        }
        records += message.1.len();
        calls.last_mut().expect("one call at least").push(message);
    }
    calls.reverse();
    calls
}

/// The dimensions of a device's records.
fn dimensions(tenant: &str, device: &str, site: Option<&str>) -> Vec<Dimension> {
    let dim = |name: &str, value: &str| {
        Dimension::builder().name(name).value(value).build().expect("name and value set")
    };
    let mut out = vec![dim("tenant", tenant), dim("device", device)];
    if let Some(site) = site.filter(|s| !s.is_empty()) {
        out.push(dim("site", site));
    }
    out
}

fn measure(name: &str, value: String, kind: MeasureValueType) -> MeasureValue {
    MeasureValue::builder().name(name).value(value).r#type(kind).build().expect("every field set")
}

/// A multi-measure record.
fn multi(
    dimensions: &[Dimension],
    name: String,
    values: Vec<MeasureValue>,
    time_ms: i64,
    version: i64,
) -> ts::types::Record {
    ts::types::Record::builder()
        .set_dimensions(Some(dimensions.to_vec()))
        .measure_name(name)
        .measure_value_type(MeasureValueType::Multi)
        .set_measure_values(Some(values))
        .time(time_ms.to_string())
        .time_unit(TimeUnit::Milliseconds)
        .version(version)
        .build()
}

/// `values` as records `name`, `name_2`, ... of at most 256 measures each.
fn chunked(
    dimensions: &[Dimension],
    name: &str,
    values: &[MeasureValue],
    time_ms: i64,
    version: i64,
) -> Vec<ts::types::Record> {
    values
        .chunks(MAX_MEASURES)
        .enumerate()
        .map(|(n, chunk)| {
            let name = if n == 0 { name.to_string() } else { format!("{name}_{}", n + 1) };
            multi(dimensions, name, chunk.to_vec(), time_ms, version)
        })
        .collect()
}

/// The Timestream records of one reading: `reading` with its scalar channels.
pub fn reading_records(version: i64, r: &ReadingRecord) -> Vec<ts::types::Record> {
    let dims = dimensions(&r.tenant, &r.device, r.site.as_deref());
    let values: Vec<MeasureValue> =
        r.values.iter().map(|(n, v)| measure(n, v.to_string(), MeasureValueType::Double)).collect();
    chunked(&dims, "reading", &values, r.time_ms, version)
}

/// The Timestream records of one window: `prediction`, then `features` (in chunks of 256).
pub fn records(version: i64, r: &Record) -> Vec<ts::types::Record> {
    let dims = dimensions(&r.tenant, &r.device, r.site.as_deref());
    let record = |name: String, values: Vec<MeasureValue>| multi(&dims, name, values, r.time_ms, version);
    let [pre, score, policy] = &r.versions;
    let mut out = vec![record(
        "prediction".into(),
        vec![
            measure("probability", r.probability.to_string(), MeasureValueType::Double),
            measure("is_failure", r.is_failure.to_string(), MeasureValueType::Boolean),
            measure("model", r.model.clone(), MeasureValueType::Varchar),
            measure("preprocess_version", pre.clone(), MeasureValueType::Varchar),
            measure("score_version", score.clone(), MeasureValueType::Varchar),
            measure("policy_version", policy.clone(), MeasureValueType::Varchar),
        ]
        .into_iter()
        .filter(|m| !m.value().is_empty())
        .collect(),
    )];
    // Timestream has no NaN: a non-finite feature is left out of the record.
    let features: Vec<MeasureValue> = r
        .features
        .iter()
        .filter_map(|(name, v)| v.map(|v| measure(name, v.to_string(), MeasureValueType::Double)))
        .collect();
    out.extend(chunked(&dims, "features", &features, r.time_ms, version));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(features: usize) -> Record {
        Record {
            tenant: "acme".into(),
            device: "MTR-042".into(),
            site: Some("Plant A".into()),
            time_ms: 1_743_849_000_000,
            features: (0..features)
                .map(|i| (format!("f{i}"), if i == 1 { None } else { Some(i as f64) }))
                .collect(),
            probability: 0.97,
            is_failure: true,
            model: "bearing".into(),
            versions: ["aaaaaaaaaaaa".into(), "builtin".into(), "cccccccccccc".into()],
        }
    }

    #[test]
    fn a_window_becomes_a_prediction_and_features_records_with_the_outbox_id_as_version() {
        let rs = records(42, &record(3));
        assert_eq!(rs.len(), 2);
        let p = &rs[0];
        assert_eq!(p.measure_name(), Some("prediction"));
        assert_eq!(p.version(), Some(42));
        assert_eq!(p.time(), Some("1743849000000"));
        assert_eq!(p.time_unit(), Some(&TimeUnit::Milliseconds));
        let dims: Vec<(&str, &str)> = p.dimensions().iter().map(|d| (d.name(), d.value())).collect();
        assert_eq!(dims, vec![("tenant", "acme"), ("device", "MTR-042"), ("site", "Plant A")]);
        let values: Vec<(&str, &str)> = p.measure_values().iter().map(|m| (m.name(), m.value())).collect();
        assert_eq!(values[0], ("probability", "0.97"));
        assert_eq!(values[1], ("is_failure", "true"));
        let f: Vec<&str> = rs[1].measure_values().iter().map(|m| m.name()).collect();
        assert_eq!(f, vec!["f0", "f2"], "the non-finite feature is left out");
    }

    #[test]
    fn many_features_are_split_into_records_of_256_measures_and_calls_hold_at_most_100_records() {
        let rs = records(1, &record(600));
        let names: Vec<_> = rs.iter().map(|r| r.measure_name().unwrap_or_default().to_string()).collect();
        assert_eq!(names, vec!["prediction", "features", "features_2", "features_3"]);
        assert!(rs.iter().all(|r| r.measure_values().len() <= MAX_MEASURES));

        let messages: Vec<(usize, Vec<ts::types::Record>)> =
            (0..60).map(|i| (i, records(i as i64, &record(3)))).collect();
        let mut calls = chunk(messages);
        calls.reverse();
        let sizes: Vec<usize> = calls.iter().map(|c| c.iter().map(|(_, r)| r.len()).sum()).collect();
        assert_eq!(sizes, vec![100, 20]);
        let order: Vec<usize> = calls.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..60).collect::<Vec<_>>(), "messages keep their order");
    }

    #[test]
    fn records_too_far_ahead_or_too_old_for_the_memory_store_are_refused_with_the_reason() {
        let metrics = crate::metrics::Metrics::new().telemetry.clone();
        let config = |magnetic| TimestreamConfig {
            database: "d".into(),
            table: "t".into(),
            region: None,
            endpoint: None,
            memory_store_hours: 24,
            magnetic_store_writes: magnetic,
            batch_messages: 50,
            linger_ms: 0,
            readings: false,
        };
        let now = 1_743_849_000_000;
        let sink = TimestreamSink::new(config(false), metrics.clone());
        let ahead = now + 16 * 60 * 1000;
        assert!(sink.shared.too_old_or_new(ahead, now).is_some_and(|w| w.contains("15 min")));
        let old = now - 25 * 3_600_000;
        assert!(sink.shared.too_old_or_new(old, now).is_some_and(|w| w.contains("magnetic")));
        let sink = TimestreamSink::new(config(true), metrics);
        assert_eq!(sink.shared.too_old_or_new(old, now), None, "the magnetic store takes the backlog");
    }
}
