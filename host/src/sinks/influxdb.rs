//! InfluxDB line protocol: each window's `record` becomes two points — `prediction`
//! (probability, is_failure, model, the three plugin versions) and `features` (every finite
//! feature) — tagged `tenant`, `device` and, when the asset registry has one, `site`, at the
//! window's end in milliseconds. The same series and time written again overwrite the point, so
//! a re-sent message after a crash is no duplicate.
//!
//! One sink, three APIs (`api`):
//! - `v1`: `POST /write?db=` — InfluxDB 1.x (user and password from the environment, optional);
//! - `v2`: `POST /api/v2/write?org=&bucket=` — InfluxDB 2.x, Timestream for InfluxDB 2 (token);
//! - `v3`: `POST /api/v3/write_lp?db=` — InfluxDB 3 Core/Enterprise, Timestream for InfluxDB 3
//!   (token).
//!
//! Requests are gzipped and cut by size. The answers: 2xx delivered; 413 splits the request;
//! 400/422 dead-letters the messages whose lines the error names (InfluxDB writes the rest of a
//! partial write) and sends the others again, or halves the request when it names none; 429 and
//! 503 wait for `Retry-After` (capped), other 5xx and network errors retry; 401/403/404 (token,
//! database) are retried every minute, the data kept, until someone fixes the configuration.

use super::aws::CONFIG_ERROR_RETRY;
use super::{Delivery, Outcome, Sink};
use crate::outbox::messages::{CloudRecord, ReadingRecord, Record};
use crate::store::{MessageKind, OutboxItem};
use influxdb_line_protocol::LineProtocolBuilder;
use serde::Deserialize;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// `[sinks.influxdb]` in `edgepm.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// The server, e.g. `https://<id>.timestream-influxdb.<region>.on.aws:8086`.
    pub url: String,
    /// `v1`, `v2` (default) or `v3`.
    #[serde(default)]
    pub api: InfluxApi,
    /// v1 and v3: the database.
    #[serde(default)]
    pub database: Option<String>,
    /// v2: organisation and bucket.
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    /// Environment variable holding the API token (v2, v3); default `INFLUXDB_TOKEN`. Tokens
    /// are never read from this file.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// v1: environment variables holding a user name and password, when the server wants them.
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// gzip request bodies (default true).
    #[serde(default = "super::yes")]
    pub gzip: bool,
    /// Messages per batch (default 500; two points each).
    #[serde(default = "default_batch")]
    pub batch_messages: usize,
    /// Largest request body before gzip, bytes (default 1 MiB): a batch is cut into several.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// How long a batch that is not full waits for more messages (default 1,000 ms).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Longest `Retry-After` honoured, seconds (default 300).
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after_secs: u64,
    /// Also write every reading's scalar channels (measurement `reading`; default false).
    #[serde(default)]
    pub readings: bool,
}

/// The write API an InfluxDB server speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    V1,
    #[default]
    V2,
    V3,
}

fn default_token_env() -> String {
    "INFLUXDB_TOKEN".into()
}
fn default_batch() -> usize {
    500
}
fn default_max_request_bytes() -> usize {
    1 << 20
}
fn default_linger_ms() -> u64 {
    1000
}
fn default_max_retry_after() -> u64 {
    300
}

