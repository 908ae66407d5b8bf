//! The cloud sinks against real servers started on free ports — moto server (Timestream, SNS,
//! SES through the real AWS SDK), InfluxDB 1.x, VictoriaMetrics (InfluxDB's v2 write path) — and
//! against small fakes that answer like AWS and InfluxDB 3 where the real thing cannot be run
//! here or does not check (moto accepts 101 records per call; the error codes of a write). What
//! arrived is read back from the server, never from the sink's own bookkeeping.

use crate::support::servers::{Server, http, influxdb1, influxql, moto, moto_data, q, victoria_metrics};
use crate::support::wait_until;
use edgepm::metrics::Metrics;
use edgepm::outbox::messages::{AlertMessage, CloudRecord, Record};
use edgepm::shutdown::{Shutdown, Stage};
use edgepm::sinks::aws::{AwsTarget, sdk_config};
use edgepm::sinks::influxdb::{InfluxApi, InfluxConfig, InfluxSink};
use edgepm::sinks::ses::{SesConfig, SesSink};
use edgepm::sinks::sns::{SnsConfig, SnsSink};
use edgepm::sinks::timestream::{TimestreamConfig, TimestreamSink};
use edgepm::sinks::{DeadLetters, DriverContext, Drivers, Settled, Sink};
use edgepm::store::{Durability, MessageKind, SqliteStore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REGION: &str = "us-east-1";

fn credentials() -> aws_sdk_sns::config::SharedCredentialsProvider {
    aws_sdk_sns::config::SharedCredentialsProvider::new(aws_sdk_sns::config::Credentials::new(
        "testing",
        "testing",
        None,
        None,
        "edgepm-tests",
    ))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// The SDK configuration of the tests' own clients (they create what the sinks write to).
fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    runtime().block_on(sdk_config(&AwsTarget {
        region: Some(REGION.into()),
        endpoint: Some(endpoint.into()),
        credentials: Some(credentials()),
    }))
}

/// The window record of device `device` at `i` seconds past T0.
fn record(device: &str, i: i64) -> Record {
    Record {
        tenant: "acme".into(),
        device: device.into(),
        site: Some("Plant A, hall 2".into()),
        time_ms: crate::support::T0 + i * 1000,
        features: vec![
            ("vibration_rms".into(), Some(1.0 + i as f64 / 100.0)),
            ("temperature_c".into(), Some(60.0)),
        ],
        probability: 0.5,
        is_failure: false,
        model: "bearing".into(),
        versions: ["aaaaaaaaaaaa".into(), "builtin".into(), "cccccccccccc".into()],
    }
}

/// A store in `root` with `messages` queued (kind, target, payload).
fn store_with(root: &Path, messages: &[(MessageKind, String, Vec<u8>)]) -> PathBuf {
    let db = root.join("edgepm.db");
    let store = SqliteStore::open(&db, Durability::Normal).expect("store");
    store.begin().expect("begin");
    for (kind, target, payload) in messages {
        store.enqueue(*kind, target, payload, edgepm::clock::now_ms()).expect("enqueue");
    }
    store.commit().expect("commit");
    db
}

fn records(devices: &[&str], per_device: i64) -> Vec<(MessageKind, String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..per_device {
        for d in devices {
            let r = record(d, i);
            out.push((
                MessageKind::Record,
                format!("edgepm/acme/{d}/prediction"),
                serde_json::to_vec(&CloudRecord::Window(r)).expect("json"),
            ));
        }
    }
    out
}

/// One sink's driver on the store at `db`, as the host runs it.
struct Driven {
    drivers: Drivers,
    shutdown: Shutdown,
    settled: std::sync::mpsc::Receiver<Settled>,
    cursors: HashMap<&'static str, i64>,
    metrics: Metrics,
    dead_letters: PathBuf,
}

impl Driven {
    fn start(db: &Path, sink: impl Sink, start_after: i64) -> Driven {
        let shutdown = Shutdown::new();
        let metrics = Metrics::new();
        let (settled_tx, settled) = std::sync::mpsc::channel();
        let dead_letters = db.with_file_name("undeliverable.jsonl");
        let context = DriverContext {
            store: SqliteStore::open_reader(db).expect("reader"),
            metrics: metrics.telemetry.clone(),
            dead_letters: DeadLetters { path: dead_letters.clone() },
            settled: settled_tx,
            shutdown: shutdown.clone(),
            start_after,
        };
        let mut drivers = Drivers::new();
        drivers.spawn(sink, context).expect("driver");
        drivers.waker.wake();
        Driven { drivers, shutdown, settled, cursors: HashMap::new(), metrics, dead_letters }
    }

    fn cursor(&mut self, sink: &str) -> i64 {
        for s in self.settled.try_iter() {
            let c = self.cursors.entry(s.sink).or_default();
            *c = (*c).max(s.upto);
        }
        self.cursors.get(sink).copied().unwrap_or(0)
    }

    /// Waits until `sink` settled `n` messages.
    fn settles(&mut self, sink: &str, n: i64, within: Duration) {
        let done = wait_until(within, || self.cursor(sink) >= n);
        assert!(done.is_some(), "{sink} settled {} of {n} messages within {within:?}", self.cursor(sink));
    }

    fn dead_letters(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.dead_letters)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("dead letter"))
            .collect()
    }

    fn metric(&self, name: &str, sink: &str) -> f64 {
        crate::support::metric(&self.metrics.encode(), name, &[("sink", sink)])
    }

    fn stop(&mut self) {
        self.shutdown.advance(Stage::Sinks);
        self.drivers.join();
        self.shutdown.advance(Stage::Output);
    }
}

