//! The ingest core without the broker: batches of canonical telemetry messages (64-sample burst,
//! temperature, current; 100 motors; window 32, hop 8) through decode → store → windows →
//! three plugins → outbox, one SQLite transaction per batch. Isolates the host's own cost from
//! MQTT; `scripts/bench/telemetry.sh` measures the whole path through mosquitto.
//!   cargo bench -p edgepm --bench ingest

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgepm::ingest::{Ingestor, Limits, Message};
use edgepm::metrics::Metrics;
use edgepm::plugins::{HostOptions, PluginHost};
use edgepm::store::{Durability, SqliteStore};
use std::sync::Arc;
use std::time::Instant;

const DEVICES: usize = 100;
const BATCH: usize = 1000;

fn messages(n: usize, start: usize) -> Vec<Message> {
    let mut seed = 7u64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10_000) as f64 / 10_000.0 - 0.5
    };
    let base = edgepm::clock::now_ms() - 3_600_000;
    (start..start + n)
        .map(|i| {
            let (d, k) = (i % DEVICES, i / DEVICES);
            let v: Vec<String> = (0..64).map(|_| format!("{:.4}", noise() * 0.6)).collect();
            let payload = format!(
                "{{\"ts\": {}, \"vibration\": [{}], \"temperature\": {:.2}, \"current\": {:.2}}}",
                base + k as i64 * 1000,
                v.join(", "),
                60.0 + noise() * 10.0,
                10.0 + noise() * 3.0
            );
            Message {
                topic: format!("edgepm/default/MTR-{d:04}/telemetry"),
                payload: payload.into_bytes().into(),
                received: Instant::now(),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for durability in [Durability::Full, Durability::Normal] {
        let dir = tempfile::tempdir().expect("tempdir");
        let tenant = dir.path().join("plugins/default");
        std::fs::create_dir_all(&tenant).expect("folder");
        std::fs::write(tenant.join("tenant.toml"), "hop = 8\n").expect("toml");
        edgepm::model::baseline::write(&dir.path().join("models"), "default").expect("model");
        let store = Arc::new(SqliteStore::open(&dir.path().join("edgepm.db"), durability).expect("store"));
        let mut options = HostOptions::new(dir.path().join("plugins"), dir.path().join("models"));
        options.cache_dir = Some(dir.path().join("cache"));
        let host = PluginHost::open(options, store.clone(), Arc::new(Metrics::new())).expect("host");
        let mut ingestor = Ingestor::new(
            host.clone(),
            store,
            edgepm::outbox::Router::new(host, Default::default()),
            Limits::default(),
            8,
        );
        let mut next = 0;
        let mut g = c.benchmark_group(format!("ingest/{durability:?}"));
        g.throughput(Throughput::Elements(BATCH as u64));
        g.sample_size(20);
        g.bench_function("batch_1000_readings", |b| {
            b.iter_batched(
                || {
                    next += BATCH;
                    messages(BATCH, next)
                },
                |batch| ingestor.process(&batch, &[], edgepm::clock::now_ms()).expect("batch"),
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

criterion_group!(ingest, bench);
criterion_main!(ingest);