impl InfluxConfig {
    /// A configuration with the defaults for `url` and `api`.
    pub fn new(url: &str, api: InfluxApi) -> InfluxConfig {
        InfluxConfig {
            url: url.into(),
            api,
            database: None,
            org: None,
            bucket: None,
            token_env: default_token_env(),
            username_env: None,
            password_env: None,
            gzip: true,
            batch_messages: default_batch(),
            max_request_bytes: default_max_request_bytes(),
            linger_ms: default_linger_ms(),
            max_retry_after_secs: default_max_retry_after(),
            readings: false,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let url =
            url::Url::parse(&self.url).map_err(|e| format!("[sinks.influxdb] url {:?}: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("[sinks.influxdb] url {:?} must be http:// or https://", self.url));
        }
        match self.api {
            InfluxApi::V1 | InfluxApi::V3 if self.database.is_none() => {
                Err("[sinks.influxdb] api v1 and v3 need database".into())
            }
            InfluxApi::V2 if self.org.is_none() || self.bucket.is_none() => {
                Err("[sinks.influxdb] api v2 needs org and bucket".into())
            }
            _ if self.batch_messages == 0 || self.max_request_bytes < 1024 => {
                Err("[sinks.influxdb] batch_messages must be ≥ 1 and max_request_bytes ≥ 1024".into())
            }
            _ => Ok(()),
        }
    }

    /// The write URL with its query.
    fn write_url(&self) -> Result<url::Url, String> {
        let base = url::Url::parse(&self.url).map_err(|e| e.to_string())?;
        let (path, query): (&str, Vec<(&str, String)>) = match self.api {
            InfluxApi::V1 => {
                ("write", vec![("db", self.database.clone().unwrap_or_default()), ("precision", "ms".into())])
            }
            InfluxApi::V2 => (
                "api/v2/write",
                vec![
                    ("org", self.org.clone().unwrap_or_default()),
                    ("bucket", self.bucket.clone().unwrap_or_default()),
                    ("precision", "ms".into()),
                ],
            ),
            InfluxApi::V3 => (
                "api/v3/write_lp",
                vec![("db", self.database.clone().unwrap_or_default()), ("precision", "millisecond".into())],
            ),
        };
        let mut url = base.join(path).map_err(|e| e.to_string())?;
        url.query_pairs_mut().extend_pairs(query);
        Ok(url)
    }
}

/// The InfluxDB sink.
pub struct InfluxSink {
    shared: Arc<Shared>,
}

struct Shared {
    config: InfluxConfig,
    http: reqwest::Client,
    url: url::Url,
}

impl InfluxSink {
    pub fn new(config: InfluxConfig) -> anyhow::Result<InfluxSink> {
        config.validate().map_err(anyhow::Error::msg)?;
        let url = config.write_url().map_err(anyhow::Error::msg)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config()?)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(InfluxSink { shared: Arc::new(Shared { config, http, url }) })
    }
}

impl InfluxSink {
    /// The health check of `edgepm validate --config`: the server answers and the database (v1,
    /// v3) or bucket (v2) exists, with the configured credentials.
    pub async fn check(&self) -> Result<String, String> {
        let c = &self.shared.config;
        let base = url::Url::parse(&c.url).map_err(|e| e.to_string())?;
        let (path, query): (&str, Vec<(&str, String)>) = match c.api {
            InfluxApi::V1 => ("query", vec![("q", "SHOW DATABASES".into())]),
            InfluxApi::V2 => (
                "api/v2/buckets",
                vec![
                    ("org", c.org.clone().unwrap_or_default()),
                    ("name", c.bucket.clone().unwrap_or_default()),
                ],
            ),
            InfluxApi::V3 => ("api/v3/configure/database", vec![("format", "json".into())]),
        };
        let mut url = base.join(path).map_err(|e| e.to_string())?;
        url.query_pairs_mut().extend_pairs(query);
        let response = self
            .shared
            .authorised(self.shared.http.get(url))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", c.url))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!(
                "{} answered {status}: {}",
                c.url,
                body.chars().take(300).collect::<String>()
            ));
        }
        let wanted = match c.api {
            InfluxApi::V2 => c.bucket.clone().unwrap_or_default(),
            _ => c.database.clone().unwrap_or_default(),
        };
        if body.contains(&format!("\"{wanted}\"")) {
            Ok(format!("{} ({:?}): {wanted} exists", c.url, c.api))
        } else {
            Err(format!("{} ({:?}): no database or bucket {wanted:?}", c.url, c.api))
        }
    }
}