fn timestream_config(endpoint: &str) -> TimestreamConfig {
    TimestreamConfig {
        database: "edgepm".into(),
        table: "telemetry".into(),
        region: Some(REGION.into()),
        endpoint: Some(endpoint.into()),
        memory_store_hours: 24,
        magnetic_store_writes: true,
        batch_messages: 50,
        linger_ms: 200,
        readings: false,
    }
}

/// Timestream records as moto stored them, in the order they arrived.
fn moto_timestream_records(moto: &Server) -> Vec<serde_json::Value> {
    let data = moto_data(moto);
    let tables = data["timestreamwrite"]["TimestreamTable"].as_array().cloned().unwrap_or_default();
    let table = tables.iter().find(|t| t["db_name"] == "edgepm" && t["name"] == "telemetry");
    table.and_then(|t| t["records"].as_array().cloned()).unwrap_or_default()
}

#[test]
#[ignore = "needs moto server: run scripts/test.sh"]
fn timestream_records_written_by_the_sdk_are_what_moto_stores_with_the_outbox_id_as_version() {
    let root = tempfile::tempdir().expect("tempdir");
    let moto = moto();
    moto_resources(&moto);
    const PER_DEVICE: i64 = 40;
    let db = store_with(root.path(), &records(&["MTR-001", "MTR-002", "MTR-003"], PER_DEVICE));
    let n = 3 * PER_DEVICE;
    let sink = TimestreamSink::new(timestream_config(&moto.url()), Metrics::new().telemetry.clone())
        .with_credentials(credentials());
    let mut driven = Driven::start(&db, sink, 0);
    driven.settles("timestream", n, Duration::from_secs(60));

    let stored = moto_timestream_records(&moto);
    assert_eq!(stored.len() as i64, 2 * n, "a prediction and a features record per window");
    let first = &stored[0];
    assert_eq!(first["MeasureName"], "prediction");
    assert_eq!(first["MeasureValueType"], "MULTI");
    assert_eq!(first["TimeUnit"], "MILLISECONDS");
    assert_eq!(first["Version"], 1, "the outbox id");
    assert_eq!(first["Time"], crate::support::T0.to_string());
    let dims: Vec<(String, String)> = first["Dimensions"]
        .as_array()
        .expect("dimensions")
        .iter()
        .map(|d| {
            (d["Name"].as_str().unwrap_or_default().into(), d["Value"].as_str().unwrap_or_default().into())
        })
        .collect();
    assert_eq!(
        dims,
        vec![
            ("tenant".into(), "acme".into()),
            ("device".into(), "MTR-001".into()),
            ("site".into(), "Plant A, hall 2".into())
        ]
    );
    let measure = |r: &serde_json::Value, name: &str| {
        r["MeasureValues"]
            .as_array()
            .expect("measures")
            .iter()
            .find(|m| m["Name"] == name)
            .cloned()
            .expect(name)
    };
    assert_eq!(measure(first, "probability")["Value"], "0.5");
    assert_eq!(measure(first, "probability")["Type"], "DOUBLE");
    assert_eq!(measure(first, "model")["Value"], "bearing");
    assert_eq!(measure(&stored[1], "vibration_rms")["Value"], "1");
    // Per device, in time order (moto keeps arrival order).
    for device in ["MTR-001", "MTR-002", "MTR-003"] {
        let times: Vec<i64> = stored
            .iter()
            .filter(|r| r["MeasureName"] == "prediction" && r["Dimensions"][1]["Value"] == device)
            .map(|r| r["Time"].as_str().and_then(|t| t.parse().ok()).expect("time"))
            .collect();
        assert_eq!(times.len() as i64, PER_DEVICE);
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{device} in order");
    }
    assert!(driven.metric("edgepm_outbox_delivered_total", "timestream") >= n as f64);
    driven.stop();

    // A crash before the cursor was stored: everything is sent again with the same versions,
    // which Timestream takes as a no-op (moto keeps both copies; their versions are equal).
    let sink = TimestreamSink::new(timestream_config(&moto.url()), Metrics::new().telemetry.clone())
        .with_credentials(credentials());
    let mut again = Driven::start(&db, sink, 0);
    again.settles("timestream", n, Duration::from_secs(60));
    again.stop();
    let stored = moto_timestream_records(&moto);
    assert_eq!(stored.len() as i64, 4 * n);
    let version = |r: &serde_json::Value| {
        (
            r["Dimensions"].to_string(),
            r["Time"].to_string(),
            r["MeasureName"].to_string(),
            r["Version"].clone(),
        )
    };
    let mut seen: HashMap<(String, String, String), serde_json::Value> = HashMap::new();
    for r in &stored {
        let (d, t, m, v) = version(r);
        if let Some(prev) = seen.insert((d, t, m), v.clone()) {
            assert_eq!(prev, v, "a re-sent record carries the version it was first sent with");
        }
    }
}

