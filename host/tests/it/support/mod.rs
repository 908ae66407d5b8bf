//! Shared test fixtures: a temporary deployment (plugins, models, cache), windows of synthetic
//! readings, plugin binaries built by `host/build.rs`, and metric lookups.
#![allow(dead_code, reason = "each test module uses a different part of the fixtures")]

pub mod broker;
pub mod onnx;
pub mod servers;

use edgepm::metrics::Metrics;
use edgepm::plugins::{HostOptions, PluginHost};
use edgepm::store::MemoryHistory;
use edgepm::types::{Channel, Window};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BEARING_FEATURES: &str = env!("EDGEPM_WASM_BEARING_FEATURES");
pub const BEARING_SPECTRUM: &str = env!("EDGEPM_WASM_BEARING_SPECTRUM");
pub const MODEL_SCORE: &str = env!("EDGEPM_WASM_MODEL_SCORE");
pub const THRESHOLD_POLICY: &str = env!("EDGEPM_WASM_THRESHOLD_POLICY");
pub const CHAOS_POLICY: &str = env!("EDGEPM_WASM_CHAOS_POLICY");
pub const CHAOS_SCORE: &str = env!("EDGEPM_WASM_CHAOS_SCORE");
pub const CHAOS_PREPROCESS: &str = env!("EDGEPM_WASM_CHAOS_PREPROCESS");
pub const AI4I_FEATURES: &str = env!("EDGEPM_WASM_AI4I_FEATURES");

/// 2025-04-05T10:30:00Z
pub const T0: i64 = 1_743_849_000_000;

pub fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// `bytes` with a custom section appended: the same code, a different content hash, so the host
/// sees a new version. `tag` is readable in the section for debugging.
pub fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"edgepm-test-variant";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

/// The version id the host gives `bytes`: first 12 hex digits of the SHA-256.
pub fn version_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// A deployment in a temporary folder: `plugins/`, `models/` (with the `bearing` logistic model),
/// `cache/`, and `staging/` for write-then-rename deploys.
pub struct Deployment {
    pub root: tempfile::TempDir,
}

impl Deployment {
    pub fn new() -> Deployment {
        let root = tempfile::tempdir().expect("tempdir");
        for d in ["plugins", "models", "cache", "staging"] {
            std::fs::create_dir_all(root.path().join(d)).expect("folder");
        }
        onnx::write_bearing_model(&root.path().join("models"), "bearing");
        Deployment { root }
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.root.path().join("plugins")
    }

    pub fn models_dir(&self) -> PathBuf {
        self.root.path().join("models")
    }

    pub fn options(&self) -> HostOptions {
        let mut o = HostOptions::new(self.plugins_dir(), self.models_dir());
        o.cache_dir = Some(self.root.path().join("cache"));
        o
    }

    pub fn open(&self) -> Arc<PluginHost> {
        PluginHost::open(self.options(), Arc::new(MemoryHistory::default()), Arc::new(Metrics::new()))
            .expect("host starts")
    }

    /// Creates a tenant folder with `tenant.toml` (the model is `bearing` unless `toml` says).
    pub fn add_tenant(&self, tenant: &str, toml: &str) {
        let dir = self.plugins_dir().join(tenant);
        std::fs::create_dir_all(&dir).expect("tenant folder");
        let toml =
            if toml.contains("model =") { toml.to_string() } else { format!("model = \"bearing\"\n{toml}") };
        self.deploy(tenant, "tenant.toml", toml.as_bytes());
    }

    /// Deploys a file into a tenant folder the way a careful operator does: write elsewhere on
    /// the same file system, then rename into place.
    pub fn deploy(&self, tenant: &str, file: &str, bytes: &[u8]) {
        let staged = self.root.path().join("staging").join(format!("{tenant}-{file}"));
        std::fs::write(&staged, bytes).expect("staging write");
        std::fs::rename(&staged, self.plugins_dir().join(tenant).join(file)).expect("rename into place");
    }
}

static TIMING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Taken by every test that asserts a time bound: it runs alone, not competing for the 2 cores
/// with the other tests of this binary (which take [`shared`]).
pub fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    TIMING.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Taken by every test that asserts no time bound.
pub fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls `cond` every 5 ms until it holds or `limit` passes; returns the time it took.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond().then(|| start.elapsed())
}

/// Value of the metric sample whose line starts with `name{` and contains every label pair.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Deterministic pseudo-random numbers in [-1, 1).
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }
    pub fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A window of `n` readings one second apart ending at `end_ms`, 64 vibration samples each.
/// `wear` 0 is a healthy motor (≈1 mm/s RMS); larger values add a growing defect: amplitude,
/// impacts (kurtosis), heat and current.
pub fn window(tenant: &str, device: &str, n: usize, end_ms: i64, wear: f32) -> Window {
    let mut noise = Noise::new(end_ms as u64 ^ device.len() as u64);
    let timestamps_ms: Vec<i64> = (0..n as i64).map(|i| end_ms - (n as i64 - 1 - i) * 1000).collect();
    let mut vibration = Vec::with_capacity(n * 64);
    for _ in 0..n {
        for k in 0..64 {
            let phase = 2.0 * std::f32::consts::PI * 5.0 * k as f32 / 64.0;
            let impact = if wear > 0.0 && k % 16 == 0 { 6.0 * wear } else { 0.0 };
            vibration.push((1.0 + wear) * 1.2 * phase.sin() + 0.3 * noise.next() + impact);
        }
    }
    let temperature = (0..n).map(|i| 65.0 + 8.0 * wear + 0.01 * i as f32 + 0.1 * noise.next()).collect();
    let current = (0..n).map(|_| 11.0 + 1.5 * wear + 0.05 * noise.next()).collect();
    Window {
        tenant: tenant.into(),
        device: device.into(),
        start_ms: timestamps_ms[0],
        end_ms,
        timestamps_ms,
        channels: vec![
            Channel::new("vibration", vibration, 64),
            Channel::new("temperature", temperature, 1),
            Channel::new("current", current, 1),
        ],
        asset: vec![("site".into(), "plant-1".into())],
    }
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}