/// TLS on rustls with ring and the system's root certificates.
fn tls_config() -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Sink for InfluxSink {
    fn name(&self) -> &'static str {
        "influxdb"
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

/// One message's lines, and its index in the batch.
struct Lines {
    index: usize,
    text: String,
}

impl Shared {
    async fn deliver(&self, batch: &[OutboxItem]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut messages = Vec::new();
        for (index, item) in batch.iter().enumerate() {
            match serde_json::from_slice::<CloudRecord>(&item.payload) {
                Ok(CloudRecord::Window(r)) => messages.push(Lines { index, text: lines(&r) }),
                Ok(CloudRecord::Reading(r)) if self.config.readings => {
                    messages.push(Lines { index, text: reading_lines(&r) })
                }
                Ok(CloudRecord::Reading(_)) => outcomes[index] = Some(Outcome::Delivered), // not wanted here
                Err(e) => outcomes[index] = Some(Outcome::Permanent(format!("not a record: {e}"))),
            }
        }
        // Requests of at most max_request_bytes, in order; a request may come back split.
        let mut requests: Vec<Vec<Lines>> = cut_by_size(messages, self.config.max_request_bytes);
        requests.reverse();
        while let Some(request) = requests.pop() {
            match self.write(&request).await {
                Written::All(outcome @ Outcome::Retry { .. }) => {
                    // Throttled or unreachable: the rest of the batch waits with it.
                    for m in request.iter().chain(requests.iter().flatten()) {
                        outcomes[m.index] = Some(outcome.clone());
                    }
                    break;
                }
                Written::All(outcome) => {
                    for m in &request {
                        outcomes[m.index] = Some(outcome.clone());
                    }
                }
                Written::Rejected { bad, reason } => {
                    let (rejected, rest): (Vec<Lines>, Vec<Lines>) =
                        request.into_iter().partition(|m| bad.iter().any(|b| m.text.contains(b.as_str())));
                    for m in &rejected {
                        outcomes[m.index] =
                            Some(Outcome::Permanent(format!("InfluxDB rejected the points: {reason}")));
                    }
                    if rejected.is_empty() {
                        // The error names no line of ours: halve the request until it is one message.
                        if rest.len() == 1 {
                            outcomes[rest[0].index] =
                                Some(Outcome::Permanent(format!("InfluxDB rejected the points: {reason}")));
                        } else {
                            let mut first = rest;
                            let second = first.split_off(first.len() / 2);
                            requests.push(second);
                            requests.push(first);
                        }
                    } else if !rest.is_empty() {
                        // Written already if the write was partial; the same points again overwrite.
                        requests.push(rest);
                    }
                }
                Written::TooLarge if request.len() > 1 => {
                    let mut first = request;
                    let second = first.split_off(first.len() / 2);
                    requests.push(second);
                    requests.push(first);
                }
                Written::TooLarge => {
                    outcomes[request[0].index] =
                        Some(Outcome::Permanent("InfluxDB refused the message as too large (413)".into()));
                }
            }
        }
        outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::retry("no outcome"))).collect()
    }

    /// The request with the credentials of the API (from the environment; none if unset).
    fn authorised(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.config.api {
            InfluxApi::V1 => {
                let env = |name: &Option<String>| name.as_ref().and_then(|n| std::env::var(n).ok());
                if let Some(user) = env(&self.config.username_env) {
                    req = req.basic_auth(user, env(&self.config.password_env));
                }
            }
            InfluxApi::V2 | InfluxApi::V3 => {
                if let Ok(token) = std::env::var(&self.config.token_env) {
                    let scheme = if self.config.api == InfluxApi::V2 { "Token" } else { "Bearer" };
                    req = req.header("Authorization", format!("{scheme} {token}"));
                }
            }
        }
        req
    }

    async fn write(&self, request: &[Lines]) -> Written {
        let body: String = request.iter().map(|m| m.text.as_str()).collect();
        if body.is_empty() {
            return Written::All(Outcome::Delivered);
        }
        let mut req = self.http.post(self.url.clone()).header("Content-Type", "text/plain; charset=utf-8");
        if self.config.gzip {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            let zipped = gz.write_all(body.as_bytes()).and_then(|()| gz.finish());
            match zipped {
                Ok(z) => req = req.header("Content-Encoding", "gzip").body(z),
                Err(e) => return Written::All(Outcome::retry(format!("gzip: {e}"))),
            }
        } else {
            req = req.body(body);
        }
        let response = match self.authorised(req).send().await {
            Ok(r) => r,
            Err(e) => return Written::All(Outcome::retry(format!("InfluxDB at {}: {e}", self.config.url))),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
            .map(|d| d.min(Duration::from_secs(self.config.max_retry_after_secs)));
        let text = response.text().await.unwrap_or_default();
        answer(status, &text, retry_after)
    }
}

