//! The sinks against a real mosquitto that stops answering, dies, or loses the connection in the
//! middle of a stream: a publication counts as delivered only on its own acknowledgement, an
//! independent subscriber receives every outbox row, and a sink that never answers does not hold
//! back the others.

use crate::support::broker::Mosquitto;
use crate::support::wait_until;

// A new store numbers its outbox rows 1..=n: the last id is the number of rows.
use edgepm::ingest::mqtt::{MqttConfig, client};
use edgepm::metrics::Metrics;
use edgepm::shutdown::{Shutdown, Stage};
use edgepm::sinks::email_files::EmailFiles;
use edgepm::sinks::message_log::MessageLog;
use edgepm::sinks::mqtt::{CLIENT_CAPACITY, MqttSink, publish_session};
use edgepm::sinks::{DeadLetters, DriverContext, Drivers, Settled, Waker};
use edgepm::store::{Durability, MessageKind, SqliteStore};
use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Adds `n` publications (`{"n": i}`, i from `first`) and `emails` alert e-mails to the outbox
/// of the store in `root`.
fn outbox_from(root: &Path, first: i64, n: i64, emails: i64) -> PathBuf {
    let db = root.join("edgepm.db");
    let store = SqliteStore::open(&db, Durability::Normal).expect("store");
    store.begin().expect("begin");
    for i in first..first + n {
        let payload = format!(r#"{{"n": {i}}}"#);
        let topic = format!("edgepm/acme/MTR-{:03}/prediction", i % 7);
        store.enqueue(MessageKind::Publication, &topic, payload.as_bytes(), 0).expect("enqueue");
    }
    for i in 0..emails {
        let name = format!("1743849000000+acme+MTR-{i:03}+0.eml");
        store.enqueue(MessageKind::Email, &name, b"Subject: alert\r\n\r\nbody\r\n", 0).expect("enqueue");
    }
    store.commit().expect("commit");
    db
}

fn outbox(root: &Path, n: i64, emails: i64) -> PathBuf {
    outbox_from(root, 0, n, emails)
}

/// The publishing session against `url` and the sinks' drivers, started as the host starts them.
struct Sinks {
    runtime: tokio::runtime::Runtime,
    connected: tokio::sync::watch::Receiver<bool>,
    drivers: Drivers,
    shutdown: Shutdown,
    waker: Waker,
    settled: std::sync::mpsc::Receiver<Settled>,
    /// Highest cursor reported, per sink.
    cursors: HashMap<&'static str, i64>,
    metrics: Metrics,
}

impl Sinks {
    fn start(db: &Path, url: &str, files: Option<&Path>) -> Sinks {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = MqttConfig::new(url);
        config.keep_alive_secs = 5;
        let options = config.options("outbox-test-out", true).expect("options");
        let (mqtt, eventloop) = {
            let _guard = runtime.enter();
            client(options, CLIENT_CAPACITY)
        };
        let (publish_tx, publish_rx) = tokio::sync::mpsc::channel(8192);
        let (connected_tx, connected) = tokio::sync::watch::channel(false);
        let shutdown = Shutdown::new();
        runtime.spawn(publish_session(eventloop, mqtt, publish_rx, connected_tx, shutdown.clone()));
        let metrics = Metrics::new();
        let (settled_tx, settled) = std::sync::mpsc::channel();
        let context = || DriverContext {
            store: SqliteStore::open_reader(db).expect("reader"),
            metrics: metrics.telemetry.clone(),
            dead_letters: DeadLetters { path: db.with_file_name("undeliverable.jsonl") },
            settled: settled_tx.clone(),
            shutdown: shutdown.clone(),
            start_after: 0,
        };
        let mut drivers = Drivers::new();
        drivers.spawn(MqttSink::new(publish_tx, connected.clone(), 128 * 1024), context()).expect("driver");
        if let Some(dir) = files {
            let mail = EmailFiles::new(dir.join("mail")).expect("e-mail files");
            drivers.spawn(mail, context()).expect("driver");
            let log = MessageLog::new(dir.join("mqtt.jsonl"), 64 << 20).expect("message log");
            drivers.spawn(log, context()).expect("driver");
        }
        let waker = drivers.waker.clone();
        waker.wake();
        Sinks { runtime, connected, drivers, shutdown, waker, settled, cursors: HashMap::new(), metrics }
    }

    fn connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// The cursor `sink` reported last (0: none yet).
    fn cursor(&mut self, sink: &str) -> i64 {
        for s in self.settled.try_iter() {
            let c = self.cursors.entry(s.sink).or_default();
            *c = (*c).max(s.upto);
        }
        self.cursors.get(sink).copied().unwrap_or(0)
    }

    fn metric(&self, name: &str, sink: &str) -> f64 {
        crate::support::metric(&self.metrics.encode(), name, &[("sink", sink)])
    }

    fn stop(mut self) {
        self.shutdown.advance(Stage::Sinks);
        self.drivers.join();
        self.shutdown.advance(Stage::Output);
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn publications_wait_for_acknowledgements_and_survive_a_broker_that_dies() {
    let _timing = crate::support::shared();
    let root = tempfile::tempdir().expect("tempdir");
    const N: i64 = 500;
    let db = outbox(root.path(), 0, 0);
    let broker = Mosquitto::start();
    let port = broker.port;
    let files = root.path().join("files");
    let mut sinks = Sinks::start(&db, &broker.url(), Some(&files));
    assert!(wait_until(Duration::from_secs(10), || sinks.connected()).is_some(), "connects");

    // The broker stops answering: publications go out, no acknowledgement comes back.
    broker.freeze();
    outbox(root.path(), N, 0);
    sinks.waker.wake();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sinks.cursor("mqtt"), 0, "nothing is delivered without the broker's acknowledgement");

    // It dies (its connections are reset) and another broker comes up on the same port.
    broker.kill9();
    let _broker = Mosquitto::start_on(port, "");
    let all = wait_until(Duration::from_secs(30), || sinks.cursor("mqtt") == (N));
    assert!(all.is_some(), "delivered up to {} of {N} after the broker came back", sinks.cursor("mqtt"));
    assert!(
        sinks.metric("edgepm_outbox_failures_total", "mqtt") >= 1.0,
        "the lost publications were counted"
    );
    let lines = std::fs::read_to_string(files.join("mqtt.jsonl")).expect("message log").lines().count();
    assert!(lines >= N as usize, "every publication is in the message log: {lines}");
    sinks.stop();
}

/// A TCP proxy between the publishing session and the broker that can hold back what either side
/// sends and cut every connection, losing what it held: a network that fails mid-stream.
struct Proxy {
    port: u16,
    hold: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(broker_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hold = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (h, s) = (hold.clone(), streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(broker) = TcpStream::connect(("127.0.0.1", broker_port)) else { continue };
                let _ = client.set_nodelay(true);
                let _ = broker.set_nodelay(true);
                let clone = |t: &TcpStream| t.try_clone().expect("clone a socket");
                s.lock().expect("streams").extend([clone(&client), clone(&broker)]);
                let (c2, b2) = (clone(&client), clone(&broker));
                let (up, down) = (h.clone(), h.clone());
                std::thread::spawn(move || pipe(client, broker, up));
                std::thread::spawn(move || pipe(b2, c2, down));
            }
        });
        Proxy { port, hold, streams }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection; what was held back is lost with them.
    fn cut(&self) {
        for s in self.streams.lock().expect("streams").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Copies `from` to `to`; while `hold` is set, what arrives is kept back (and lost on a cut).
fn pipe(mut from: TcpStream, mut to: TcpStream, hold: Arc<AtomicBool>) {
    let mut buf = [0u8; 16 * 1024];
    let mut held = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        held.extend_from_slice(&buf[..n]);
        if hold.load(Ordering::Relaxed) {
            continue;
        }
        if to.write_all(&held).is_err() {
            break;
        }
        held.clear();
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn a_connection_lost_mid_stream_loses_no_outbox_row() {
    let _timing = crate::support::shared();
    let root = tempfile::tempdir().expect("tempdir");
    const N: i64 = 20_000;
    let db = outbox(root.path(), N, 0);
    let broker = Mosquitto::start();
    let subscriber = broker.subscribe(&["edgepm/#"]);
    let proxy = Proxy::start(broker.port);
    let mut sinks = Sinks::start(&db, &proxy.url(), None);
    let received = |s: &crate::support::broker::Subscriber| {
        s.messages().iter().map(|(_, p)| p.clone()).collect::<HashSet<String>>()
    };

    // Twice — first in the middle of the stream, then right after the reconnection, while the
    // session retries — the network holds back everything in both directions while the session
    // goes on publishing, then the connection is lost with what was held.
    for round in 0..2 {
        assert!(
            wait_until(Duration::from_secs(20), || sinks.connected()).is_some(),
            "round {round}: connects"
        );
        if round == 0 {
            let flowing = wait_until(Duration::from_secs(20), || subscriber.messages().len() >= 2000);
            assert!(flowing.is_some(), "publications flow: {} received", subscriber.messages().len());
        }
        proxy.hold.store(true, Ordering::Relaxed);
        // What the broker acknowledged before the hold is settled by now.
        std::thread::sleep(Duration::from_millis(500));
        let settled = sinks.cursor("mqtt");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            sinks.cursor("mqtt"),
            settled,
            "round {round}: nothing settled without its acknowledgement"
        );
        assert!(settled < (N), "round {round}: in the middle of the stream");
        proxy.cut();
        proxy.hold.store(false, Ordering::Relaxed);
        assert!(
            wait_until(Duration::from_secs(10), || !sinks.connected()).is_some(),
            "round {round}: the loss is seen"
        );
    }

    let all = wait_until(Duration::from_secs(60), || sinks.cursor("mqtt") == (N));
    assert!(all.is_some(), "settled up to {} of {N} after the reconnections", sinks.cursor("mqtt"));
    assert!(sinks.metric("edgepm_outbox_retried_total", "mqtt") >= 1.0, "the lost publications were retried");
    // Every row the sink settled reached the independent subscriber (some twice: at least once).
    subscriber.wait_for(Duration::from_secs(10), |m| {
        m.iter().map(|(_, p)| p.as_str()).collect::<HashSet<_>>().len() == N as usize
    });
    let got = received(&subscriber);
    let missing: Vec<i64> = (0..N).filter(|i| !got.contains(&format!(r#"{{"n": {i}}}"#))).collect();
    assert!(
        missing.is_empty(),
        "{} rows settled but never received, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    sinks.stop();
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn a_broker_that_never_answers_does_not_hold_back_the_e_mail_files_or_the_message_log() {
    let _timing = crate::support::shared();
    let root = tempfile::tempdir().expect("tempdir");
    const N: i64 = 200;
    const EMAILS: i64 = 20;
    let db = outbox(root.path(), N, EMAILS);
    let broker = Mosquitto::start();
    broker.freeze();
    let files = root.path().join("files");
    let mut sinks = Sinks::start(&db, &broker.url(), Some(&files));

    let mail = files.join("mail");
    let count = |dir: &Path| std::fs::read_dir(dir).map(|d| d.filter_map(Result::ok).count()).unwrap_or(0);
    let written = wait_until(Duration::from_secs(5), || {
        count(&mail) == EMAILS as usize && sinks.cursor("message_log") == (N + EMAILS)
    });
    assert!(
        written.is_some(),
        "with the broker frozen: {} of {EMAILS} e-mail files, message log settled up to {} of {}",
        count(&mail),
        sinks.cursor("message_log"),
        (N + EMAILS)
    );
    let settled = wait_until(Duration::from_secs(5), || sinks.cursor("email_files") == (N + EMAILS));
    assert!(settled.is_some(), "the e-mail sink settled its rows: {}", sinks.cursor("email_files"));
    assert_eq!(sinks.cursor("mqtt"), 0, "the frozen broker acknowledged nothing");
    let lines = std::fs::read_to_string(files.join("mqtt.jsonl")).expect("message log").lines().count();
    assert_eq!(lines, N as usize);
    // The MQTT sink's queue is the whole of its kind, and it says how old the oldest is.
    std::thread::sleep(Duration::from_millis(1100));
    sinks.waker.wake();
    let queue =
        wait_until(Duration::from_secs(5), || sinks.metric("edgepm_outbox_queue", "mqtt") == N as f64);
    assert!(queue.is_some(), "queue {}", sinks.metric("edgepm_outbox_queue", "mqtt"));
    assert!(sinks.metric("edgepm_outbox_oldest_seconds", "mqtt") > 1e9, "created at 0: decades old");
    drop(broker);
    sinks.stop();
}
