//! Tenants and the plugin versions serving them: loading a tenant folder, verifying a new
//! version (compile, world, smoke call), swapping it in, rejecting it, quarantining it.

use super::engine::PluginEngine;
use super::instance::{CallContext, StagePlugin, TRAP_SPAN_CALLS};
use super::{CallError, CompiledPlugin, LoadError, builtin};
use crate::config::TenantConfig;
use crate::metrics::{LoadResult, Metrics};
use crate::model::ModelRegistry;
use crate::store::History;
use crate::types::{Channel, Features, Score, Stage, Window};
use arc_swap::ArcSwap;
use sha2::Digest as _;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tracing::{debug, error, info, warn};

/// Traps within the last [`TRAP_SPAN_CALLS`] calls after which a plugin version is quarantined,
/// when not told otherwise.
pub const DEFAULT_QUARANTINE_AFTER: u32 = 3;
/// Window size used when a preprocessor cannot tell its own (the reference plugin's default).
const FALLBACK_WINDOW_SIZE: u32 = 32;
/// Largest window a smoke call builds (a plugin may ask for more readings than that).
const SMOKE_MAX_READINGS: u32 = 1024;

/// Where the host finds tenants and models, and how it treats plugins.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// `<plugins_dir>/<tenant>/{tenant.toml,preprocess.wasm,score.wasm,policy.wasm}`.
    pub plugins_dir: PathBuf,
    /// `<models_dir>/<model>/{metadata.json,...}`.
    pub models_dir: PathBuf,
    /// Compiled components, keyed by content hash and engine; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Traps within the last 100 calls after which a version is quarantined (default 3).
    pub quarantine_after: u32,
    /// Let one compilation use every core (default off: keep the hot path's CPU).
    pub parallel_compilation: bool,
    /// Where the versions refused or quarantined per tenant are kept, so that a restart (after a
    /// crash the version may have caused) does not load them again; `None`: kept in memory only.
    pub refused_file: Option<PathBuf>,
}

impl HostOptions {
    pub fn new(plugins_dir: impl Into<PathBuf>, models_dir: impl Into<PathBuf>) -> HostOptions {
        HostOptions {
            plugins_dir: plugins_dir.into(),
            models_dir: models_dir.into(),
            cache_dir: None,
            quarantine_after: DEFAULT_QUARANTINE_AFTER,
            parallel_compilation: false,
            refused_file: None,
        }
    }
}

/// An immutable snapshot of a tenant's three stages. A window runs entirely on one snapshot.
pub struct TenantPipeline {
    pub name: String,
    pub config: Arc<TenantConfig>,
    stages: [Arc<StagePlugin>; 3],
    /// Readings per window, from the preprocessor.
    pub window_size: u32,
}

impl TenantPipeline {
    pub fn stage(&self, stage: Stage) -> &StagePlugin {
        &self.stages[stage.index()]
    }

    /// Version ids of preprocess, score and policy.
    pub fn versions(&self) -> [String; 3] {
        Stage::ALL.map(|s| self.stage(s).version().to_string())
    }
}

struct TenantSlot {
    current: ArcSwap<TenantPipeline>,
    /// Per stage, the version that served before the current one: restored on quarantine.
    previous: Mutex<[Option<Arc<CompiledPlugin>>; 3]>,
    /// Versions rejected or quarantined for this tenant; the same bytes are not tried again.
    refused: Mutex<HashSet<String>>,
}

/// The plugin host: engine, built-in defaults, tenants.
pub struct PluginHost {
    engine: PluginEngine,
    builtins: [Arc<CompiledPlugin>; 3],
    options: HostOptions,
    models: Arc<ModelRegistry>,
    history: Arc<dyn History>,
    metrics: Arc<Metrics>,
    tenants: RwLock<BTreeMap<String, Arc<TenantSlot>>>,
    /// Serialises reloads and quarantines; the hot path never takes it.
    reload_lock: Mutex<()>,
    /// Plugin versions rejected since start.
    rejected: AtomicU64,
    /// Recent loads, rejections and quarantines, newest last.
    events: Mutex<VecDeque<PluginEvent>>,
    /// Versions refused per tenant before this start ([`HostOptions::refused_file`]).
    refused_before: BTreeMap<String, HashSet<String>>,
    /// Linear memory held by each tenant's instances, shared by all of them across reloads.
    memory: Mutex<BTreeMap<String, Arc<std::sync::atomic::AtomicUsize>>>,
}