/// What the server said of one request.
#[derive(Debug, PartialEq)]
enum Written {
    /// The same for every message of the request.
    All(Outcome),
    /// 400/422: the lines it names (or quotes) were refused; `bad` may be empty.
    Rejected { bad: Vec<String>, reason: String },
    /// 413.
    TooLarge,
}

/// The outcome of a write from the HTTP status and body.
fn answer(status: u16, body: &str, retry_after: Option<Duration>) -> Written {
    let body = body.trim();
    let short: String = body.chars().take(500).collect();
    match status {
        200..=299 => Written::All(Outcome::Delivered),
        413 => Written::TooLarge,
        400 | 422 => Written::Rejected { bad: rejected_lines(body), reason: short },
        429 | 503 => {
            Written::All(Outcome::Retry { reason: format!("InfluxDB {status}: {short}"), after: retry_after })
        }
        401 | 403 | 404 => Written::All(Outcome::Retry {
            reason: format!("InfluxDB {status} (token, database or bucket; kept and retried): {short}"),
            after: Some(CONFIG_ERROR_RETRY),
        }),
        _ => {
            Written::All(Outcome::Retry { reason: format!("InfluxDB {status}: {short}"), after: retry_after })
        }
    }
}

/// The lines an error body names: v3's `data[].original_line`; v1's and v2's
/// `unable to parse '<line>'`.
fn rejected_lines(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(data) = v.get("data").and_then(|d| d.as_array()) {
            out.extend(data.iter().filter_map(|d| d.get("original_line")?.as_str().map(str::to_string)));
        }
        for key in ["error", "message"] {
            if let Some(text) = v.get(key).and_then(|m| m.as_str()) {
                out.extend(quoted_after(text, "unable to parse '"));
            }
        }
    } else {
        out.extend(quoted_after(body, "unable to parse '"));
    }
    out.retain(|l| !l.trim().is_empty());
    out
}