/// A Timestream endpoint that answers like AWS: at most 100 records per call, a `RejectedRecords`
/// entry for every record of device `BAD`, one throttling answer to the first call.
#[derive(Default)]
struct FakeTimestream {
    calls: Vec<usize>,
    accepted: Vec<(String, String, String)>,
    throttled: bool,
}

fn fake_timestream() -> (u16, Arc<Mutex<FakeTimestream>>, tokio::runtime::Runtime) {
    use axum::http::{HeaderMap, StatusCode};
    let state: Arc<Mutex<FakeTimestream>> = Arc::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let s = state.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
        let s = s.clone();
        async move {
            let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            assert_eq!(target, "Timestream_20181101.WriteRecords", "only WriteRecords (no discovery with an endpoint)");
            let req: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let records = req["Records"].as_array().cloned().unwrap_or_default();
            let mut st = s.lock().expect("state");
            st.calls.push(records.len());
            let json = |status: u16, kind: &str, body: serde_json::Value| {
                let mut h = HeaderMap::new();
                h.insert("x-amzn-errortype", kind.parse().expect("header"));
                h.insert("content-type", "application/x-amz-json-1.0".parse().expect("header"));
                (StatusCode::from_u16(status).expect("status"), h, body.to_string())
            };
            if records.len() > 100 {
                return json(400, "ValidationException", serde_json::json!({"__type": "ValidationException", "Message": "too many records"}));
            }
            if !st.throttled {
                st.throttled = true;
                return json(429, "ThrottlingException", serde_json::json!({"__type": "ThrottlingException", "Message": "Rate exceeded"}));
            }
            let mut rejected = Vec::new();
            for (i, r) in records.iter().enumerate() {
                let device = r["Dimensions"].as_array().and_then(|d| d.iter().find(|d| d["Name"] == "device")).map(|d| d["Value"].to_string()).unwrap_or_default();
                if device.contains("BAD") {
                    rejected.push(serde_json::json!({"RecordIndex": i, "Reason": "The record timestamp is outside the time range of the data ingestion window."}));
                } else {
                    st.accepted.push((device, r["Time"].to_string(), r["MeasureName"].to_string()));
                }
            }
            if rejected.is_empty() {
                let n = records.len();
                json(200, "", serde_json::json!({"RecordsIngested": {"Total": n, "MemoryStore": n, "MagneticStore": 0}}))
            } else {
                json(419, "RejectedRecordsException", serde_json::json!({"__type": "RejectedRecordsException", "Message": "One or more records have been rejected.", "RejectedRecords": rejected}))
            }
        }
    });
    rt.spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (port, state, rt)
}

#[test]
#[ignore = "integration test: run scripts/test.sh"]
fn timestream_rejections_are_per_record_calls_hold_at_most_100_records_and_throttling_is_retried() {
    let root = tempfile::tempdir().expect("tempdir");
    let (port, fake, _rt) = fake_timestream();
    // 150 windows of three devices, one of which Timestream refuses.
    let db = store_with(root.path(), &records(&["MTR-001", "BAD-002", "MTR-003"], 50));
    let mut config = timestream_config(&format!("http://127.0.0.1:{port}"));
    config.linger_ms = 0;
    let sink = TimestreamSink::new(config, Metrics::new().telemetry.clone()).with_credentials(credentials());
    let mut driven = Driven::start(&db, sink, 0);
    driven.settles("timestream", 150, Duration::from_secs(60));
    let st = fake.lock().expect("state");
    assert!(st.calls.iter().all(|&n| n <= 100), "calls of at most 100 records: {:?}", st.calls);
    assert_eq!(st.accepted.len(), 2 * 100, "every record of the two good devices: {}", st.accepted.len());
    let dead = driven.dead_letters();
    assert_eq!(dead.len(), 50, "each window of the refused device, once");
    assert!(
        dead.iter().all(|d| d["sink"] == "timestream"
            && d["reason"].as_str().is_some_and(|r| r.contains("outside the time range"))),
        "{:?}",
        dead[0]
    );
    assert!(
        driven.metric("edgepm_outbox_retried_total", "timestream") >= 1.0,
        "the throttled call was retried"
    );
    drop(st);
    driven.stop();
}