/// Reads the refused versions kept by an earlier run; a missing or unreadable file is none.
fn read_refused(path: Option<&std::path::Path>) -> BTreeMap<String, HashSet<String>> {
    let Some(path) = path else { return BTreeMap::new() };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(path = %path.display(), error = %e, "Ignoring an unreadable list of refused plugin versions");
            BTreeMap::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "Cannot read the refused plugin versions");
            BTreeMap::new()
        }
    }
}

/// Recent plugin events kept for `PluginHost::events`.
const EVENTS_KEPT: usize = 256;

/// Something that happened to a tenant's plugin versions, for operators (health, dashboard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEvent {
    pub tenant: String,
    /// The stage concerned, or `None` for the tenant's `tenant.toml`.
    pub stage: Option<Stage>,
    pub kind: PluginEventKind,
    /// Version id concerned (the rejected or quarantined one, or the one now live).
    pub version: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginEventKind {
    Loaded,
    Rejected,
    Quarantined,
}

impl PluginHost {
    /// Starts the engine, compiles the built-in plugins and loads every tenant folder.
    pub fn open(
        options: HostOptions,
        history: Arc<dyn History>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<PluginHost>> {
        use anyhow::Context as _;
        let engine = PluginEngine::new(options.cache_dir.clone(), options.parallel_compilation)?;
        let builtin = |stage: Stage| -> anyhow::Result<Arc<CompiledPlugin>> {
            let c = engine
                .load(builtin::bytes(stage), builtin::source(stage), Some(stage))
                .with_context(|| format!("loading the built-in {stage} plugin"))?;
            Ok(Arc::new(c))
        };
        let builtins = [builtin(Stage::Preprocess)?, builtin(Stage::Score)?, builtin(Stage::Policy)?];
        std::fs::create_dir_all(&options.plugins_dir)
            .with_context(|| format!("creating plugins folder {}", options.plugins_dir.display()))?;
        let refused_before = read_refused(options.refused_file.as_deref());
        let host = Arc::new(PluginHost {
            engine,
            builtins,
            models: Arc::new(ModelRegistry::new(&options.models_dir)),
            options,
            history,
            metrics,
            tenants: RwLock::new(BTreeMap::new()),
            reload_lock: Mutex::new(()),
            rejected: AtomicU64::new(0),
            events: Mutex::new(VecDeque::new()),
            refused_before,
            memory: Mutex::new(BTreeMap::new()),
        });
        for name in host.tenant_folders()? {
            host.reload_tenant(&name);
        }
        Ok(host)
    }

    pub fn options(&self) -> &HostOptions {
        &self.options
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn history(&self) -> &Arc<dyn History> {
        &self.history
    }

    pub fn models(&self) -> &Arc<ModelRegistry> {
        &self.models
    }

    /// Plugin versions rejected since start (failed to compile, wrong world, failed smoke call).
    pub fn rejected_versions(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Recent plugin events of every tenant, oldest first.
    pub fn events(&self) -> Vec<PluginEvent> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    fn event(
        &self,
        tenant: &str,
        stage: Option<Stage>,
        kind: PluginEventKind,
        version: &str,
        message: String,
    ) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(PluginEvent {
            tenant: tenant.to_string(),
            stage,
            kind,
            version: version.to_string(),
            message,
        });
    }

    /// The current snapshot of `tenant`'s pipeline.
    pub fn tenant(&self, tenant: &str) -> Option<Arc<TenantPipeline>> {
        self.tenants.read().unwrap_or_else(PoisonError::into_inner).get(tenant).map(|s| s.current.load_full())
    }

    /// Names of the tenants being served.
    pub fn tenant_names(&self) -> Vec<String> {
        self.tenants.read().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    fn tenant_folders(&self) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.options.plugins_dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir()
                && let Some(name) = entry.file_name().to_str()
                && is_tenant_name(name)
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Brings `tenant` in line with its folder: adds it, retires it, or swaps in what changed.
    /// A version that fails to load keeps the current one (or the built-in default) serving.
    pub fn reload_tenant(&self, tenant: &str) {
        let _reloading = self.reload_lock.lock().unwrap_or_else(PoisonError::into_inner);
        if !is_tenant_name(tenant) {
            warn!(folder = tenant, "Ignoring plugin folder: tenant names are letters, digits, '-' and '_'");
            return;
        }
        let dir = self.options.plugins_dir.join(tenant);
        if !dir.is_dir() {
            if self.tenants.write().unwrap_or_else(PoisonError::into_inner).remove(tenant).is_some() {
                info!(tenant, "Tenant retired: its plugin folder is gone");
            }
            return;
        }
        let slot = self.tenants.read().unwrap_or_else(PoisonError::into_inner).get(tenant).cloned();
        let current = slot.as_ref().map(|s| s.current.load_full());
        let config = match TenantConfig::load(&dir.join("tenant.toml")) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                self.event(tenant, None, PluginEventKind::Rejected, "-", e.clone());
                let serving = if current.is_some() {
                    "the previous configuration keeps serving"
                } else {
                    "the tenant is not served until it is fixed"
                };
                error!(tenant, error = %e, "Rejected tenant.toml; {serving}");
                return;
            }
        };
        // Load the tenant's models here, on the reload thread: a first load inside a plugin call
        // (a large tree model takes tens of milliseconds to parse) would count against the
        // call's deadline. A model that does not load is reported now and again on first use.
        for model in std::iter::once(&config.model).chain(&config.models) {
            if let Err(e) = self.models.get(model) {
                warn!(tenant, model = %model, error = %e, "A model of the tenant does not load");
            }
        }
        let refused: HashSet<String> = match slot.as_ref() {
            Some(s) => s.refused.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            None => self.refused_before.get(tenant).cloned().unwrap_or_default(),
        };

        // Pick a compiled version per stage; remember which ones are new.
        let mut chosen: Vec<(Arc<CompiledPlugin>, bool)> = Vec::with_capacity(3);
        let mut newly_refused = Vec::new();
        for stage in Stage::ALL {
            let serving = current.as_ref().map(|p| p.stage(stage).compiled.clone());
            let fallback = serving.clone().unwrap_or_else(|| self.builtins[stage.index()].clone());
            let path = dir.join(stage.file_name());
            if !path.exists() {
                let builtin = self.builtins[stage.index()].clone();
                let changed = serving.as_ref().is_none_or(|s| s.version != builtin.version);
                chosen.push((builtin, changed));
                continue;
            }
            match self.compile_file(&path, stage, &refused, serving.as_deref()) {
                Ok(Some(new)) => chosen.push((Arc::new(new), true)),
                Ok(None) => chosen.push((fallback, false)),
                Err((id, e)) => {
                    self.reject(tenant, stage, &path, id.as_deref(), &e);
                    newly_refused.extend(id);
                    chosen.push((fallback.clone(), serving.is_none()));
                }
            }
        }

        let config_changed = current.as_ref().is_none_or(|p| p.config != config);
        if !config_changed && chosen.iter().all(|(_, changed)| !changed) {
            self.remember_refused(slot.as_deref(), newly_refused);
            return;
        }

        // Build the candidate snapshot, smoke-testing each new version under the tenant's config.
        let mut stages: Vec<Arc<StagePlugin>> = Vec::with_capacity(3);
        let mut smoke_features = Features::default();
        for (stage, (compiled, is_new)) in Stage::ALL.into_iter().zip(chosen) {
            let mut plugin = self.stage_plugin(tenant, stage, compiled, &config);
            let file_version = is_new && !plugin.compiled.version.source.starts_with("builtin:");
            if file_version && let Err(e) = smoke(&plugin, &mut smoke_features) {
                let path = dir.join(stage.file_name());
                self.reject(tenant, stage, &path, Some(plugin.version()), &LoadError::Smoke(e));
                newly_refused.push(plugin.compiled.version.id.clone());
                let fallback = current
                    .as_ref()
                    .map(|p| p.stage(stage).compiled.clone())
                    .unwrap_or_else(|| self.builtins[stage.index()].clone());
                plugin = self.stage_plugin(tenant, stage, fallback, &config);
            } else if stage == Stage::Preprocess {
                // Features for the next stages' smoke calls; failures here are not the point.
                let _ = smoke(&plugin, &mut smoke_features);
            }
            stages.push(Arc::new(plugin));
        }
        let window_size = match stages[0].window_size() {
            Ok(n) if n >= 1 => n,
            other => {
                let keep = current.as_ref().map_or(FALLBACK_WINDOW_SIZE, |p| p.window_size);
                warn!(tenant, result = ?other, window_size = keep, "Preprocessor gave no usable window size");
                keep
            }
        };
        let stages: [Arc<StagePlugin>; 3] = match stages.try_into() {
            Ok(s) => s,
            Err(_) => return,
        };
        let pipeline = Arc::new(TenantPipeline {
            name: tenant.to_string(),
            config: config.clone(),
            stages,
            window_size,
        });

        // Swap.
        for stage in Stage::ALL {
            let new = pipeline.stage(stage);
            let old = current.as_ref().map(|p| p.stage(stage));
            if old.is_none_or(|o| o.version() != new.version()) {
                self.metrics.plugin_loaded(tenant, stage, LoadResult::Loaded);
                self.event(
                    tenant,
                    Some(stage),
                    PluginEventKind::Loaded,
                    new.version(),
                    new.compiled.version.source.clone(),
                );
                info!(tenant, %stage, version = new.version(), source = %new.compiled.version.source,
                    previous = old.map(|o| o.version()).unwrap_or("-"), "Plugin version live");
            }
        }
        match slot {
            Some(slot) => {
                if let Some(old) = &current {
                    let mut previous = slot.previous.lock().unwrap_or_else(PoisonError::into_inner);
                    for stage in Stage::ALL {
                        if old.stage(stage).version() != pipeline.stage(stage).version() {
                            previous[stage.index()] = Some(old.stage(stage).compiled.clone());
                        }
                    }
                }
                slot.current.store(pipeline);
                self.remember_refused(Some(&slot), newly_refused);
            }
            None => {
                let slot = Arc::new(TenantSlot {
                    current: ArcSwap::new(pipeline),
                    previous: Mutex::new([None, None, None]),
                    refused: Mutex::new(refused.into_iter().chain(newly_refused).collect()),
                });
                self.tenants.write().unwrap_or_else(PoisonError::into_inner).insert(tenant.to_string(), slot);
                self.save_refused();
                info!(tenant, "Tenant added");
            }
        }
    }

    /// Compiles `path` unless it is the version already serving (`Ok(None)`) or was refused
    /// before. On failure returns the content id (when known) and the reason.
    fn compile_file(
        &self,
        path: &std::path::Path,
        stage: Stage,
        refused: &HashSet<String>,
        serving: Option<&CompiledPlugin>,
    ) -> Result<Option<CompiledPlugin>, (Option<String>, LoadError)> {
        let bytes = std::fs::read(path)
            .map_err(|e| (None, LoadError::Io { path: path.display().to_string(), source: e }))?;
        let id = super::engine::hex(&sha2::Sha256::digest(&bytes))[..12].to_string();
        if serving.is_some_and(|s| s.version.id == id) {
            return Ok(None);
        }
        if refused.contains(&id) {
            if serving.is_none() {
                warn!(path = %path.display(), version = %id,
                    "Not loading a version refused or quarantined before (deploy a changed file to retry)");
            }
            debug!(path = %path.display(), version = %id, "Skipping a version refused before");
            return Err((None, LoadError::Quarantined(id)));
        }
        self.engine
            .load(&bytes, &path.display().to_string(), Some(stage))
            .map(Some)
            .map_err(|e| (Some(id), e))
    }

    fn reject(
        &self,
        tenant: &str,
        stage: Stage,
        path: &std::path::Path,
        version: Option<&str>,
        e: &LoadError,
    ) {
        if matches!(e, LoadError::Quarantined(_)) {
            return;
        }
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let message = format!("{}: {e}", path.display());
        self.event(tenant, Some(stage), PluginEventKind::Rejected, version.unwrap_or("-"), message);
        self.metrics.plugin_loaded(tenant, stage, LoadResult::Rejected);
        error!(tenant, %stage, path = %path.display(), error = %e,
            "Rejected plugin version; the current version keeps serving");
    }

    fn remember_refused(&self, slot: Option<&TenantSlot>, ids: Vec<String>) {
        if let Some(slot) = slot
            && !ids.is_empty()
        {
            slot.refused.lock().unwrap_or_else(PoisonError::into_inner).extend(ids);
            self.save_refused();
        }
    }

    /// Writes every tenant's refused versions to [`HostOptions::refused_file`] (atomically: a
    /// temporary file renamed into place). Called with the reload lock held.
    fn save_refused(&self) {
        let Some(path) = &self.options.refused_file else { return };
        let mut all: BTreeMap<String, std::collections::BTreeSet<String>> =
            self.refused_before.iter().map(|(t, ids)| (t.clone(), ids.iter().cloned().collect())).collect();
        for (tenant, slot) in self.tenants.read().unwrap_or_else(PoisonError::into_inner).iter() {
            let ids = slot.refused.lock().unwrap_or_else(PoisonError::into_inner);
            all.entry(tenant.clone()).or_default().extend(ids.iter().cloned());
        }
        all.retain(|_, ids| !ids.is_empty());
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&all)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            warn!(path = %path.display(), error = %e, "Cannot save the refused plugin versions; a restart may load them again");
        }
    }

    fn stage_plugin(
        &self,
        tenant: &str,
        stage: Stage,
        compiled: Arc<CompiledPlugin>,
        config: &Arc<TenantConfig>,
    ) -> StagePlugin {
        let ctx = Arc::new(CallContext {
            tenant: tenant.to_string(),
            stage,
            version: compiled.version.id.clone(),
            config: config.clone(),
            models: self.models.clone(),
            history: self.history.clone(),
            memory: self
                .memory
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(tenant.to_string())
                .or_default()
                .clone(),
        });
        StagePlugin::new(compiled, ctx, self.metrics.stage(tenant, stage))
    }

    /// Called after a trap of `pipeline`'s `stage`: once the version has trapped
    /// `quarantine_after` times within its last [`TRAP_SPAN_CALLS`] calls it is replaced by the
    /// version it replaced (or the built-in default) and refused until a changed file is deployed.
    pub fn report_trap(&self, pipeline: &TenantPipeline, stage: Stage) {
        let plugin = pipeline.stage(stage);
        if plugin.recent_traps() < self.options.quarantine_after as usize {
            return;
        }
        let _reloading = self.reload_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) =
            self.tenants.read().unwrap_or_else(PoisonError::into_inner).get(&pipeline.name).cloned()
        else {
            return;
        };
        let current = slot.current.load_full();
        if current.stage(stage).version() != plugin.version() {
            return; // already replaced
        }
        let builtin = &self.builtins[stage.index()];
        let replacement = slot.previous.lock().unwrap_or_else(PoisonError::into_inner)[stage.index()]
            .take()
            .unwrap_or_else(|| builtin.clone());
        if replacement.version == plugin.compiled.version {
            error!(tenant = %pipeline.name, %stage, version = plugin.version(),
                "Built-in plugin keeps trapping; nothing to fall back to");
            return;
        }
        slot.refused.lock().unwrap_or_else(PoisonError::into_inner).insert(plugin.version().to_string());
        self.save_refused();
        let mut stages = current.stages.clone();
        stages[stage.index()] =
            Arc::new(self.stage_plugin(&pipeline.name, stage, replacement, &current.config));
        let window_size = match stage {
            Stage::Preprocess => stages[0].window_size().unwrap_or(current.window_size),
            _ => current.window_size,
        };
        let restored = stages[stage.index()].version().to_string();
        slot.current.store(Arc::new(TenantPipeline {
            name: current.name.clone(),
            config: current.config.clone(),
            stages,
            window_size,
        }));
        self.metrics.plugin_quarantined(&pipeline.name, stage);
        let message = format!(
            "{} traps in its last {TRAP_SPAN_CALLS} calls; {restored} restored",
            plugin.recent_traps()
        );
        self.event(&pipeline.name, Some(stage), PluginEventKind::Quarantined, plugin.version(), message);
        error!(tenant = %pipeline.name, %stage, version = plugin.version(), traps = plugin.recent_traps(),
            restored = %restored, "Quarantined plugin version after repeated traps");
    }
}