/// Every `'...'` that follows `prefix` in `text` (up to the next `':`, how InfluxDB closes it).
fn quoted_after(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(prefix) {
        rest = &rest[start + prefix.len()..];
        let end = rest.find("': ").or_else(|| rest.rfind('\'')).unwrap_or(rest.len());
        out.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    out
}

/// `Retry-After`: seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v.trim()).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Groups messages into requests of at most `max` bytes (a message larger than `max` goes alone).
fn cut_by_size(messages: Vec<Lines>, max: usize) -> Vec<Vec<Lines>> {
    let mut out: Vec<Vec<Lines>> = Vec::new();
    let mut size = 0;
    for m in messages {
        if out.is_empty() || (size + m.text.len() > max && !out.last().is_some_and(Vec::is_empty)) {
            out.push(Vec::new());
            size = 0;
        }
        size += m.text.len();
        out.last_mut().expect("a request").push(m);
    }
    out
}

/// A tag or field key/value without the characters line protocol cannot carry at all.
fn clean(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The point of one reading: measurement `reading`, a field per scalar channel.
pub fn reading_lines(r: &ReadingRecord) -> String {
    let values: Vec<(String, f64)> =
        r.values.iter().map(|(n, v)| (clean(n), *v)).filter(|(n, _)| !n.is_empty()).collect();
    let Some(((name, value), rest)) = values.split_first() else { return String::new() };
    let b =
        LineProtocolBuilder::new().measurement("reading").tag("tenant", &r.tenant).tag("device", &r.device);
    let b = match r.site.as_deref().map(clean).filter(|s| !s.trim().is_empty()) {
        Some(site) => b.tag("site", &site),
        None => b,
    };
    let mut f = b.field(name, *value);
    for (name, value) in rest {
        f = f.field(name, *value);
    }
    String::from_utf8(f.timestamp(r.time_ms).close_line().build())
        .expect("line protocol of UTF-8 strings is UTF-8")
}

/// The line-protocol points of one window (escaped by `influxdb-line-protocol`'s builder).
pub fn lines(r: &Record) -> String {
    let tags = |b: LineProtocolBuilder<Vec<u8>, influxdb_line_protocol::builder::AfterMeasurement>| {
        let b = b.tag("tenant", &r.tenant).tag("device", &r.device);
        match r.site.as_deref().map(clean).filter(|s| !s.trim().is_empty()) {
            Some(site) => b.tag("site", &site),
            None => b,
        }
    };
    let [pre, score, policy] = &r.versions;
    let b = tags(LineProtocolBuilder::new().measurement("prediction"))
        .field("probability", r.probability)
        .field("is_failure", r.is_failure)
        .field("model", clean(&r.model).as_str())
        .field("preprocess_version", clean(pre).as_str())
        .field("score_version", clean(score).as_str())
        .field("policy_version", clean(policy).as_str())
        .timestamp(r.time_ms)
        .close_line();
    let finite: Vec<(String, f64)> = r
        .features
        .iter()
        .filter_map(|(n, v)| v.map(|v| (clean(n), v)))
        .filter(|(n, _)| !n.is_empty())
        .collect();
    let b = match finite.split_first() {
        Some(((name, value), rest)) => {
            let mut f = tags(b.measurement("features")).field(name, *value);
            for (name, value) in rest {
                f = f.field(name, *value);
            }
            f.timestamp(r.time_ms).close_line()
        }
        None => b,
    };
    String::from_utf8(b.build()).expect("line protocol of UTF-8 strings is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use influxdb_line_protocol::{FieldValue, parse_lines};

    fn record() -> Record {
        Record {
            tenant: "acme".into(),
            device: "MTR-042".into(),
            site: Some("Plant A, hall=2\nnorth".into()),
            time_ms: 1_743_849_000_000,
            features: vec![
                ("vibration_rms".into(), Some(1.25)),
                ("nan feature".into(), None),
                ("temp,\"c\"=x".into(), Some(-3.0)),
            ],
            probability: 0.97,
            is_failure: true,
            model: "bearing \"xgb\"".into(),
            versions: ["aaaaaaaaaaaa".into(), "builtin".into(), "c\\d".into()],
        }
    }

    #[test]
    fn points_are_escaped_so_that_a_line_protocol_parser_reads_back_every_value() {
        let text = lines(&record());
        let parsed: Vec<_> = parse_lines(&text).collect::<Result<_, _>>().expect("parses");
        assert_eq!(parsed.len(), 2);
        let p = &parsed[0];
        assert_eq!(p.series.measurement.as_str(), "prediction");
        let tags: Vec<(String, String)> =
            p.series.tag_set.iter().flatten().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(tags[2], ("site".into(), "Plant A, hall=2 north".into()));
        assert_eq!(p.timestamp, Some(1_743_849_000_000));
        fn field<'a>(l: &influxdb_line_protocol::ParsedLine<'a>, k: &str) -> Option<FieldValue<'a>> {
            l.field_set.iter().find(|(n, _)| n.as_str() == k).map(|(_, v)| v.clone())
        }
        assert_eq!(field(p, "probability"), Some(FieldValue::F64(0.97)));
        assert_eq!(field(p, "is_failure"), Some(FieldValue::Boolean(true)));
        assert!(matches!(field(p, "model"), Some(FieldValue::String(s)) if s.as_str() == "bearing \"xgb\""));
        let f = &parsed[1];
        assert_eq!(f.series.measurement.as_str(), "features");
        assert_eq!(f.field_set.len(), 2, "the NaN feature is left out");
        assert_eq!(field(f, "temp,\"c\"=x"), Some(FieldValue::F64(-3.0)));
    }

    #[test]
    fn a_reading_is_one_point_of_its_scalar_channels() {
        let r = ReadingRecord {
            tenant: "acme".into(),
            device: "MTR-042".into(),
            site: None,
            time_ms: 5,
            values: vec![("temperature_c".into(), 61.5), ("current_a".into(), 12.0)],
        };
        let text = reading_lines(&r);
        let parsed: Vec<_> = parse_lines(&text).collect::<Result<_, _>>().expect("parses");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].series.measurement.as_str(), "reading");
        assert_eq!(parsed[0].field_set.len(), 2);
        assert_eq!(parsed[0].timestamp, Some(5));
        assert_eq!(reading_lines(&ReadingRecord { values: vec![], ..r }), "", "nothing to write");
    }

    #[test]
    fn error_answers_map_to_outcomes_and_name_the_rejected_lines() {
        assert_eq!(answer(204, "", None), Written::All(Outcome::Delivered));
        assert_eq!(answer(413, "", None), Written::TooLarge);
        let v1 = r#"{"error":"partial write: unable to parse 'features,tenant=a x=': missing field value dropped=1"}"#;
        assert_eq!(rejected_lines(v1), vec!["features,tenant=a x=".to_string()]);
        let v3 = r#"{"error":"partial write of line protocol occurred","data":[{"original_line":"bad line","line_number":2,"error_message":"x"}]}"#;
        assert_eq!(rejected_lines(v3), vec!["bad line".to_string()]);
        let throttled = answer(429, "slow down", Some(Duration::from_secs(7)));
        assert_eq!(
            throttled,
            Written::All(Outcome::Retry {
                reason: "InfluxDB 429: slow down".into(),
                after: Some(Duration::from_secs(7))
            })
        );
        assert!(matches!(
            answer(401, "", None),
            Written::All(Outcome::Retry { after: Some(CONFIG_ERROR_RETRY), .. })
        ));
        assert!(matches!(answer(500, "", None), Written::All(Outcome::Retry { after: None, .. })));
        assert_eq!(parse_retry_after("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"), Some(Duration::ZERO));
    }

    #[test]
    fn write_urls_follow_each_api() {
        let mut c = InfluxConfig::new("http://127.0.0.1:8086/", InfluxApi::V1);
        c.database = Some("edge pm".into());
        assert_eq!(c.write_url().unwrap().as_str(), "http://127.0.0.1:8086/write?db=edge+pm&precision=ms");
        c.api = InfluxApi::V3;
        assert_eq!(
            c.write_url().unwrap().as_str(),
            "http://127.0.0.1:8086/api/v3/write_lp?db=edge+pm&precision=millisecond"
        );
        c.api = InfluxApi::V2;
        assert!(c.validate().is_err(), "v2 needs org and bucket");
        c.org = Some("plant".into());
        c.bucket = Some("edgepm".into());
        assert_eq!(
            c.write_url().unwrap().as_str(),
            "http://127.0.0.1:8086/api/v2/write?org=plant&bucket=edgepm&precision=ms"
        );
    }
}
