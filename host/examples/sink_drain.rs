//! Drains a backlog of window records through one cloud sink's driver, as the host runs it,
//! and prints messages/s (each message is a window: two records or points). For
//! `scripts/bench/cloud.sh`; the server must be running and ready.
//!
//! `sink_drain influxdb <url> <messages>` (v1, database `edgepm`) or
//! `sink_drain timestream <endpoint> <messages>` (database `edgepm`, table `telemetry`, created
//! by the caller; credentials from the environment).

use edgepm::metrics::Metrics;
use edgepm::outbox::messages::{CloudRecord, Record};
use edgepm::shutdown::{Shutdown, Stage};
use edgepm::sinks::influxdb::{InfluxApi, InfluxConfig, InfluxSink};
use edgepm::sinks::timestream::{TimestreamConfig, TimestreamSink};
use edgepm::sinks::{DeadLetters, DriverContext, Drivers};
use edgepm::store::{Durability, MessageKind, SqliteStore};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: sink_drain influxdb|timestream <url> <messages>");
    let (kind, url, n) = (args[1].as_str(), args[2].as_str(), args[3].parse::<i64>()?);
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("edgepm.db");
    let store = SqliteStore::open(&db, Durability::Normal)?;
    // 100 motors, one window each per second, ending now (Timestream's memory store takes them).
    let now = edgepm::clock::now_ms();
    let per_device = (n + 99) / 100;
    store.begin()?;
    for i in 0..n {
        let (device, t) = (i % 100, i / 100);
        let r = Record {
            tenant: "acme".into(),
            device: format!("MTR-{device:03}"),
            site: Some("Plant A".into()),
            time_ms: now - (per_device - t) * 1000,
            features: (0..12).map(|f| (format!("feature_{f}"), Some(f as f64 + i as f64 * 1e-3))).collect(),
            probability: 0.1,
            is_failure: false,
            model: "bearing".into(),
            versions: ["aaaaaaaaaaaa".into(), "builtin".into(), "cccccccccccc".into()],
        };
        let topic = format!("edgepm/acme/MTR-{device:03}/prediction");
        store.enqueue(MessageKind::Record, &topic, &serde_json::to_vec(&CloudRecord::Window(r))?, now)?;
    }
    store.commit()?;

    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let context = DriverContext {
        store: SqliteStore::open_reader(&db)?,
        metrics: metrics.telemetry.clone(),
        dead_letters: DeadLetters { path: dir.path().join("undeliverable.jsonl") },
        settled: tx,
        shutdown: shutdown.clone(),
        start_after: 0,
    };
    let mut drivers = Drivers::new();
    let started = Instant::now();
    match kind {
        "influxdb" => {
            let mut c = InfluxConfig::new(url, InfluxApi::V1);
            c.database = Some("edgepm".into());
            drivers.spawn(InfluxSink::new(c)?, context)?;
        }
        "timestream" => {
            let c = TimestreamConfig {
                database: "edgepm".into(),
                table: "telemetry".into(),
                region: None,
                endpoint: Some(url.into()),
                memory_store_hours: 24,
                magnetic_store_writes: true,
                batch_messages: 50,
                linger_ms: 1000,
                readings: false,
            };
            drivers.spawn(TimestreamSink::new(c, metrics.telemetry.clone()), context)?;
        }
        other => anyhow::bail!("unknown sink {other:?}"),
    }
    drivers.waker.wake();
    let mut upto = 0;
    while upto < n {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(s) => upto = upto.max(s.upto),
            Err(_) => anyhow::bail!("no progress for 120 s (settled {upto} of {n})"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let dead = std::fs::read_to_string(dir.path().join("undeliverable.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!(
        "{kind}: {n} windows ({} records) in {secs:.1} s = {:.0} windows/s, {dead} dead-lettered",
        2 * n,
        n as f64 / secs
    );
    shutdown.advance(Stage::Sinks);
    drivers.join();
    Ok(())
}