#[test]
#[ignore = "needs moto server: run scripts/test.sh"]
fn alerts_reach_sns_with_filterable_attributes_and_ses_sends_the_rendered_e_mail() {
    let root = tempfile::tempdir().expect("tempdir");
    let moto = moto();
    let topic = moto_resources(&moto);
    let subject = "⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042";
    let alert = AlertMessage {
        alert_id: "acme/MTR-042/1743849000000/0".into(),
        tenant: "acme".into(),
        device: "MTR-042".into(),
        time_ms: crate::support::T0,
        severity: "critical".into(),
        subject: subject.into(),
        body: "Probabilidade de falha: 97,0 %".into(),
        probability: 0.97,
    };
    let outcome = edgepm::pipeline::WindowOutcome {
        tenant: "acme".into(),
        device: "MTR-042".into(),
        end_ms: crate::support::T0,
        features: Default::default(),
        score: edgepm::types::Score { probability: 0.97, model: "bearing".into(), contributions: vec![] },
        decision: edgepm::types::Decision { is_failure: true, alerts: vec![] },
        versions: Default::default(),
    };
    let rendered = edgepm::outbox::email::render(
        &outcome,
        0,
        &edgepm::types::Alert {
            severity: edgepm::types::Severity::Critical,
            subject: subject.into(),
            body: alert.body.clone(),
        },
        "edgepm <alerts@plant.example>",
        &["maint@plant.example".to_string()],
        crate::support::T0,
    );
    let db = store_with(
        root.path(),
        &[
            (MessageKind::Alert, alert.alert_id.clone(), serde_json::to_vec(&alert).expect("json")),
            (MessageKind::Email, rendered.file_name.clone(), rendered.message.clone().into_bytes()),
        ],
    );
    let sns = SnsSink::new(
        SnsConfig {
            region: Some(REGION.into()),
            endpoint: Some(moto.url()),
            topics: [("acme".to_string(), topic.clone())].into(),
            default_topic: None,
        },
        Metrics::new().telemetry.clone(),
    )
    .with_credentials(credentials());
    let ses = SesSink::new(
        SesConfig {
            from: "edgepm <alerts@plant.example>".into(),
            region: Some(REGION.into()),
            endpoint: Some(moto.url()),
            configuration_set: None,
        },
        Metrics::new().telemetry.clone(),
    )
    .with_credentials(credentials());
    let mut a = Driven::start(&db, sns, 0);
    let mut b = Driven::start(&db, ses, 0);
    a.settles("sns", 1, Duration::from_secs(30));
    b.settles("ses", 2, Duration::from_secs(30));
    a.stop();
    b.stop();
    assert!(a.dead_letters().is_empty() && b.dead_letters().is_empty(), "{:?}", a.dead_letters());

    let data = moto_data(&moto);
    let topics = data["sns"]["Topic"].as_array().cloned().unwrap_or_default();
    let sent = topics.iter().find(|t| t["arn"] == topic.as_str()).map(|t| t["sent_notifications"].clone());
    let sent = sent.and_then(|s| s.as_array().cloned()).expect("the topic's sent notifications");
    assert_eq!(sent.len(), 1, "{sent:?}");
    // moto keeps [message id, message, subject, attributes, group id]
    let n = &sent[0];
    let message: serde_json::Value =
        serde_json::from_str(n[1].as_str().expect("message")).expect("structured message");
    assert_eq!(message["email"].as_str().and_then(|m| m.lines().next()), Some(subject), "full subject first");
    assert!(message["sms"].as_str().is_some_and(|s| s.chars().count() <= 140));
    assert_eq!(n[2], "warning ALERTA DE FALHA IMINENTE -- Equipamento MTR-042");
    let attrs = &n[3];
    for (k, v) in [
        ("severity", "critical"),
        ("tenant", "acme"),
        ("device", "MTR-042"),
        ("alert_id", "acme/MTR-042/1743849000000/0"),
    ] {
        assert_eq!(attrs[k]["Value"], v, "attribute {k}: {attrs}");
    }

    let ses = data["ses"]["RawMessage"].as_array().cloned().expect("sent messages");
    assert_eq!(ses.len(), 1, "{ses:?}");
    let raw = ses[0]["raw_data"].as_str().expect("raw data");
    assert_eq!(
        raw.replace("\r\n", "\n"),
        rendered.message.replace("\r\n", "\n"),
        "SES sent the very e-mail the file holds"
    );
    assert!(ses[0]["destinations"].to_string().contains("maint@plant.example"), "{}", ses[0]);
}

