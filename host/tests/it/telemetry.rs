//! The telemetry path end to end, through a real mosquitto and the `edgepm` binary: readings in
//! with mosquitto_pub, predictions, alerts and dead letters out (seen with mosquitto_sub and in
//! the files), the SQLite store checked directly, the process killed with SIGKILL.

use crate::support::broker::{HostProcess, Mosquitto, data_dir_with_tenant};
use crate::support::wait_until;
use edgepm::sim::{Degradation, Motor};
use serde_json::Value;
use std::time::Duration;

/// Windows of 4 readings, one per reading: a handful of messages gives predictions.
pub const TENANT_TOML: &str = "threshold = 0.8\nmodel = \"default\"\nhop = 1\n\
    [alerts]\nemail = [\"maint@plant.example\"]\n[settings]\nwindow_size = 4\nlanguage = \"pt\"\n";

fn now_ms() -> i64 {
    edgepm::clock::now_ms()
}

/// `n` canonical payloads of a motor, one per 100 ms ending a minute ago: a healthy one, or one
/// whose bearing has failed.
pub fn readings(device: &str, failing: bool, n: usize, seed: u64) -> Vec<String> {
    let mut spec = edgepm::sim::fleet("acme", 1, 0, 0.0, 1.0, seed).remove(0).spec;
    spec.device = device.to_string();
    spec.degradation = failing.then_some(Degradation { onset_s: 0.0, failure_s: 1.0 });
    let mut m = Motor::new(spec);
    let start = now_ms() - 60_000 - n as i64 * 100;
    (0..n)
        .map(|i| {
            let (_, p) = m.payload(start + i as i64 * 100, 10.0, 64);
            String::from_utf8(p).expect("utf-8")
        })
        .collect()
}

/// `edgepm run` serving tenant `acme` (reference plugins, `tenant_toml`, baseline model) from a
/// fresh mosquitto. Fields drop in order: the host before its broker.
struct Setup {
    host: HostProcess,
    broker: Mosquitto,
    data: std::path::PathBuf,
    root: tempfile::TempDir,
}

fn serve_acme(tenant_toml: &str) -> Setup {
    let broker = Mosquitto::start();
    let root = tempfile::tempdir().expect("tempdir");
    let data = data_dir_with_tenant(root.path(), "acme", tenant_toml);
    let host = HostProcess::start(root.path(), &data, &broker.url(), "");
    Setup { host, broker, data, root }
}

pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn a_published_reading_becomes_a_prediction_and_above_threshold_an_alert() {
    let _timing = crate::support::shared();
    let Setup { mut host, broker, data, root: _root } = serve_acme(TENANT_TOML);
    let sub = broker.subscribe(&["edgepm/acme/+/prediction", "edgepm/acme/+/alert"]);

    let healthy = readings("MTR-001", false, 4, 1);
    let failing = readings("MTR-042", true, 4, 2);
    broker.publish_lines("edgepm/acme/MTR-001/telemetry", &healthy);
    broker.publish_lines("edgepm/acme/MTR-042/telemetry", &failing);

    let msgs = sub.wait_for(Duration::from_secs(30), |m| {
        m.iter().filter(|(t, _)| t.ends_with("/prediction")).count() >= 2
            && m.iter().any(|(t, _)| t.ends_with("/alert"))
    });
    let find = |topic: &str| -> Vec<Value> {
        msgs.iter().filter(|(t, _)| t == topic).map(|(_, p)| json(p)).collect()
    };
    let ok = find("edgepm/acme/MTR-001/prediction");
    let bad = find("edgepm/acme/MTR-042/prediction");
    assert_eq!((ok.len(), bad.len()), (1, 1), "one prediction per window: {msgs:?}");
    let last_ts = json(&failing[3])["ts"].as_i64().expect("ts");
    assert_eq!(bad[0]["timestamp"], edgepm::clock::rfc3339(last_ts));
    assert_eq!(bad[0]["is_failure"], true);
    assert!(bad[0]["probability"].as_f64().expect("p") > 0.8, "{}", bad[0]);
    assert_eq!(ok[0]["is_failure"], false);
    assert!(ok[0]["probability"].as_f64().expect("p") < 0.5, "{}", ok[0]);
    for p in [&ok[0], &bad[0]] {
        assert_eq!(p["tenant"], "acme");
        assert!(p["versions"]["preprocess"].as_str().is_some_and(|v| v.len() == 12), "{p}");
        // The baseline runs on tract, which cannot explain a graph: the list is there, empty.
        assert!(p["contributions"].as_array().is_some(), "{p}");
        assert_eq!(p["window"]["readings"], 4);
    }
    let alerts = find("edgepm/acme/MTR-042/alert");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["subject"], "⚠️ ALERTA DE FALHA IMINENTE — Equipamento MTR-042");
    assert!(find("edgepm/acme/MTR-001/alert").is_empty(), "no alert below the threshold");

    // The e-mail file and the message log.
    let emails = data.join("logs/alert_emails");
    let found = wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(&emails).map(|d| d.filter_map(Result::ok).count()).unwrap_or(0) == 1
    });
    assert!(found.is_some(), "one alert e-mail file in {}", emails.display());
    let file = std::fs::read_dir(&emails).expect("dir").filter_map(Result::ok).next().expect("file").path();
    let email = std::fs::read_to_string(&file).expect("e-mail");
    assert!(email.contains("\r\nTo: maint@plant.example\r\n"), "{email}");
    // RFC 2047: charset and encoding are case-insensitive (lettre writes `=?utf-8?b?`).
    assert!(email.to_ascii_lowercase().contains("\r\nsubject: =?utf-8?b?"), "RFC 2047 subject: {email}");
    assert!(email.contains("X-Edgepm-Device: MTR-042"), "{email}");
    assert!(email.contains("Probabilidade de falha"), "{email}");
    let log = std::fs::read_to_string(data.join("logs/mqtt_messages.jsonl")).expect("message log");
    assert!(log.lines().any(|l| json(l)["topic"] == "edgepm/acme/MTR-042/alert"), "{log}");

    let store_counts = (
        host.count("SELECT count(*) FROM readings"),
        host.count("SELECT count(*) FROM predictions"),
        host.count("SELECT count(*) FROM alerts"),
    );
    assert_eq!(store_counts, (8, 2, 1));
    host.stop();
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn the_simulator_measures_publish_to_prediction_latency() {
    let _timing = crate::support::shared();
    let Setup { mut host, broker, data: _data, root: _root } = serve_acme(TENANT_TOML);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .args(["simulate", "--broker", &broker.url(), "--tenant", "acme", "--motors", "3", "--rate", "10"])
        .args(["--failing", "0", "--stagger", "0.3", "--duration", "3", "--measure-latency"])
        .output()
        .expect("edgepm simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report = json(stdout.lines().last().expect("a JSON line"));
    // Window 4, hop 1: every reading from the 4th on completes a window. Each prediction the
    // host made for this run's readings reached the probe and was matched to its reading.
    let stored = host.count("SELECT count(*) FROM predictions");
    let measured = report["predictions"].as_i64().expect("predictions");
    assert!(stored >= 60 && measured == stored, "{measured} measured, {stored} stored: {report}");
    let ms = |k: &str| report[k].as_f64().unwrap_or_else(|| panic!("{k}: {report}"));
    assert!(0.0 < ms("p50_ms") && ms("p50_ms") <= ms("p99_ms") && ms("p99_ms") <= ms("max_ms"), "{report}");
    assert!(ms("max_ms") < 3000.0, "a prediction is timed from its own reading: {report}");
    host.stop();
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn redelivered_readings_create_no_second_reading_window_or_prediction() {
    let _timing = crate::support::shared();
    let Setup { mut host, broker, data: _data, root: _root } = serve_acme(TENANT_TOML);
    let sub = broker.subscribe(&["edgepm/acme/+/prediction"]);
    let r = readings("M1", false, 5, 3);
    let topic = "edgepm/acme/M1/telemetry";
    // The first window's last reading twice, then the whole window again.
    let mut lines = r[..4].to_vec();
    lines.push(r[3].clone());
    lines.extend(r[..4].iter().cloned());
    broker.publish_lines(topic, &lines);
    let first = wait_until(Duration::from_secs(20), || host.count("SELECT count(*) FROM predictions") >= 1);
    assert!(first.is_some(), "the first window was scored");
    // After a restart the window state comes back from the store: the window again changes
    // nothing, and the fifth reading makes exactly the next window (4 readings, hop 1).
    host.stop();
    host.restart();
    let mut lines = r[..4].to_vec();
    lines.push(r[4].clone());
    broker.publish_lines(topic, &lines);
    let t = wait_until(Duration::from_secs(20), || {
        host.count("SELECT count(*) FROM readings") == 5
            && host.count("SELECT count(*) FROM predictions") == 2
    });
    assert!(t.is_some(), "readings {}", host.count("SELECT count(*) FROM readings"));
    // Messages are processed in order: once the fifth reading is scored, every duplicate before
    // it has been handled.
    assert_eq!(host.count("SELECT count(*) FROM features"), 2, "two windows");
    assert_eq!(host.count("SELECT count(*) FROM predictions"), 2);
    let published = sub.wait_for(Duration::from_secs(10), |m| m.len() >= 2);
    assert_eq!(published.len(), 2, "one prediction message per window: {published:?}");
    host.stop();
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn malformed_messages_are_dead_lettered_while_good_readings_keep_flowing() {
    let _timing = crate::support::shared();
    let Setup { mut host, broker, data: _data, root } = serve_acme(TENANT_TOML);
    let sub = broker.subscribe(&["edgepm/+/deadletter"]);
    let now = now_ms();
    let huge: Vec<String> = (0..20_000).map(|i| format!("{}", i % 7)).collect();
    let garbage: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let ok_topic = "edgepm/acme/M1/telemetry";
    let corpus: Vec<(&str, Vec<u8>, &str)> = vec![
        (ok_topic, format!("{{\"ts\": {now}, \"vibration\": [0.1, 0.2").into_bytes(), "malformed"),
        (ok_topic, format!("{{\"ts\": {now}, \"vibration\": \"loud\"}}").into_bytes(), "bad_channel"),
        (ok_topic, b"{\"ts\": true, \"vibration\": 1}".to_vec(), "bad_timestamp"),
        (ok_topic, format!("{{\"ts\": {now}, \"vibration\": [NaN]}}").into_bytes(), "malformed"),
        (ok_topic, format!("{{\"ts\": {now}, \"temperature\": -1e39}}").into_bytes(), "not_finite"),
        (
            ok_topic,
            format!("{{\"ts\": {now}, \"vibration\": [{}]}}", huge.join(",")).into_bytes(),
            "too_many_values",
        ),
        (
            ok_topic,
            format!("{{\"ts\": {}, \"vibration\": [{}]}}", now, huge[..16_385].join(",")).into_bytes(),
            "too_many_values",
        ),
        (
            ok_topic,
            format!("{{\"ts\": {}, \"current\": 1}}", now + 86_400_000).into_bytes(),
            "future_timestamp",
        ),
        (
            ok_topic,
            format!("{{\"ts\": {}, \"current\": 1}}", now - 30 * 86_400_000).into_bytes(),
            "stale_timestamp",
        ),
        (ok_topic, b"{\"ts\": \"yesterday\", \"current\": 1}".to_vec(), "bad_timestamp"),
        (
            ok_topic,
            format!("{{\"ts\": {now}, \"vibration\": {{\"fs_hz\": 25600, \"encoding\": \"f64le\", \"data\": \"AAAA\"}}}}")
                .into_bytes(),
            "bad_burst",
        ),
        (ok_topic, b"[1, 2, 3]".to_vec(), "malformed"),
        (
            ok_topic,
            format!("{{\"ts\": {now}, \"tenant\": \"other\", \"current\": 1}}").into_bytes(),
            "topic_mismatch",
        ),
        (
            "edgepm/ghost/M1/telemetry",
            format!("{{\"ts\": {now}, \"current\": 1}}").into_bytes(),
            "unknown_tenant",
        ),
        (ok_topic, garbage, "too_large"),
        (ok_topic, vec![0xff, 0xfe, 0x00, 0x7b], "malformed"),
    ];
    let good = readings("M1", false, corpus.len() + 1, 4);
    let file = root.path().join("payload");
    for (i, (topic, payload, _)) in corpus.iter().enumerate() {
        broker.publish_lines(ok_topic, &good[i..=i]);
        std::fs::write(&file, payload).expect("payload");
        broker.publish_file(topic, &file);
    }
    broker.publish_lines(ok_topic, &good[corpus.len()..]);

    let letters = sub.wait_for(Duration::from_secs(30), |m| m.len() >= corpus.len());
    assert_eq!(letters.len(), corpus.len(), "one dead letter per bad message: {letters:#?}");
    for ((topic, payload, reason), (dl_topic, letter)) in corpus.iter().zip(&letters) {
        let v = json(letter);
        assert_eq!(v["reason"], *reason, "{topic}: {v}");
        assert_eq!(v["payload_bytes"], payload.len(), "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        let tenant = topic.split('/').nth(1).expect("tenant");
        assert_eq!(dl_topic, &format!("edgepm/{tenant}/deadletter"));
    }
    let stored = wait_until(Duration::from_secs(20), || {
        host.count("SELECT count(*) FROM readings") == good.len() as i64
            && host.count("SELECT count(*) FROM predictions") == (good.len() - 3) as i64
    });
    assert!(
        stored.is_some(),
        "every good reading stored ({}) and scored ({})",
        host.count("SELECT count(*) FROM readings"),
        host.count("SELECT count(*) FROM predictions")
    );
    assert!(!host.log_text().contains("panicked"), "{}", host.log_text());

    // Operators see the same story on the HTTP endpoints.
    let addr = host.http_addr();
    let (status, ready) = crate::http::get(addr, "/readyz");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(json(&ready)["mqtt_connected"], true, "{ready}");
    let (_, metrics) = crate::http::get(addr, "/metrics");
    let rejected = |reason: &str| {
        crate::support::metric(&metrics, "edgepm_readings_rejected_total", &[("reason", reason)])
    };
    assert_eq!(
        [
            rejected("malformed"),
            rejected("too_large"),
            rejected("too_many_values"),
            rejected("unknown_tenant"),
            rejected("bad_burst")
        ],
        [4.0, 1.0, 2.0, 1.0, 1.0],
        "{metrics}"
    );
    let stored = crate::support::metric(&metrics, "edgepm_readings_total", &[("tenant", "acme")]);
    assert_eq!(stored, good.len() as f64);
    // The WAL restart pauses are exposed (none in a run this short: the WAL stays far below 128 MiB).
    assert!(metrics.lines().any(|l| l == "edgepm_store_wal_restart_seconds_count 0"), "{metrics}");
    host.stop();
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn a_host_killed_mid_stream_loses_no_acknowledged_reading() {
    let _timing = crate::support::shared();
    let toml = "threshold = 0.8\nmodel = \"default\"\nhop = 4\n[settings]\nwindow_size = 8\n";
    let Setup { mut host, broker, data: _data, root: _root } = serve_acme(toml);
    const DEVICES: usize = 10;
    const PER_DEVICE: usize = 300;
    let streams: Vec<Vec<String>> =
        (0..DEVICES).map(|d| readings(&format!("M{d}"), d == 0, PER_DEVICE, 10 + d as u64)).collect();
    let port = broker.port;
    // Publish in rounds so the stream is still running when the host is killed; mosquitto_pub
    // returns only when the broker acknowledged every message of a round.
    let publisher = std::thread::spawn(move || {
        let broker = crate::support::broker::Publisher { port };
        for round in 0..PER_DEVICE / 20 {
            for (d, s) in streams.iter().enumerate() {
                broker
                    .publish_lines(&format!("edgepm/acme/M{d}/telemetry"), &s[round * 20..(round + 1) * 20]);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let midway = wait_until(Duration::from_secs(60), || host.count("SELECT count(*) FROM readings") >= 800);
    assert!(midway.is_some(), "the host stored readings before the kill");
    host.kill9();
    let at_kill = host.count("SELECT count(*) FROM readings");
    std::thread::sleep(Duration::from_millis(500));
    host.restart();
    publisher.join().expect("publisher");
    let total = (DEVICES * PER_DEVICE) as i64;
    let done = wait_until(Duration::from_secs(120), || host.count("SELECT count(*) FROM readings") == total);
    assert!(
        done.is_some(),
        "every acknowledged reading stored: {} of {total} (killed at {at_kill})",
        host.count("SELECT count(*) FROM readings")
    );
    assert!(at_kill < total, "the kill happened mid-stream ({at_kill} of {total} stored)");
    // Windows of 8 every 4 readings: (300 − 8) / 4 + 1 = 74 per device, each scored once.
    let expected = (DEVICES * ((PER_DEVICE - 8) / 4 + 1)) as i64;
    wait_until(Duration::from_secs(30), || host.count("SELECT count(*) FROM predictions") == expected);
    assert_eq!(host.count("SELECT count(*) FROM predictions"), expected, "one prediction per window");
    assert_eq!(host.count("SELECT count(*) FROM features"), expected);
    host.stop();
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn a_host_killed_between_commit_and_acknowledgement_stores_the_redelivered_batch_once() {
    let _timing = crate::support::shared();
    let toml = "threshold = 0.8\nmodel = \"default\"\nhop = 4\n[settings]\nwindow_size = 8\n";
    let Setup { mut host, broker, data: _data, root: _root } = serve_acme(toml);
    // The host pauses 3 s between each commit and its acknowledgements: killed in that pause,
    // it leaves readings stored that the broker still holds as unacknowledged.
    host.kill9();
    host.env = vec![(edgepm::service::PAUSE_BEFORE_ACK_ENV.into(), "3000".into())];
    host.restart();
    const N: usize = 40;
    broker.publish_lines("edgepm/acme/M0/telemetry", &readings("M0", false, N, 3));
    let stored = wait_until(Duration::from_secs(30), || host.count("SELECT count(*) FROM readings") > 0);
    assert!(stored.is_some(), "the first batch was committed");
    host.kill9();
    let at_kill = host.count("SELECT count(*) FROM readings");
    assert!(host.log_text().contains("Fault injection"), "the pause was in effect");

    host.env.clear();
    host.restart();
    let all = wait_until(Duration::from_secs(30), || host.count("SELECT count(*) FROM readings") == N as i64);
    assert!(all.is_some(), "{} of {N} readings", host.count("SELECT count(*) FROM readings"));
    // Windows of 8 every 4 readings: (40 − 8) / 4 + 1 = 9, each scored once.
    wait_until(Duration::from_secs(30), || host.count("SELECT count(*) FROM predictions") == 9);
    assert_eq!(host.count("SELECT count(*) FROM predictions"), 9, "one prediction per window");
    assert_eq!(host.count("SELECT count(*) FROM features"), 9);
    // The broker sent the committed readings again (they were never acknowledged): each is
    // recognised as a duplicate, acknowledged, and not stored twice.
    let (_, metrics) = crate::http::get(host.http_addr(), "/metrics");
    let duplicates = crate::support::metric(&metrics, "edgepm_readings_duplicate_total", &[]);
    assert_eq!(duplicates, at_kill as f64, "{at_kill} readings were stored before the kill");
    host.stop();
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn the_host_connects_with_mutual_tls() {
    let _timing = crate::support::shared();
    let certs = crate::support::broker::Certificates::generate();
    let tls_port = crate::support::broker::free_port();
    let broker = Mosquitto::start_with(&certs.mosquitto_listener(tls_port));
    let root = tempfile::tempdir().expect("tempdir");
    let data = data_dir_with_tenant(root.path(), "acme", TENANT_TOML);
    let extra = format!(
        "[mqtt.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
        certs.ca, certs.client_cert, certs.client_key
    );
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    // The [mqtt] table is written by HostProcess; TLS files follow as its sub-table.
    let mut host = HostProcess::start(root.path(), &data, &url, &extra);
    broker.publish_lines("edgepm/acme/M1/telemetry", &readings("M1", false, 4, 5));
    let scored = wait_until(Duration::from_secs(20), || host.count("SELECT count(*) FROM predictions") == 1);
    assert!(scored.is_some(), "a reading over the plain listener reached the host over mTLS");
    host.stop();
}

/// The host as the Fargate task runs it (infrastructure/cloudformation-template.yaml): the whole
/// configuration in `EDGEPM_CONFIG`, the client certificate and key in environment variables
/// (ECS injects them from Secrets Manager), and one tenant's topics only (`[mqtt] tenants`): the
/// readings of another tenant on the same broker never reach it.
#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn a_host_configured_from_the_environment_serves_its_tenants_only() {
    let _timing = crate::support::shared();
    let certs = crate::support::broker::Certificates::generate();
    let tls_port = crate::support::broker::free_port();
    let broker = Mosquitto::start_with(&certs.mosquitto_listener(tls_port));
    let root = tempfile::tempdir().expect("tempdir");
    let data = data_dir_with_tenant(root.path(), "acme", TENANT_TOML);
    data_dir_with_tenant(root.path(), "beta", TENANT_TOML);
    let config = format!(
        "data_dir = {data:?}\nwatch_plugins = false\n\
         [mqtt]\nurl = \"mqtts://127.0.0.1:{tls_port}\"\nclient_id = \"edgepm-it\"\ntenants = [\"acme\"]\n\
         [mqtt.tls]\nca_file = {:?}\ncert_env = \"EDGEPM_IT_CERT\"\nkey_env = \"EDGEPM_IT_KEY\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n",
        certs.ca
    );
    // Without the variables the host refuses to start, naming the one missing.
    let mut refused = std::process::Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .arg("run")
        .env("EDGEPM_CONFIG", &config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("edgepm run");
    let exited = wait_until(Duration::from_secs(30), || refused.try_wait().ok().flatten().is_some());
    let _ = refused.kill();
    let out = refused.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited.is_some() && !out.status.success(), "the host started without its key: {stderr}");
    assert!(stderr.contains("EDGEPM_IT_CERT is not set"), "{stderr}");
    // No file names the certificate or key: only the environment holds them.
    let pem = |p: &std::path::Path| std::fs::read_to_string(p).expect("pem");
    let (cert, key) = (pem(&certs.client_cert), pem(&certs.client_key));
    let mut host = HostProcess::start_from_env(
        root.path(),
        &data,
        &config,
        &[("EDGEPM_IT_CERT", &cert), ("EDGEPM_IT_KEY", &key)],
    );
    broker.publish_lines("edgepm/beta/B1/telemetry", &readings("B1", false, 4, 6));
    broker.publish_lines("edgepm/acme/M1/telemetry", &readings("M1", false, 4, 5));
    let scored = wait_until(Duration::from_secs(20), || {
        host.count("SELECT count(*) FROM predictions WHERE tenant = 'acme'") == 1
    });
    assert!(scored.is_some(), "acme's readings reached the host over mTLS; log:\n{}", host.log_text());
    // beta's were published first, on the same broker: a subscriber to them would have them.
    assert_eq!(host.count("SELECT count(*) FROM readings WHERE tenant = 'beta'"), 0);
    assert_eq!(host.count("SELECT count(*) FROM parked"), 0);
    host.stop();
}

/// `systemctl reload` (SIGHUP): a configuration that loads replaces the running one in the same
/// process — here `[mqtt] tenants` narrows from every tenant to acme, and the broker's persistent
/// session stops delivering beta's readings (the host unsubscribes from its old filters); one
/// that does not load is reported and the host goes on serving.
#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn sighup_reloads_the_configuration_and_a_broken_one_changes_nothing() {
    let _timing = crate::support::shared();
    let broker = Mosquitto::start();
    let root = tempfile::tempdir().expect("tempdir");
    let data = data_dir_with_tenant(root.path(), "acme", TENANT_TOML);
    data_dir_with_tenant(root.path(), "beta", TENANT_TOML);
    let host = HostProcess::start(root.path(), &data, &broker.url(), "");
    let stored =
        |tenant: &str| host.count(&format!("SELECT count(*) FROM readings WHERE tenant = '{tenant}'"));
    broker.publish_lines("edgepm/beta/B1/telemetry", &readings("B1", false, 4, 6));
    assert!(wait_until(Duration::from_secs(20), || stored("beta") == 4).is_some(), "beta served at first");

    let text = std::fs::read_to_string(&host.config).expect("config");
    let narrowed =
        text.replace("client_id = \"edgepm-it\"\n", "client_id = \"edgepm-it\"\ntenants = [\"acme\"]\n");
    assert_ne!(narrowed, text);
    std::fs::write(&host.config, narrowed).expect("config");
    host.signal(libc::SIGHUP);
    // The record of the session's filters is rewritten once the broker acknowledged the new
    // subscriptions and the unsubscriptions.
    let record = data.join("mqtt-subscriptions.json");
    let reloaded = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&record).is_ok_and(|r| r.contains("edgepm/acme/+/telemetry"))
    });
    let log = host.log_text();
    assert!(reloaded.is_some(), "reloaded; log:\n{log}");
    assert!(log.contains("starting again with the reloaded configuration"), "{log}");
    assert!(log.contains("Unsubscribing from a filter of an earlier configuration"), "{log}");
    broker.publish_lines("edgepm/beta/B1/telemetry", &readings("B1", false, 4, 7));
    broker.publish_lines("edgepm/acme/M1/telemetry", &readings("M1", false, 4, 5));
    assert!(
        wait_until(Duration::from_secs(20), || stored("acme") == 4).is_some(),
        "acme served after the reload"
    );
    assert_eq!(stored("beta"), 4, "beta's readings published after the reload reached the host");

    std::fs::write(&host.config, "data_dir = 1\n").expect("config");
    host.signal(libc::SIGHUP);
    let refused =
        wait_until(Duration::from_secs(10), || host.log_text().contains("the configuration does not load"));
    assert!(refused.is_some(), "a broken configuration is reported; log:\n{}", host.log_text());
    broker.publish_lines("edgepm/acme/M2/telemetry", &readings("M2", false, 4, 8));
    assert!(
        wait_until(Duration::from_secs(20), || stored("acme") == 8).is_some(),
        "the host kept serving; log:\n{}",
        host.log_text()
    );
    let mut host = host;
    host.stop();
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn mutual_tls_refuses_a_wrong_ca_a_wrong_host_name_and_no_client_certificate() {
    let _timing = crate::support::shared();
    let certs = crate::support::broker::Certificates::generate();
    let stranger = crate::support::broker::Certificates::generate();
    let (port, port_other_addr) = (crate::support::broker::free_port(), crate::support::broker::free_port());
    let listeners = format!(
        "{}{}",
        certs.mosquitto_listener(port),
        certs.mosquitto_listener_on("127.0.0.2", port_other_addr)
    );
    let _broker = Mosquitto::start_with(&listeners);
    let tls = |ca: &std::path::Path, client: bool| {
        let mut t = format!("[mqtt.tls]\nca_file = {ca:?}\n");
        if client {
            t += &format!("cert_file = {:?}\nkey_file = {:?}\n", certs.client_cert, certs.client_key);
        }
        t
    };
    let cases = [
        (
            "a CA that did not sign the broker's certificate",
            format!("mqtts://127.0.0.1:{port}"),
            tls(&stranger.ca, true),
            &["invalid peer certificate"][..],
        ),
        (
            "an address the certificate is not for",
            format!("mqtts://127.0.0.2:{port_other_addr}"),
            tls(&certs.ca, true),
            &["NotValidForName", "not valid for name"][..],
        ),
        ("no client certificate", format!("mqtts://127.0.0.1:{port}"), tls(&certs.ca, false), &[][..]),
    ];
    for (what, url, extra, error) in cases {
        let root = tempfile::tempdir().expect("tempdir");
        let data = data_dir_with_tenant(root.path(), "acme", TENANT_TOML);
        let mut host = HostProcess::spawn(root.path(), &data, &url, &extra);
        let tried = wait_until(Duration::from_secs(30), || {
            host.log_text().matches("MQTT ingest session lost").count() >= 2
        });
        assert!(tried.is_some(), "{what}: the host keeps trying; log:\n{}", host.log_text());
        let log = host.log_text();
        assert!(!log.contains("MQTT ingest session connected"), "{what}: never connected; log:\n{log}");
        if !error.is_empty() {
            assert!(
                error.iter().any(|e| log.contains(e)),
                "{what}: the log names the reason ({error:?}); log:\n{log}"
            );
        }
        // It says it is not ready, and why.
        let (status, ready) = crate::http::get(host.http_addr(), "/readyz");
        assert_eq!(status, 503, "{what}: {ready}");
        assert_eq!(json(&ready)["mqtt_connected"], false, "{what}: {ready}");
        host.stop();
    }
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn the_demo_runs_for_30_seconds_and_leaves_predictions_alerts_and_the_log() {
    let _timing = crate::support::shared();
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("demo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .args(["demo", "--duration", "30", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .output()
        .expect("edgepm demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("predictions"), "{stdout}");
    // Every reading the broker acknowledged to the simulator is stored. (rumqttd drops a client
    // that acknowledges a message twice: this also checks that the host acknowledges each
    // message once, itself, after its commit — never the MQTT client on receipt.)
    let number = |label: &str| -> u64 {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{label} in {stdout}"))
    };
    assert_eq!(number("readings published"), number("readings stored"), "{stdout}");
    let db = rusqlite::Connection::open(data.join("edgepm.db")).expect("store");
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).expect("query") };
    assert!(count("SELECT count(*) FROM predictions") > 50, "{stdout}");
    // Scored by the trained bearing model the demo deploys, explained above the threshold.
    assert_eq!(
        count("SELECT count(*) FROM predictions WHERE model NOT LIKE 'bearing-spectrum-xgb@%'"),
        0,
        "{stdout}"
    );
    assert_eq!(
        count("SELECT count(*) FROM predictions WHERE is_failure AND contributions = '[]'"),
        0,
        "every alerting prediction carries its SHAP contributions\n{stdout}"
    );
    // In the contract's order, largest magnitude first (the trees explain in feature order).
    let mut stmt = db.prepare("SELECT contributions FROM predictions WHERE is_failure").expect("query");
    let explained: Vec<String> =
        stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows");
    assert!(!explained.is_empty(), "{stdout}");
    for c in &explained {
        let values: Vec<f64> = json(c)
            .as_array()
            .expect("a list")
            .iter()
            .map(|c| c["value"].as_f64().expect("a value").abs())
            .collect();
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "not largest first: {c}");
    }
    assert!(
        count("SELECT count(*) FROM predictions WHERE device = 'MTR-001' AND is_failure") > 0,
        "{stdout}"
    );
    assert_eq!(
        count("SELECT count(*) FROM predictions WHERE device <> 'MTR-001' AND is_failure"),
        0,
        "{stdout}"
    );
    let emails: Vec<_> =
        std::fs::read_dir(data.join("logs/alert_emails")).expect("e-mails").filter_map(Result::ok).collect();
    assert!(!emails.is_empty(), "an alert e-mail for the failing motor\n{stdout}");
    assert!(emails.iter().all(|e| e.file_name().to_string_lossy().contains("MTR-001")), "{stdout}");
    let log = std::fs::read_to_string(data.join("logs/mqtt_messages.jsonl")).expect("message log");
    assert!(log.lines().count() as i64 >= count("SELECT count(*) FROM predictions"), "{stdout}");
    // The weekly report of the week it ran in, named in the summary, naming the failing motor.
    let week = edgepm::report::IsoWeek::containing(count("SELECT max(ts_ms) FROM predictions"));
    let report = data.join("reports").join(format!("{week}.pdf"));
    assert!(stdout.contains(&format!("weekly report      {}", report.display())), "{stdout}");
    let text = std::process::Command::new("pdftotext").arg(&report).arg("-").output().expect("pdftotext");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("week {week}")) && text.contains("MTR-001"), "{text}");
}
