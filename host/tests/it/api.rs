//! `/api/v1` of a running host (`edgepm run`, mosquitto, real readings), every endpoint checked
//! against what the store holds, read with a connection of the test's own.

use crate::support::broker::{HostProcess, Mosquitto, data_dir_with_tenant};
use crate::support::servers::http;
use crate::support::wait_until;
use crate::telemetry::{TENANT_TOML, readings};
use serde_json::Value;
use std::time::Duration;

fn get(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http("GET", port, path, &[], b"");
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {status} {e}: {body}"));
    (status, value)
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn the_api_answers_every_endpoint_from_the_store_and_refuses_bad_parameters() {
    let _timing = crate::support::shared();
    let broker = Mosquitto::start();
    let root = tempfile::tempdir().expect("tempdir");
    let data = data_dir_with_tenant(root.path(), "acme", TENANT_TOML);
    let mut host = HostProcess::start(root.path(), &data, &broker.url(), "");
    let port = host.http_addr().port();
    // A motor with its asset record, failing (an alert); a healthy one without asset record.
    let mut motor = edgepm::sim::fleet("acme", 1, 0, 0.0, 1.0, 3).remove(0);
    motor.spec.device = "MTR-042".into();
    let (topic, asset) = motor.asset_message();
    broker.publish_lines(&topic, &[String::from_utf8(asset).expect("utf-8")]);
    broker.publish_lines("edgepm/acme/MTR-042/telemetry", &readings("MTR-042", true, 10, 2));
    broker.publish_lines("edgepm/acme/MTR-001/telemetry", &readings("MTR-001", false, 6, 1));
    // Windows of 4 every reading: 7 + 3 predictions, an alert per failing window (cool-down aside).
    let scored = wait_until(Duration::from_secs(30), || host.count("SELECT count(*) FROM predictions") == 10);
    assert!(scored.is_some(), "{}", host.log_text());
    let stored_alerts = host.count("SELECT count(*) FROM alerts WHERE device = 'MTR-042'");
    assert!(stored_alerts >= 1);

    let (status, v) = get(port, "/api/v1/devices");
    assert_eq!(status, 200, "{v}");
    let devices = v["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 2, "{v}");
    let m42 = devices.iter().find(|d| d["device"] == "MTR-042").expect("MTR-042");
    assert_eq!(m42["tenant"], "acme");
    assert_eq!(m42["asset"]["site"], motor.spec.asset.iter().find(|(k, _)| k == "site").expect("site").1);
    let newest: f64 = host
        .store()
        .query_row(
            "SELECT probability FROM predictions WHERE device = 'MTR-042' ORDER BY ts_ms DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("newest");
    // (JSON numbers read back within an ulp or two: serde_json parses without float_roundtrip.)
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(m42["latest"]["probability"].as_f64().is_some_and(|p| close(p, newest)), "{m42} vs {newest}");
    assert_eq!(m42["latest"]["is_failure"], true);
    assert!(m42["latest"]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{m42}");
    let (_, only_acme) = get(port, "/api/v1/devices?tenant=nobody");
    assert_eq!(only_acme["devices"].as_array().map(Vec::len), Some(0));

    let (status, one) = get(port, "/api/v1/devices/acme/MTR-001");
    assert_eq!((status, one["device"].as_str()), (200, Some("MTR-001")), "{one}");
    assert!(one["asset"].as_object().is_some_and(|a| a.is_empty()), "{one}");
    let (status, missing) = get(port, "/api/v1/devices/acme/NOPE");
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().is_some_and(|e| e.contains("NOPE")), "{missing}");

    // The whole curve, then downsampled to 2 points keeping the peak.
    let (status, s) = get(port, "/api/v1/devices/acme/MTR-042/predictions?from=0");
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["series"]["points"].as_array().map(Vec::len), Some(7), "{s}");
    assert_eq!(s["series"]["bucket_ms"], Value::Null);
    let peak: f64 = host
        .store()
        .query_row("SELECT max(probability) FROM predictions WHERE device = 'MTR-042'", [], |r| r.get(0))
        .expect("peak");
    let (_, d) = get(port, "/api/v1/devices/acme/MTR-042/predictions?from=0&max_points=2");
    let points = d["series"]["points"].as_array().expect("points");
    assert!(points.len() <= 2 && !points.is_empty(), "{d}");
    assert!(d["series"]["bucket_ms"].as_i64().is_some(), "{d}");
    let windows: u64 = points.iter().map(|p| p["windows"].as_u64().expect("windows")).sum();
    assert_eq!(windows, 7);
    let top = points.iter().map(|p| p["probability"].as_f64().expect("p")).fold(f64::MIN, f64::max);
    assert!(close(top, peak), "{top} vs {peak}");
    let (status, _) = get(port, "/api/v1/devices/acme/NOPE/predictions");
    assert_eq!(status, 404);

    let (status, a) = get(port, "/api/v1/alerts?device=MTR-042");
    assert_eq!(status, 200, "{a}");
    let alerts = a["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len() as i64, stored_alerts, "{a}");
    assert_eq!(alerts[0]["subject"], "⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042");
    assert!(alerts[0]["contributions"].is_array(), "the explanation rides along: {}", alerts[0]);
    let ts: Vec<i64> = alerts.iter().map(|x| x["ts_ms"].as_i64().expect("ts")).collect();
    assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first: {ts:?}");
    let (_, none) = get(port, "/api/v1/alerts?device=MTR-001");
    assert_eq!(none["alerts"].as_array().map(Vec::len), Some(0));
    let (_, limited) = get(port, "/api/v1/alerts?limit=1");
    assert_eq!(limited["alerts"].as_array().map(Vec::len), Some(1));

    let (status, deg) = get(port, "/api/v1/degradation?days=1&min_windows=1");
    assert_eq!(status, 200, "{deg}");
    assert!(deg["judged"].is_array() && deg["not_enough_data"].is_array(), "{deg}");
    let (status, t) = get(port, "/api/v1/tenants");
    assert_eq!(status, 200);
    assert_eq!(t["tenants"][0]["name"], "acme", "{t}");
    assert!(t["tenants"][0]["plugins"]["score"]["version"].as_str().is_some_and(|v| v.len() == 12), "{t}");

    // The weekly report: the weeks the data spans, newest first, and one as a PDF download.
    let (status, weeks) = get(port, "/api/v1/reports");
    assert_eq!(status, 200, "{weeks}");
    let newest: i64 =
        host.store().query_row("SELECT max(ts_ms) FROM predictions", [], |r| r.get(0)).expect("predictions");
    let week = edgepm::report::IsoWeek::containing(newest).to_string();
    assert_eq!(weeks["weeks"][0]["week"], week.as_str(), "{weeks}");
    let href = weeks["weeks"][0]["href"].as_str().expect("href").to_string();
    let (status, head, pdf) = crate::support::servers::http_bytes("GET", port, &href, &[], b"");
    assert_eq!(status, 200, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/pdf"), "{head}");
    assert!(
        head.contains(&format!("filename=\"edgepm-report-{}.pdf\"", week.to_ascii_lowercase())),
        "{head}"
    );
    assert!(pdf.starts_with(b"%PDF-") && pdf.len() > 10_000, "{} bytes", pdf.len());
    let file = root.path().join("downloaded.pdf");
    std::fs::write(&file, &pdf).expect("write");
    let text = std::process::Command::new("pdftotext")
        .arg(&file)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils)");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("week {week}")) && text.contains("MTR-042"), "{text}");
    let (status, v) = get(port, "/api/v1/reports/2025-W99");
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("no week 99")), "{v}");

    // Acknowledging an alert: stored (through the ingest loop), shown, refused a second time.
    let id = alerts[0]["id"].as_str().expect("id").to_string();
    assert_eq!(alerts[0]["acknowledged"], Value::Null);
    let ack = |body: &str| {
        let (status, text) = http("POST", port, &format!("/api/v1/alerts/{id}/ack"), &[], body.as_bytes());
        (status, serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    };
    let (status, acked) = ack(r#"{"by": "Ana (maintenance)", "note": "bearing ordered"}"#);
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["acknowledged"]["by"], "Ana (maintenance)");
    assert_eq!(acked["acknowledged"]["note"], "bearing ordered");
    let stored: (String, String) = host
        .store()
        .query_row("SELECT acked_by, note FROM alert_acks", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("the acknowledgement is in the store");
    assert_eq!(stored, ("Ana (maintenance)".into(), "bearing ordered".into()));
    let (status, again) = ack(r#"{"by": "Bruno"}"#);
    assert_eq!(status, 409, "{again}");
    assert!(again["error"].as_str().is_some_and(|e| e.contains("Ana")), "{again}");
    let (_, open) = get(port, "/api/v1/alerts?acknowledged=false&device=MTR-042");
    assert_eq!(open["alerts"].as_array().map(Vec::len), Some(alerts.len() - 1), "{open}");
    for (body, says) in [
        ("not json", "not JSON"),
        (r#"{"note": "who?"}"#, "by"),
        (r#"{"by": "x", "extra": 1}"#, "unknown field"),
        (r#"{"by": "x", "note": 5}"#, "note"),
    ] {
        let (status, v) = ack(body);
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains(says)), "{body}: {v}");
    }
    let (status, _) = http("POST", port, "/api/v1/alerts/acme/MTR-042/1/0/ack", &[], br#"{"by": "x"}"#);
    assert_eq!(status, 404);
    // It survives a restart of the host.
    host.stop();
    host.restart();
    let port = host.http_addr().port();
    let (status, one) = get(port, &format!("/api/v1/alerts/{id}"));
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["acknowledged"]["by"], "Ana (maintenance)", "{one}");
    assert!(one["acknowledged"]["at_ms"].as_i64().is_some(), "{one}");

    for (path, says) in [
        ("/api/v1/alerts?severity=bogus", "severity"),
        ("/api/v1/alerts?limit=0", "limit"),
        ("/api/v1/alerts?limit=ten", "limit"),
        ("/api/v1/alerts?sevrity=critical", "unknown parameter"),
        ("/api/v1/alerts?acknowledged=maybe", "acknowledged"),
        ("/api/v1/devices/acme/MTR-042/predictions?from=yesterday", "from"),
        ("/api/v1/devices/acme/MTR-042/predictions?from=10&to=5", "after"),
        ("/api/v1/devices/acme/MTR-042/predictions?max_points=0", "max_points"),
        ("/api/v1/degradation?days=0", "days"),
    ] {
        let (status, v) = get(port, path);
        assert_eq!(status, 400, "{path}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains(says)), "{path}: {v}");
    }
    host.stop();
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn with_a_token_the_api_refuses_requests_without_it_and_the_probes_stay_open() {
    let _timing = crate::support::shared();
    let broker = Mosquitto::start();
    let root = tempfile::tempdir().expect("tempdir");
    let mut host = HostProcess::start_with_token(root.path(), &broker.url(), TENANT_TOML, "tok-123");
    let port = host.http_addr().port();
    let (status, body) = http("GET", port, "/api/v1/devices", &[], b"");
    assert_eq!(status, 401, "{body}");
    let (status, _) = http("GET", port, "/api/v1/devices", &[("Authorization", "Bearer wrong")], b"");
    assert_eq!(status, 401);
    let (status, body) = http("GET", port, "/api/v1/devices", &[("Authorization", "Bearer tok-123")], b"");
    assert_eq!(status, 200, "{body}");
    let (status, _) = http("GET", port, "/healthz", &[], b"");
    assert_eq!(status, 200, "the probes need no token");
    assert!(host.log_text().contains("/api/v1 requires the bearer token"), "{}", host.log_text());
    host.stop();
}

/// `/api/v1/events`: a client connected before the readings sees their predictions and alert
/// arrive as server-sent events, and its stream ends when the host stops.
#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn new_predictions_and_alerts_arrive_as_server_sent_events() {
    let _timing = crate::support::shared();
    use std::io::{BufRead as _, Write as _};
    let broker = Mosquitto::start();
    let root = tempfile::tempdir().expect("tempdir");
    let data = data_dir_with_tenant(root.path(), "acme", TENANT_TOML);
    let mut host = HostProcess::start(root.path(), &data, &broker.url(), "");
    let port = host.http_addr().port();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(stream, "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        .expect("request");
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    while reader.read_line(&mut head).expect("head") > 2 && !head.ends_with("\r\n\r\n") {}
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    // Let the watcher take note of the (empty) store before anything is stored.
    std::thread::sleep(Duration::from_millis(600));
    broker.publish_lines("edgepm/acme/MTR-042/telemetry", &readings("MTR-042", true, 4, 2));
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut kind = String::new();
    let mut line = String::new();
    while !(events.iter().any(|(k, _)| k == "prediction") && events.iter().any(|(k, _)| k == "alert")) {
        line.clear();
        let n = reader.read_line(&mut line).unwrap_or_else(|e| panic!("no events ({e}): {events:?}"));
        assert!(n > 0, "the stream ended early: {events:?}");
        // Chunked transfer: size lines and blank lines come between the SSE lines.
        if let Some(k) = line.trim_end().strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(d) = line.trim_end().strip_prefix("data: ") {
            events.push((kind.clone(), serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"))));
        }
    }
    let prediction = &events.iter().find(|(k, _)| k == "prediction").expect("prediction").1;
    assert_eq!(prediction["device"], "MTR-042");
    assert_eq!(prediction["is_failure"], true);
    let stored: i64 = host.count("SELECT ts_ms FROM predictions");
    assert_eq!(prediction["ts_ms"].as_i64(), Some(stored));
    assert!(prediction["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{prediction}");
    let alert = &events.iter().find(|(k, _)| k == "alert").expect("alert").1;
    assert_eq!(alert["subject"], "⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042");
    assert!(alert["id"].as_str().is_some_and(|id| id.starts_with("acme/MTR-042/")), "{alert}");
    // The host stops cleanly with the stream open, and the stream ends.
    let started = std::time::Instant::now();
    host.stop();
    assert!(started.elapsed() < Duration::from_secs(10), "stopping took {:?}", started.elapsed());
    let mut rest = String::new();
    let ended = loop {
        rest.clear();
        match reader.read_line(&mut rest) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    assert!(ended, "the event stream ended with the host");
}