/// Tenant names become MQTT topic levels and folder names: keep them plain.
pub fn is_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A benign call of `plugin` on synthetic input: it must not trap. An error result is accepted
/// (the synthetic input may not suit the plugin); a preprocessor's features feed the next smoke.
fn smoke(plugin: &StagePlugin, features: &mut Features) -> Result<(), CallError> {
    let ok_unless_trap = |r: Result<(), CallError>| match r {
        Err(e) if e.is_trap() => Err(e),
        _ => Ok(()),
    };
    match plugin.stage() {
        Stage::Preprocess => {
            let n = plugin.window_size()?.clamp(1, SMOKE_MAX_READINGS);
            let r = plugin.features(smoke_window(n)).map(|f| *features = f);
            ok_unless_trap(r)
        }
        Stage::Score => ok_unless_trap(plugin.score(features, None).map(|_| ())),
        Stage::Policy => {
            let score = Score { probability: 0.5, model: "smoke-test".into(), contributions: Vec::new() };
            ok_unless_trap(plugin.decide("smoke-test", 0, features, &score).map(|_| ()))
        }
    }
}

fn smoke_window(readings: u32) -> Window {
    let n = readings as usize;
    let timestamps_ms: Vec<i64> = (0..n as i64).map(|i| i * 1000).collect();
    let vibration = (0..n * 64).map(|i| ((i as f32) * 0.7).sin()).collect();
    Window {
        tenant: "smoke-test".into(),
        device: "smoke-test".into(),
        start_ms: 0,
        end_ms: timestamps_ms.last().copied().unwrap_or(0),
        timestamps_ms,
        channels: vec![
            Channel::new("vibration", vibration, 64),
            Channel::new("temperature", vec![60.0; n], 1),
            Channel::new("current", vec![10.0; n], 1),
        ],
        asset: Vec::new(),
    }
}
