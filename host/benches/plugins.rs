//! Cost of the plugin host per window: the three reference plugins through wasmtime (epoch
//! deadline on, memory cap on) against the same feature and policy code compiled natively and
//! called directly, with the same tract model in both. Also: the fixed cost of a component call,
//! instantiating a component, and swapping a plugin version.
//!
//!     cargo bench -p edgepm --bench plugins
//!
//! Results and the machine they were measured on: docs/benchmarks.md.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use edgepm::metrics::Metrics;
use edgepm::model::{self, ModelRegistry};
use edgepm::pipeline::process_window;
use edgepm::plugins::{CallContext, HostOptions, PluginHost, StagePlugin};
use edgepm::store::{History, MemoryHistory};
use edgepm::types::{Channel, Features, Stage, Window};
use std::hint::black_box;
use std::sync::Arc;

const READINGS: usize = 32;
const BURST: usize = 64;

fn window(end_ms: i64) -> Window {
    let timestamps_ms: Vec<i64> =
        (0..READINGS as i64).map(|i| end_ms - (READINGS as i64 - 1 - i) * 1000).collect();
    let vibration = (0..READINGS * BURST)
        .map(|i| (i as f32 * 0.37).sin() * 1.3 + ((i * 7919) % 13) as f32 * 0.01)
        .collect();
    Window {
        tenant: "bench".into(),
        device: "MTR-0001".into(),
        start_ms: timestamps_ms[0],
        end_ms,
        timestamps_ms,
        channels: vec![
            Channel::new("vibration", vibration, BURST as u32),
            Channel::new("temperature", vec![66.0; READINGS], 1),
            Channel::new("current", vec![11.2; READINGS], 1),
        ],
        asset: vec![],
    }
}

/// The native twin of the policy's host imports.
struct NativeEnv<'a> {
    history: &'a MemoryHistory,
}

impl threshold_policy::Env for NativeEnv<'_> {
    fn config(&self, _key: &str) -> Option<String> {
        None
    }
    fn above_since(&self, device: &str, feature: &str, threshold: f64) -> Option<i64> {
        self.history.above_since("bench", device, feature, threshold)
    }
    fn last_alert_ms(&self, device: &str) -> Option<i64> {
        self.history.last_alert_ms("bench", device)
    }
}

/// The feature code of the `bearing-features` plugin, called natively.
fn native_features(w: &Window) -> Vec<f32> {
    let channels: Vec<bearing_features::Channel<'_>> = w
        .channels
        .iter()
        .map(|c| bearing_features::Channel {
            name: &c.name,
            samples: &c.samples,
            samples_per_reading: c.samples_per_reading,
        })
        .collect();
    let mut values = Vec::with_capacity(bearing_features::FEATURE_NAMES.len());
    let window = bearing_features::Window { timestamps_ms: &w.timestamps_ms, channels: &channels };
    bearing_features::compute(&window, &mut values).expect("features");
    values
}

/// The same three stages, natively: features → model → policy, with the same history writes.
fn native_window(w: &Window, models: &ModelRegistry, history: &MemoryHistory) -> bool {
    let features = Features {
        names: bearing_features::FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
        values: native_features(w),
    };
    history.record_features("bench", &w.device, w.end_ms, &features);
    let m = models.get("bearing").expect("model");
    let score =
        m.predict_row(&model::arrange(m.as_ref(), &features).expect("arranged"), false).expect("score");
    let s = threshold_policy::ScoreRef {
        probability: score.probability,
        model: &score.model,
        contributions: &[],
    };
    threshold_policy::decide(&NativeEnv { history }, &w.device, w.end_ms, s).expect("decision").is_failure
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (plugins, models) = (dir.path().join("plugins"), dir.path().join("models"));
    std::fs::create_dir_all(plugins.join("bench")).expect("tenant");
    std::fs::write(plugins.join("bench/tenant.toml"), "model = \"bearing\"\n").expect("toml");
    edgepm::model::baseline::write(&models, "bearing").expect("model");
    let mut options = HostOptions::new(&plugins, &models);
    options.cache_dir = Some(dir.path().join("cache"));
    let host = PluginHost::open(options, Arc::new(MemoryHistory::default()), Arc::new(Metrics::new()))
        .expect("host");
    let registry = ModelRegistry::new(&models);
    let history = MemoryHistory::default();
    let w = window(1_743_849_000_000);
    assert_eq!(
        process_window(&host, w.clone()).expect("wasm").decision.is_failure,
        native_window(&w, &registry, &history)
    );

    let mut g = c.benchmark_group("window_32x64");
    g.bench_function("wasm_three_plugins", |b| {
        b.iter_batched(
            || w.clone(),
            |w| black_box(process_window(&host, w).expect("ok")),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("native_same_code", |b| {
        b.iter_batched(
            || w.clone(),
            |w| black_box(native_window(&w, &registry, &history)),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let pipeline = host.tenant("bench").expect("tenant");
    let pre = pipeline.stage(Stage::Preprocess);
    let mut g = c.benchmark_group("preprocess_32x64");
    g.bench_function("wasm_features", |b| {
        b.iter_batched(|| w.clone(), |w| black_box(pre.features(w).expect("ok")), BatchSize::SmallInput)
    });
    g.bench_function("native_features", |b| {
        b.iter_batched(|| w.clone(), |w| black_box(native_features(&w)), BatchSize::SmallInput)
    });
    g.finish();

    let mut g = c.benchmark_group("component");
    g.bench_function("call_fixed_cost_window_size", |b| b.iter(|| black_box(pre.window_size().expect("ok"))));
    g.bench_function("instantiate_and_first_call", |b| {
        b.iter_batched(
            || {
                let ctx = Arc::new(CallContext {
                    tenant: "bench".into(),
                    stage: Stage::Preprocess,
                    version: pre.version().into(),
                    config: pipeline.config.clone(),
                    models: host.models().clone(),
                    history: host.history().clone(),
                    memory: Default::default(),
                });
                StagePlugin::new(pre.compiled.clone(), ctx, host.metrics().stage("bench", Stage::Preprocess))
            },
            |fresh| black_box(fresh.window_size().expect("ok")),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // Hot swap with a compiled version in the cache: read, hash, deserialize, smoke call, swap.
    let policy = std::fs::read(env!("EDGEPM_WASM_THRESHOLD_POLICY")).expect("policy");
    let variants: Vec<Vec<u8>> = (0..2).map(|i| with_custom_section(&policy, i)).collect();
    for v in &variants {
        std::fs::write(plugins.join("bench/policy.wasm"), v).expect("deploy");
        host.reload_tenant("bench"); // compiles once, into the cache
    }
    let mut g = c.benchmark_group("hot_swap");
    let mut i = 0usize;
    g.bench_function("swap_cached_policy_version", |b| {
        b.iter(|| {
            i += 1;
            std::fs::write(plugins.join("bench/policy.wasm"), &variants[i % 2]).expect("deploy");
            host.reload_tenant("bench");
        })
    });
    g.sample_size(10);
    let mut n = 100u32;
    g.bench_function("swap_new_policy_version_compiling", |b| {
        b.iter(|| {
            n += 1;
            std::fs::write(plugins.join("bench/policy.wasm"), with_custom_section(&policy, n))
                .expect("deploy");
            host.reload_tenant("bench");
        })
    });
    g.finish();
    assert_eq!(host.rejected_versions(), 0);
}

fn with_custom_section(bytes: &[u8], tag: u32) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let payload = [&[5u8][..], b"bench", &tag.to_le_bytes()].concat();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

criterion_group!(plugin_benches, benches);
criterion_main!(plugin_benches);
