//! The ingest core — decode, store, windows, plugins, outbox — on a real SQLite file, without a
//! broker: windows completed by the same batch are scored together (one model call per tenant)
//! and produce exactly what they produce one message at a time, cool-downs included.

use crate::support::{self, Deployment};
use edgepm::ingest::{Ingestor, Limits, Message, WindowBudget};
use edgepm::metrics::Metrics;
use edgepm::outbox::Router;
use edgepm::plugins::PluginHost;
use edgepm::store::{Durability, SqliteStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `n` canonical telemetry messages of `device`, one a second, ending a minute ago.
fn readings(device: &str, n: usize, wear: f32) -> Vec<Message> {
    let end = edgepm::clock::now_ms() - 60_000;
    let w = support::window("acme", device, n, end, wear);
    (0..n)
        .map(|i| {
            let burst: Vec<String> =
                w.channels[0].samples[i * 64..(i + 1) * 64].iter().map(|v| format!("{v:.5}")).collect();
            let payload = format!(
                r#"{{"ts": {}, "vibration": [{}], "temperature": {}, "current": {}}}"#,
                w.timestamps_ms[i],
                burst.join(","),
                w.channels[1].samples[i],
                w.channels[2].samples[i]
            );
            Message {
                topic: format!("edgepm/acme/{device}/telemetry"),
                payload: payload.into_bytes().into(),
                received: Instant::now(),
            }
        })
        .collect()
}

struct Host {
    _d: Deployment,
    host: Arc<PluginHost>,
    ingestor: Ingestor,
    db: std::path::PathBuf,
}

fn host() -> Host {
    let d = Deployment::new();
    d.add_tenant("acme", "hop = 8\n[settings]\ncooldown_minutes = 30\n");
    let db = d.root.path().join("edgepm.db");
    let store = Arc::new(SqliteStore::open(&db, Durability::Normal).expect("store"));
    let host = PluginHost::open(d.options(), store.clone(), Arc::new(Metrics::new())).expect("host");
    let ingestor = Ingestor::new(
        host.clone(),
        store,
        Router::new(host.clone(), Default::default()),
        Limits::default(),
        8,
    );
    Host { _d: d, host, ingestor, db }
}

/// (device, window end, probability, alerts) of every stored prediction.
fn predictions(db: &std::path::Path) -> Vec<(String, i64, f64, i64)> {
    rows(
        db,
        "SELECT p.device, p.ts_ms, p.probability,
                (SELECT count(*) FROM alerts a WHERE a.device = p.device AND a.ts_ms = p.ts_ms)
         FROM predictions p ORDER BY p.device, p.ts_ms",
    )
}

/// Every row of `sql`, four columns each.
fn rows<A, B, C, D>(db: &std::path::Path, sql: &str) -> Vec<(A, B, C, D)>
where
    A: rusqlite::types::FromSql,
    B: rusqlite::types::FromSql,
    C: rusqlite::types::FromSql,
    D: rusqlite::types::FromSql,
{
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut s = conn.prepare(sql).expect("query");
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn windows_ready_together_are_scored_in_one_model_call_with_the_same_results() {
    let _timing = support::shared();
    // A failing and a healthy motor, interleaved: 48 readings each → windows at readings 32, 40
    // and 48 (window 32, hop 8), all six completed by one batch.
    let failing = readings("MTR-042", 48, 3.0);
    let healthy = readings("MTR-001", 48, 0.0);
    let stream: Vec<Message> = failing.into_iter().zip(healthy).flat_map(|(a, b)| [a, b]).collect();

    let mut together = host();
    let report = together.ingestor.process(&stream, &[], edgepm::clock::now_ms()).expect("batch");
    assert_eq!((report.readings, report.windows, report.predictions), (96, 6, 6));
    let metrics = together.host.metrics().encode();
    let batched = support::metric(&metrics, "edgepm_model_batched_rows_total", &[("tenant", "acme")]);
    assert_eq!(batched, 6.0, "one model call for the six windows");

    let mut one_by_one = host();
    for m in &stream {
        one_by_one.ingestor.process(std::slice::from_ref(m), &[], edgepm::clock::now_ms()).expect("batch");
    }
    let metrics = one_by_one.host.metrics().encode();
    assert_eq!(support::metric(&metrics, "edgepm_model_batched_rows_total", &[("tenant", "acme")]), 0.0);

    let (a, b) = (predictions(&together.db), predictions(&one_by_one.db));
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.0, x.1, x.3), (&y.0, y.1, y.3), "same windows, same alerts");
        assert!((x.2 - y.2).abs() < 1e-6, "{}: {} batched vs {} alone", x.0, x.2, y.2);
    }
    // The failing motor's three windows are 8 s apart: the 30-minute cool-down lets the first
    // alert through and holds the two after it, also when all three are in one batch.
    let alerts: Vec<i64> = a.iter().filter(|p| p.0 == "MTR-042").map(|p| p.3).collect();
    assert!(a.iter().filter(|p| p.0 == "MTR-042").all(|p| p.2 > 0.8), "{a:?}");
    assert_eq!(alerts, [1, 0, 0]);
    assert!(a.iter().filter(|p| p.0 == "MTR-001").all(|p| p.2 < 0.5 && p.3 == 0), "{a:?}");
}