fn influx_sink(url: &str, api: InfluxApi) -> InfluxSink {
    let mut c = InfluxConfig::new(url, api);
    c.database = Some("edgepm".into());
    c.org = Some("plant".into());
    c.bucket = Some("edgepm".into());
    c.linger_ms = 100;
    c.batch_messages = 100;
    InfluxSink::new(c).expect("sink")
}

#[test]
#[ignore = "needs influxdb: run scripts/test.sh"]
fn influxdb_1_points_read_back_with_influxql_and_a_resend_is_no_duplicate() {
    let root = tempfile::tempdir().expect("tempdir");
    let influx = influxdb1();
    let db = store_with(root.path(), &records(&["MTR-001", "MTR 002,b=c"], 150));
    let mut driven = Driven::start(&db, influx_sink(&influx.url(), InfluxApi::V1), 0);
    driven.settles("influxdb", 300, Duration::from_secs(60));
    driven.stop();
    let count = || influxql(&influx, "SELECT count(probability) FROM prediction GROUP BY device");
    let series = count();
    let per_device: HashMap<String, i64> = series
        .as_array()
        .expect("series")
        .iter()
        .map(|s| {
            (
                s["tags"]["device"].as_str().unwrap_or_default().to_string(),
                s["values"][0][1].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        per_device,
        HashMap::from([("MTR-001".into(), 150), ("MTR 002,b=c".into(), 150)]),
        "escaped tags read back"
    );
    let f = influxql(
        &influx,
        "SELECT vibration_rms, temperature_c, site FROM features WHERE device = 'MTR-001' ORDER BY time LIMIT 2",
    );
    let values = &f[0]["values"];
    assert_eq!(values[0][0], crate::support::T0, "time in ms");
    assert_eq!(values[1][1], 1.01);
    let site = influxql(&influx, "SHOW TAG VALUES FROM features WITH KEY = site");
    assert_eq!(site[0]["values"][0][1], "Plant A, hall 2");

    // Everything sent again (a crash before the cursor was stored): same series and time overwrite.
    let mut again = Driven::start(&db, influx_sink(&influx.url(), InfluxApi::V1), 0);
    again.settles("influxdb", 300, Duration::from_secs(60));
    again.stop();
    assert_eq!(count(), series, "no duplicates");
}

#[test]
#[ignore = "needs victoria-metrics: run scripts/test.sh"]
fn the_v2_write_path_is_read_back_from_victoria_metrics() {
    let root = tempfile::tempdir().expect("tempdir");
    let vm = victoria_metrics();
    let db = store_with(root.path(), &records(&["MTR-001", "MTR-002"], 20));
    let mut driven = Driven::start(&db, influx_sink(&vm.url(), InfluxApi::V2), 0);
    driven.settles("influxdb", 40, Duration::from_secs(60));
    driven.stop();
    let export = || {
        http("POST", vm.port, "/internal/force_flush", &[], b"");
        let path = format!("/api/v1/export?match[]={}", q("{__name__=\"prediction_probability\"}"));
        http("GET", vm.port, &path, &[], b"").1
    };
    let found = wait_until(Duration::from_secs(20), || export().lines().count() == 2);
    let text = export();
    assert!(found.is_some(), "two series (one per device) in VictoriaMetrics: {text}");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["metric"]["tenant"], "acme");
        assert_eq!(v["values"].as_array().map(Vec::len), Some(20), "{line}");
        assert_eq!(v["timestamps"][0], crate::support::T0);
    }
}

/// An InfluxDB 3 `write_lp` endpoint that checks what it gets with InfluxData's parser: 413 past
/// 4 KiB, a partial write (400) naming the lines of device `BAD`, one 429 with `Retry-After: 1`.
#[derive(Default)]
struct FakeInflux3 {
    points: Vec<String>,
    requests: Vec<usize>,
    throttled_at: Option<Instant>,
    retried_at: Option<Instant>,
}

