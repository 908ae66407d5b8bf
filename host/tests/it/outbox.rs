//! The outbox dispatcher against a real mosquitto that stops answering and dies: publications in
//! flight are not counted as delivered without the broker's acknowledgement, and everything is
//! delivered once a broker is back.

use crate::support::broker::Mosquitto;
use crate::support::wait_until;
use edgepm::ingest::mqtt::{MqttConfig, client, publish_session};
use edgepm::metrics::Metrics;
use edgepm::outbox::{Dispatcher, MqttOut, Paths};
use edgepm::store::{Durability, Sink, SqliteStore};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn publications_wait_for_acknowledgements_and_survive_a_broker_that_dies() {
    let _timing = crate::support::shared();
    let root = tempfile::tempdir().expect("tempdir");
    let db = root.path().join("edgepm.db");
    let store = SqliteStore::open(&db, Durability::Normal).expect("store");
    const N: i64 = 500;
    store.begin().expect("begin");
    for i in 0..N {
        let payload = format!(r#"{{"n": {i}}}"#);
        store
            .enqueue(Sink::Mqtt, &format!("edgepm/acme/MTR-{:03}/prediction", i % 7), payload.as_bytes(), 0)
            .expect("enqueue");
    }
    store.commit().expect("commit");

    let broker = Mosquitto::start();
    let port = broker.port;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let options = MqttConfig::new(broker.url()).options("outbox-test", true).expect("options");
    let (mqtt, eventloop) = {
        let _guard = runtime.enter();
        client(options, 4096)
    };
    let (acks_tx, acks) = tokio::sync::watch::channel(0u64);
    let connected = Arc::new(AtomicBool::new(false));
    let (_stop_session, stop_rx) = tokio::sync::watch::channel(false);
    runtime.spawn(publish_session(eventloop, acks_tx, connected.clone(), stop_rx));
    assert!(wait_until(Duration::from_secs(10), || connected.load(Ordering::Relaxed)).is_some(), "connects");

    // The broker stops answering: publications go out, no acknowledgement comes back.
    broker.freeze();
    let metrics = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (delivered_tx, delivered_rx) = std::sync::mpsc::channel::<Vec<i64>>();
    let paths = Paths {
        email_dir: root.path().join("mail"),
        mqtt_log: Some(root.path().join("mqtt.jsonl")),
        mqtt_log_max_bytes: 64 << 20,
        dead_letters: root.path().join("undeliverable.jsonl"),
    };
    let (dispatcher, waker) = Dispatcher::new(
        SqliteStore::open(&db, Durability::Normal).expect("reader"),
        MqttOut {
            client: mqtt,
            acks,
            connected: connected.clone(),
            runtime: runtime.handle().clone(),
            max_publish_bytes: 128 * 1024,
        },
        paths.clone(),
        metrics.telemetry.clone(),
        stop.clone(),
        delivered_tx,
    )
    .expect("dispatcher");
    let thread = std::thread::spawn(move || dispatcher.run());
    waker.wake();
    std::thread::sleep(Duration::from_millis(500));
    assert!(delivered_rx.try_recv().is_err(), "nothing is delivered without the broker's acknowledgement");

    // It dies (its connections are reset) and another broker comes up on the same port.
    broker.kill9();
    let _broker = Mosquitto::start_on(port, "");
    let mut delivered = HashSet::new();
    let all = wait_until(Duration::from_secs(30), || {
        delivered.extend(delivered_rx.try_iter().flatten());
        delivered.len() == N as usize
    });
    assert!(all.is_some(), "{} of {N} delivered after the broker came back", delivered.len());
    let failures =
        crate::support::metric(&metrics.encode(), "edgepm_outbox_failures_total", &[("sink", "mqtt")]);
    assert!(failures >= 1.0, "the lost publications were counted as a failed delivery");
    let lines = std::fs::read_to_string(root.path().join("mqtt.jsonl")).expect("message log").lines().count();
    assert!(lines >= N as usize, "every message is in the log once it was acknowledged: {lines}");

    stop.store(true, Ordering::Relaxed);
    waker.wake();
    thread.join().expect("dispatcher stops");
}