#[test]
fn window_states_of_devices_silent_for_long_are_evicted_and_rebuilt_without_loss() {
    let _timing = support::shared();
    let mut h = host();
    let now = edgepm::clock::now_ms();
    let (a, b) = (readings("MTR-A", 40, 0.0), readings("MTR-B", 40, 0.0));
    h.ingestor.process(&a[..20], &[], now).expect("batch");
    h.ingestor.process(&b[..20], &[], now).expect("batch");
    assert_eq!(h.ingestor.device_states(), 2);
    // Two hours later only MTR-A is heard from: MTR-B's state goes.
    let later = now + 2 * edgepm::ingest::DEVICE_IDLE_MS;
    h.ingestor.process(&a[20..], &[], later).expect("batch");
    assert_eq!(h.ingestor.device_states(), 1, "the silent device's window state is evicted");
    // MTR-B comes back: its state is rebuilt from the store and its windows go on as if nothing
    // happened — the same predictions as a host that never evicted it.
    h.ingestor.process(&b[20..], &[], later).expect("batch");
    assert_eq!(h.ingestor.device_states(), 2);
    let mut reference = host();
    for batch in [&a[..20], &b[..20], &a[20..], &b[20..]] {
        reference.ingestor.process(batch, &[], now).expect("batch");
    }
    let ends = |db| predictions(db).into_iter().map(|(d, end, _, _)| (d, end)).collect::<Vec<_>>();
    assert_eq!(ends(&h.db), ends(&reference.db));
    assert!(!ends(&h.db).is_empty());
}

#[test]
fn readings_of_a_tenant_not_deployed_yet_are_parked_and_replayed_once_it_is() {
    let _timing = support::shared();
    let mut h = host();
    let now = edgepm::clock::now_ms();
    let ghost: Vec<Message> = readings("MTR-G", 40, 0.0)
        .into_iter()
        .map(|m| Message { topic: m.topic.replace("edgepm/acme/", "edgepm/ghost/"), ..m })
        .collect();
    let report = h.ingestor.process(&ghost, &[], now).expect("batch");
    assert_eq!((report.readings, report.rejected), (0, 40), "refused: no tenant ghost");
    assert_eq!(h.ingestor.replay_parked(now).expect("replay"), 0, "still not served");
    // The tenant is deployed (say, its folder was being replaced): its readings come back.
    h._d.add_tenant("ghost", "hop = 8\n");
    h.host.reload_tenant("ghost");
    assert_eq!(h.ingestor.replay_parked(now).expect("replay"), 40);
    assert_eq!(h.ingestor.replay_parked(now).expect("replay"), 0, "each replayed once");
    let conn = rusqlite::Connection::open(&h.db).expect("open");
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM readings WHERE tenant = 'ghost'", [], |r| r.get(0))
        .expect("count");
    assert_eq!(stored, 40);
    assert!(predictions(&h.db).iter().any(|(d, ..)| d == "MTR-G"), "and scored");
}

/// Tenants `slow` (a valid policy that computes 20 ms per window) and `fast` on one store, with
/// a plugin-time budget of 30 ms per tenant and batch: the slow tenant's windows run two a batch
/// (one, should starting an instance take 10 ms).
fn budgeted(db: &std::path::Path, d: &Deployment, max_deferred: usize) -> (Arc<PluginHost>, Ingestor) {
    let store = Arc::new(SqliteStore::open(db, Durability::Normal).expect("store"));
    let host = PluginHost::open(d.options(), store.clone(), Arc::new(Metrics::new())).expect("host");
    let budget = WindowBudget { per_batch: Some(Duration::from_millis(30)), max_deferred };
    let ingestor = Ingestor::new(
        host.clone(),
        store,
        Router::new(host.clone(), Default::default()),
        Limits::default(),
        8,
    )
    .with_budget(budget);
    (host, ingestor)
}

fn slow_and_fast() -> Deployment {
    let d = Deployment::new();
    d.add_tenant("slow", "hop = 8\n[settings]\nchaos = \"slow\"\nchaos_ms = 20\n");
    d.deploy("slow", "policy.wasm", &support::wasm(support::CHAOS_POLICY));
    d.add_tenant("fast", "hop = 8\n");
    d
}

fn of_tenant(tenant: &str, messages: &[Message]) -> Vec<Message> {
    let prefix = format!("edgepm/{tenant}/");
    messages
        .iter()
        .map(|m| Message { topic: m.topic.replace("edgepm/acme/", &prefix), ..m.clone() })
        .collect()
}

/// (tenant, device, window end, probability) of every stored prediction.
fn scored(db: &std::path::Path) -> Vec<(String, String, i64, f64)> {
    rows(db, "SELECT tenant, device, ts_ms, probability FROM predictions ORDER BY tenant, device, ts_ms")
}