fn fake_influx3() -> (u16, Arc<Mutex<FakeInflux3>>, tokio::runtime::Runtime) {
    use axum::http::{HeaderMap, StatusCode};
    use std::io::Read as _;
    let state: Arc<Mutex<FakeInflux3>> = Arc::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let s = state.clone();
    let app = axum::Router::new().route(
        "/api/v3/write_lp",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                assert_eq!(headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer t0k3n"));
                let mut text = String::new();
                if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
                    flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).expect("gzip");
                } else {
                    text = String::from_utf8(body.to_vec()).expect("utf-8");
                }
                let mut st = s.lock().expect("state");
                st.requests.push(text.len());
                let mut h = HeaderMap::new();
                if text.len() > 4096 {
                    return (StatusCode::PAYLOAD_TOO_LARGE, h, String::new());
                }
                if st.throttled_at.is_none() {
                    st.throttled_at = Some(Instant::now());
                    h.insert("retry-after", "1".parse().expect("header"));
                    return (StatusCode::TOO_MANY_REQUESTS, h, String::new());
                }
                st.retried_at.get_or_insert_with(Instant::now);
                let mut bad = Vec::new();
                for (n, line) in text.lines().enumerate() {
                    let parsed = influxdb_line_protocol::parse_lines(line).next().expect("a line").expect("valid line protocol");
                    let device = parsed.series.tag_set.iter().flatten().find(|(k, _)| k.as_str() == "device").map(|(_, v)| v.to_string());
                    if device.as_deref() == Some("BAD") {
                        bad.push(serde_json::json!({"original_line": line, "line_number": n + 1, "error_message": "schema conflict"}));
                    } else {
                        st.points.push(line.to_string());
                    }
                }
                if bad.is_empty() {
                    (StatusCode::NO_CONTENT, h, String::new())
                } else {
                    let body = serde_json::json!({"error": "partial write of line protocol occurred", "data": bad});
                    (StatusCode::BAD_REQUEST, h, body.to_string())
                }
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (port, state, rt)
}

#[test]
#[ignore = "integration test: run scripts/test.sh"]
fn influxdb_3_requests_are_split_rejected_points_dead_lettered_and_retry_after_honoured() {
    let root = tempfile::tempdir().expect("tempdir");
    let (port, fake, _rt) = fake_influx3();
    let db = store_with(root.path(), &records(&["MTR-001", "BAD"], 30));
    let mut c = InfluxConfig::new(&format!("http://127.0.0.1:{port}"), InfluxApi::V3);
    c.database = Some("edgepm".into());
    c.token_env = "EDGEPM_TEST_INFLUX3_TOKEN".into();
    c.linger_ms = 0;
    c.batch_messages = 60;
    // SAFETY: set once, before the sink reads it; no other test reads this variable.
    unsafe { std::env::set_var("EDGEPM_TEST_INFLUX3_TOKEN", "t0k3n") };
    let mut driven = Driven::start(&db, InfluxSink::new(c).expect("sink"), 0);
    driven.settles("influxdb", 60, Duration::from_secs(60));
    driven.stop();
    let st = fake.lock().expect("state");
    let waited = st.retried_at.zip(st.throttled_at).map(|(r, t)| r - t);
    assert!(waited.is_some_and(|w| w >= Duration::from_millis(900)), "Retry-After honoured: {waited:?}");
    assert!(
        st.requests.iter().any(|&n| n > 4096),
        "a request over the limit came back 413: {:?}",
        st.requests
    );
    let good: std::collections::HashSet<&String> = st.points.iter().collect();
    assert_eq!(good.len(), 60, "both points of every good window, each stored (a resent point overwrites)");
    let dead = driven.dead_letters();
    assert_eq!(dead.len(), 30, "each window of the refused device once");
    assert!(
        dead.iter().all(|d| d["reason"].as_str().is_some_and(|r| r.contains("schema conflict"))),
        "{:?}",
        dead[0]
    );
}

/// The four cloud sinks of `edgepm run` pointed at `moto` and `influx`.
fn cloud_sinks_toml(moto: &Server, influx: &Server, topic: &str) -> String {
    format!(
        "[sinks.timestream]\ndatabase = \"edgepm\"\ntable = \"telemetry\"\nregion = \"{REGION}\"\nendpoint = \"{m}\"\nlinger_ms = 200\n\
         [sinks.influxdb]\nurl = \"{i}\"\napi = \"v1\"\ndatabase = \"edgepm\"\nlinger_ms = 200\nreadings = true\n\
         [sinks.sns]\nregion = \"{REGION}\"\nendpoint = \"{m}\"\ntopics = {{ acme = \"{topic}\" }}\n\
         [sinks.ses]\nfrom = \"edgepm <alerts@plant.example>\"\nregion = \"{REGION}\"\nendpoint = \"{m}\"\n",
        m = moto.url(),
        i = influx.url(),
    )
}

/// Creates in moto what the sinks write to — database `edgepm` with table `telemetry` (magnetic-
/// store writes on, memory store 24 h), identity `alerts@plant.example`, topic `edgepm-acme` —
/// and returns the topic's ARN.
fn moto_resources(moto: &Server) -> String {
    let conf = sdk(&moto.url());
    runtime().block_on(async {
        use aws_sdk_timestreamwrite::types::{MagneticStoreWriteProperties, RetentionProperties};
        let ts = aws_sdk_timestreamwrite::Client::new(&conf);
        ts.create_database().database_name("edgepm").send().await.expect("database");
        let magnetic = MagneticStoreWriteProperties::builder()
            .enable_magnetic_store_writes(true)
            .build()
            .expect("props");
        let retention = RetentionProperties::builder()
            .memory_store_retention_period_in_hours(24)
            .magnetic_store_retention_period_in_days(365)
            .build()
            .expect("retention");
        ts.create_table()
            .database_name("edgepm")
            .table_name("telemetry")
            .magnetic_store_write_properties(magnetic)
            .retention_properties(retention)
            .send()
            .await
            .expect("table");
        aws_sdk_sesv2::Client::new(&conf)
            .create_email_identity()
            .email_identity("alerts@plant.example")
            .send()
            .await
            .expect("identity");
        let t =
            aws_sdk_sns::Client::new(&conf).create_topic().name("edgepm-acme").send().await.expect("topic");
        t.topic_arn().expect("arn").to_string()
    })
}