#[test]
fn a_tenant_past_its_budget_waits_for_later_batches_and_loses_no_window_across_a_restart() {
    let _timing = support::exclusive();
    // 48 readings per device → windows at 32, 40 and 48: 6 windows per tenant in one batch.
    let mut batch = Vec::new();
    for tenant in ["slow", "fast"] {
        batch.extend(of_tenant(tenant, &readings("MTR-1", 48, 3.0)));
        batch.extend(of_tenant(tenant, &readings("MTR-2", 48, 0.0)));
    }
    let now = edgepm::clock::now_ms();
    let d = slow_and_fast();
    let db = d.root.path().join("edgepm.db");
    let (host, mut ingestor) = budgeted(&db, &d, 10_000);
    let report = ingestor.process(&batch, &[], now).expect("batch");
    // The slow tenant's policy used its budget after one or two windows; the fast one ran all
    // six in the same batch.
    assert_eq!(report.windows, 12);
    let first = scored(&db);
    assert_eq!(first.iter().filter(|p| p.0 == "fast").count(), 6);
    let slow_done = first.iter().filter(|p| p.0 == "slow").count();
    assert!((1..=2).contains(&slow_done), "{report:?}");
    assert_eq!(ingestor.deferred_waiting(), 6 - slow_done);
    let metrics = host.metrics().encode();
    assert_eq!(metric(&metrics, "edgepm_windows_deferred_total", "slow"), (6 - slow_done) as f64);
    assert_eq!(metric(&metrics, "edgepm_windows_deferred_total", "fast"), 0.0);
    // A crash here: the deferred windows are in the store, and a new host runs them.
    drop(ingestor);
    let (_, mut ingestor) = budgeted(&db, &d, 10_000);
    for _ in 0..10 {
        ingestor.process(&[], &[], now).expect("batch of deferred windows");
        if ingestor.deferred_waiting() == 0 {
            break;
        }
    }
    assert_eq!(ingestor.deferred_waiting(), 0);
    // The same predictions as a host without a budget, each once.
    let reference = slow_and_fast();
    let reference_db = reference.root.path().join("edgepm.db");
    let store = Arc::new(SqliteStore::open(&reference_db, Durability::Normal).expect("store"));
    let rhost = PluginHost::open(reference.options(), store.clone(), Arc::new(Metrics::new())).expect("host");
    let mut unlimited =
        Ingestor::new(rhost.clone(), store, Router::new(rhost, Default::default()), Limits::default(), 8);
    unlimited.process(&batch, &[], now).expect("batch");
    let (got, want) = (scored(&db), scored(&reference_db));
    assert_eq!(got.len(), 12);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g.0, &g.1, g.2), (&w.0, &w.1, w.2));
        assert!((g.3 - w.3).abs() < 1e-6, "{g:?} vs {w:?}");
    }
}

#[test]
fn a_tenant_that_cannot_keep_up_sheds_its_oldest_windows_counted() {
    let _timing = support::exclusive();
    let mut batch = of_tenant("slow", &readings("MTR-1", 48, 3.0));
    batch.extend(of_tenant("slow", &readings("MTR-2", 48, 0.0)));
    let d = slow_and_fast();
    let db = d.root.path().join("edgepm.db");
    let (host, mut ingestor) = budgeted(&db, &d, 1);
    let now = edgepm::clock::now_ms();
    let report = ingestor.process(&batch, &[], now).expect("batch");
    // One or two windows ran, one waits, the rest were shed.
    let ran = report.predictions;
    assert!((1..=2).contains(&ran), "{report:?}");
    assert_eq!(ingestor.deferred_waiting(), 1);
    let metrics = host.metrics().encode();
    assert_eq!(metric(&metrics, "edgepm_windows_deferred_total", "slow"), (6 - ran) as f64);
    assert_eq!(metric(&metrics, "edgepm_windows_shed_total", "slow"), (5 - ran) as f64);
    ingestor.process(&[], &[], now).expect("batch");
    assert_eq!(ingestor.deferred_waiting(), 0);
    // The newest window survived (the shed are the oldest); the readings of all are stored.
    let got = scored(&db);
    assert_eq!(got.len() as u64, ran + 1, "{got:?}");
    let newest = got.iter().map(|p| (p.1.clone(), p.2)).max_by_key(|p| p.1);
    let last_end = batch.iter().filter_map(|m| json_ts(&m.payload)).max();
    assert_eq!(newest.map(|p| p.1), last_end);
    let conn = rusqlite::Connection::open(&db).expect("open");
    let readings: i64 = conn.query_row("SELECT count(*) FROM readings", [], |r| r.get(0)).expect("count");
    assert_eq!(readings, 96);
}

fn metric(text: &str, name: &str, tenant: &str) -> f64 {
    support::metric(text, name, &[("tenant", tenant)])
}

fn json_ts(payload: &[u8]) -> Option<i64> {
    serde_json::from_slice::<serde_json::Value>(payload).ok()?["ts"].as_i64()
}