fn host_metric(host: &crate::support::broker::HostProcess, name: &str, sink: &str) -> f64 {
    let (_, text) = http("GET", host.http_addr().port(), "/metrics", &[], b"");
    crate::support::metric(&text, name, &[("sink", sink)])
}

#[test]
#[ignore = "needs mosquitto, moto server and influxdb: run scripts/test.sh"]
fn a_cloud_outage_and_a_kill_9_lose_nothing_duplicate_nothing_and_never_delay_mqtt() {
    use crate::support::broker::{HostProcess, Mosquitto, data_dir_with_tenant};
    use crate::telemetry::{TENANT_TOML, readings};
    let _timing = crate::support::shared();
    let broker = Mosquitto::start();
    let moto = moto();
    let influx = influxdb1();
    let topic = moto_resources(&moto);
    let root = tempfile::tempdir().expect("tempdir");
    let data = data_dir_with_tenant(root.path(), "acme", TENANT_TOML);
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let sinks = cloud_sinks_toml(&moto, &influx, &topic);
    let mut host = HostProcess::start_with_env(root.path(), &data, &broker.url(), &sinks, &env);
    let sub = broker.subscribe(&["edgepm/acme/+/prediction"]);
    let predictions = |host: &HostProcess| host.count("SELECT count(*) FROM predictions");
    let influx_count = || {
        let s = influxql(&influx, "SELECT count(probability) FROM prediction");
        s[0]["values"][0][1].as_i64().unwrap_or(0)
    };

    // Up: every window reaches InfluxDB and Timestream.
    broker.publish_lines("edgepm/acme/MTR-001/telemetry", &readings("MTR-001", false, 20, 1));
    let up = wait_until(Duration::from_secs(30), || predictions(&host) == 17 && influx_count() == 17);
    assert!(
        up.is_some(),
        "17 windows scored and written: store {}, influx {}; log:\n{}",
        predictions(&host),
        influx_count(),
        host.log_text()
    );

    // The uplink dies (both servers frozen: connections hang) for more than 30 s.
    moto.freeze();
    influx.freeze();
    let outage = Instant::now();
    broker.publish_lines("edgepm/acme/MTR-002/telemetry", &readings("MTR-002", false, 40, 2));
    broker.publish_lines("edgepm/acme/MTR-042/telemetry", &readings("MTR-042", true, 8, 3));
    let mqtt = sub.wait_for(Duration::from_secs(15), |m| m.len() >= 17 + 37 + 5);
    assert!(mqtt.len() >= 59, "MQTT predictions are not held back by the cloud sinks: {}", mqtt.len());
    let mqtt_done = outage.elapsed();
    let queued = wait_until(Duration::from_secs(20), || {
        host_metric(&host, "edgepm_outbox_queue", "influxdb") >= 42.0
            && host_metric(&host, "edgepm_outbox_oldest_seconds", "timestream") >= 2.0
    });
    assert!(
        queued.is_some(),
        "the queues rose: influxdb {}, timestream age {}",
        host_metric(&host, "edgepm_outbox_queue", "influxdb"),
        host_metric(&host, "edgepm_outbox_oldest_seconds", "timestream")
    );
    let alerts = host.count("SELECT count(*) FROM alerts");
    assert!(alerts >= 1, "the failing motor raised an alert");
    std::thread::sleep(Duration::from_secs(31).saturating_sub(outage.elapsed()));

    // The host is killed with a full outbox, the uplink comes back, the host restarts.
    host.kill9();
    moto.thaw();
    influx.thaw();
    host.restart();
    let total = predictions(&host);
    assert_eq!(total, 17 + 37 + 5);
    let all = wait_until(Duration::from_secs(90), || {
        influx_count() == total && {
            let records = moto_timestream_records(&moto);
            let mut seen = std::collections::HashSet::new();
            records
                .iter()
                .filter(|r| {
                    seen.insert((
                        r["Dimensions"].to_string(),
                        r["Time"].to_string(),
                        r["MeasureName"].to_string(),
                    ))
                })
                .count()
                == 2 * total as usize
        }
    });
    assert!(all.is_some(), "everything arrived after the outage: influx {} of {total}", influx_count());
    // Raw readings too (`readings = true` on InfluxDB only): one point per stored reading.
    let readings_stored = host.count("SELECT count(*) FROM readings");
    let raw = wait_until(Duration::from_secs(30), || {
        influxql(&influx, "SELECT count(temperature) FROM reading")[0]["values"][0][1].as_i64()
            == Some(readings_stored)
    });
    assert!(
        raw.is_some(),
        "{readings_stored} raw readings in InfluxDB: {}",
        influxql(&influx, "SELECT count(temperature) FROM reading")
    );
    assert!(
        moto_timestream_records(&moto).iter().all(|r| r["MeasureName"] != "reading"),
        "Timestream was not asked for raw readings"
    );
    // Per device, the first arrival of each window is in time order.
    let records = moto_timestream_records(&moto);
    for device in ["MTR-001", "MTR-002", "MTR-042"] {
        let mut seen = std::collections::HashSet::new();
        let times: Vec<i64> = records
            .iter()
            .filter(|r| r["MeasureName"] == "prediction" && r["Dimensions"][1]["Value"] == device)
            .filter_map(|r| r["Time"].as_str().and_then(|t| t.parse().ok()))
            .filter(|t| seen.insert(*t))
            .collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{device}: {times:?}");
    }
    let data = moto_data(&moto);
    let sent =
        data["sns"]["Topic"].as_array().and_then(|t| t.iter().find(|t| t["arn"] == topic.as_str()).cloned());
    let ids: std::collections::HashSet<String> = sent
        .and_then(|t| t["sent_notifications"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|n| n[3]["alert_id"]["Value"].to_string())
        .collect();
    assert_eq!(ids.len() as i64, alerts, "every alert reached SNS, recognisable by its id");
    let mails = data["ses"]["RawMessage"].as_array().cloned().unwrap_or_default();
    assert!(mails.len() as i64 >= alerts, "every alert e-mail went through SES: {}", mails.len());
    let drained = wait_until(Duration::from_secs(10), || {
        ["influxdb", "timestream", "sns", "ses"]
            .iter()
            .all(|s| host_metric(&host, "edgepm_outbox_queue", s) == 0.0)
    });
    assert!(drained.is_some(), "the queues fell back to 0");
    assert!(mqtt_done < Duration::from_secs(15), "{mqtt_done:?}");
    host.stop();
}

#[test]
#[ignore = "needs moto server and influxdb: run scripts/test.sh"]
fn validate_config_runs_each_cloud_sinks_health_check_and_names_what_failed() {
    let moto = moto();
    let influx = influxdb1();
    let topic = moto_resources(&moto);
    let conf = sdk(&moto.url());
    runtime().block_on(async {
        let ts = aws_sdk_timestreamwrite::Client::new(&conf);
        ts.create_table().database_name("edgepm").table_name("memory-only").send().await.expect("table");
    });
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir_all(data.join("plugins")).expect("plugins");
    let validate = |sinks: &str| {
        let config = root.path().join("edgepm.toml");
        std::fs::write(
            &config,
            format!("data_dir = {data:?}\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n{sinks}"),
        )
        .expect("config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgepm"))
            .args(["validate", "--config"])
            .arg(&config)
            .envs([
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ])
            .output()
            .expect("edgepm validate");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let good = cloud_sinks_toml(&moto, &influx, &topic);
    let (ok, text) = validate(&good);
    for sink in ["timestream", "influxdb", "sns"] {
        assert!(text.contains(&format!("ok    {sink}: ")), "{sink}: {text}");
    }
    // moto creates identities unverified and has no way to verify one: SES says so, and that
    // alone fails the check (on AWS, sending from it would be refused).
    assert!(text.contains("FAIL  ses: identity alerts@plant.example exists but is not verified"), "{text}");
    assert!(!ok, "{text}");
    assert!(text.contains("magnetic-store writes on, memory store 24 h"), "{text}");

    let bad = good
        .replace("table = \"telemetry\"", "table = \"memory-only\"")
        .replace(&topic, &format!("{topic}-gone"))
        .replace("database = \"edgepm\"\nlinger_ms", "database = \"nope\"\nlinger_ms")
        .replace("alerts@plant.example", "someone@else.example");
    let (ok, text) = validate(&bad);
    assert!(!ok, "{text}");
    assert!(text.contains("FAIL  timestream: table edgepm.memory-only: magnetic-store writes off"), "{text}");
    assert!(text.contains("FAIL  influxdb:") && text.contains("\"nope\""), "{text}");
    assert!(text.contains("FAIL  sns: topic") && text.contains("-gone"), "{text}");
    assert!(text.contains("FAIL  ses: no SES identity for someone@else.example"), "{text}");
}
