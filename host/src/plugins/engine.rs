//! The one wasmtime `Engine` of the host: configuration, the epoch clock that enforces call
//! deadlines, the linkers of the three worlds, and compilation with an on-disk cache.

use super::bindings::{policy, preprocessor, scorer, v0_1};
use super::instance::StoreState;
use super::{CompiledPlugin, LoadError, PluginVersion, WorldPre};
use crate::types::Stage;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, OptLevel};

/// Period of the epoch clock: deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Engine, linkers and compile cache.
pub struct PluginEngine {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    linkers: [Linker<StoreState>; 3],
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// An engine caching compiled components under `cache_dir` (none: compile every time).
    /// `parallel_compilation` lets a compile use every core; off by default on a gateway, where
    /// compiling a new plugin version must not starve the hot path.
    pub fn new(cache_dir: Option<PathBuf>, parallel_compilation: bool) -> anyhow::Result<PluginEngine> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        config.parallel_compilation(parallel_compilation);
        let engine = Engine::new(&config)?;

        let mut linkers = [Linker::new(&engine), Linker::new(&engine), Linker::new(&engine)];
        for linker in &mut linkers {
            // Every WASI p2 interface, over an empty context: components from any toolchain
            // instantiate, and none of them gets files, sockets or environment.
            wasmtime_wasi::p2::add_to_linker_sync(linker)?;
            forbid_blocking(linker)?;
        }
        // Each stage's linker holds the imports of every contract version the host serves.
        let [pre, score, pol] = &mut linkers;
        preprocessor::Preprocessor::add_to_linker::<_, HasSelf<StoreState>>(pre, |s| s)?;
        v0_1::preprocessor::Preprocessor::add_to_linker::<_, HasSelf<StoreState>>(pre, |s| s)?;
        scorer::Scorer::add_to_linker::<_, HasSelf<StoreState>>(score, |s| s)?;
        v0_1::scorer::Scorer::add_to_linker::<_, HasSelf<StoreState>>(score, |s| s)?;
        policy::Policy::add_to_linker::<_, HasSelf<StoreState>>(pol, |s| s)?;
        v0_1::policy::Policy::add_to_linker::<_, HasSelf<StoreState>>(pol, |s| s)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engine.weak());
        std::thread::Builder::new().name("edgepm-epoch".into()).spawn(move || {
            // Ticks follow the clock, not the count of wake-ups: on a loaded machine a 1 ms sleep
            // takes several, and counting wake-ups stretched a 50 ms deadline to 100 ms or more.
            let start = std::time::Instant::now();
            let mut ticked: u128 = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                let Some(engine) = ticking.upgrade() else { break };
                let due = start.elapsed().as_micros() / EPOCH_TICK.as_micros();
                while ticked < due {
                    engine.increment_epoch();
                    ticked += 1;
                }
            }
        })?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(PluginEngine { engine, cache_dir, linkers, ticker_stop })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Epoch ticks for a deadline (rounded up, plus the tick in progress).
    pub fn deadline_ticks(deadline: Duration) -> u64 {
        deadline.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64 + 1
    }

    /// Compiles `bytes` (or loads its cached compilation) and finds which world it implements.
    /// `expect` rejects a component of another stage.
    pub fn load(
        &self,
        bytes: &[u8],
        source: &str,
        expect: Option<Stage>,
    ) -> Result<CompiledPlugin, LoadError> {
        check_header(bytes)?;
        let sha = hex(&Sha256::digest(bytes));
        let component = self.compile(bytes, &sha)?;
        let pre = self.world_of(&component)?;
        if let Some(stage) = expect
            && pre.stage() != stage
        {
            return Err(LoadError::WrongStage { expected: stage, found: pre.stage() });
        }
        let version = PluginVersion { id: sha[..12].to_string(), source: source.to_string() };
        Ok(CompiledPlugin { version, component, pre })
    }

    fn compile(&self, bytes: &[u8], sha: &str) -> Result<Component, LoadError> {
        let compile_err = |e: wasmtime::Error| LoadError::Compile(format!("{e:#}"));
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes).map_err(compile_err);
        };
        let path = dir.join(self.engine_key()).join(format!("{sha}.cwasm"));
        if path.exists() {
            // SAFETY: files in the cache are written only by `store_artifact` below, from this
            // engine's own `precompile_component`, into a folder keyed by the engine's
            // compatibility hash; a foreign or stale file fails wasmtime's own header checks.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "Discarding unusable compiled plugin");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let artifact = self.engine.precompile_component(bytes).map_err(compile_err)?;
        if let Err(e) = store_artifact(&path, &artifact) {
            tracing::warn!(path = %path.display(), error = %e, "Cannot cache compiled plugin");
        }
        // SAFETY: `artifact` was produced by this engine a moment ago.
        unsafe { Component::deserialize(&self.engine, &artifact) }.map_err(compile_err)
    }

    /// Folder name for this engine's artifacts: wasmtime version plus compatibility hash.
    fn engine_key(&self) -> String {
        let mut h = std::hash::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("wasmtime-{}-{:016x}", wasmtime_version(), h.finish())
    }

    fn world_of(&self, component: &Component) -> Result<WorldPre, LoadError> {
        let [pre, score, pol] = &self.linkers;
        let mut reasons = Vec::new();
        // The exports are type-checked: a 0.1.0 preprocessor's window (channels without a sample
        // rate or unit) is not the current one. Scorers and policies of both versions export the
        // same types and are called through the current bindings.
        match pre.instantiate_pre(component) {
            Err(e) => reasons.push(format!("preprocessor: {e:#}")),
            Ok(instance_pre) => match preprocessor::PreprocessorPre::new(instance_pre.clone()) {
                Ok(p) => return Ok(WorldPre::Preprocessor(p)),
                Err(e) => match v0_1::preprocessor::PreprocessorPre::new(instance_pre) {
                    Ok(p) => return Ok(WorldPre::PreprocessorV0_1(p)),
                    Err(_) => reasons.push(format!("preprocessor: {e:#}")),
                },
            },
        }
        match score.instantiate_pre(component).and_then(scorer::ScorerPre::new) {
            Ok(p) => return Ok(WorldPre::Scorer(p)),
            Err(e) => reasons.push(format!("scorer: {e:#}")),
        }
        match pol.instantiate_pre(component).and_then(policy::PolicyPre::new) {
            Ok(p) => return Ok(WorldPre::Policy(p)),
            Err(e) => reasons.push(format!("policy: {e:#}")),
        }
        Err(LoadError::NoWorld { reasons })
    }
}

/// The WASI p2 poll interface as `add_to_linker_sync` registers it (wasmtime-wasi 48).
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

/// Replaces the two WASI functions that can wait — `poll` and `pollable.block`, through which
/// every blocking p2 call goes (sleeps, clock subscriptions, blocking stream reads and writes) —
/// with versions that return at once when a pollable is ready and otherwise trap. A plugin can
/// then only burn CPU, which the epoch deadline stops: no call outlives its deadline by more than
/// a tick, whatever the plugin does inside WASI. (With the empty context every stream a plugin
/// can reach — closed stdin, discarding stdout/stderr — is always ready, so ordinary output and
/// componentize-py's start-up are unaffected.)
fn forbid_blocking(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    use wasmtime::StoreContextMut;
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    use wasmtime_wasi::p2::bindings::sync::io::poll::HostPollable;

    fn is_ready(state: &mut StoreState, p: &Resource<DynPollable>) -> wasmtime::Result<bool> {
        HostPollable::ready(state.table_mut(), Resource::new_borrow(p.rep()))
    }
    // Without shadowing, redefining an existing function fails: that it does proves the name is
    // the one WASI registered (after a wasmtime upgrade a changed version would otherwise add an
    // unused instance and leave the blocking functions in place).
    let probe =
        linker.instance(WASI_POLL)?.func_wrap("poll", |_: StoreContextMut<'_, StoreState>, (): ()| Ok(()));
    if probe.is_ok() {
        anyhow::bail!("host bug: {WASI_POLL} is not the WASI poll interface of this wasmtime-wasi");
    }
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL)?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, StoreState>, (p,): (Resource<DynPollable>,)| {
            let state = store.data_mut();
            if is_ready(state, &p)? {
                return Ok(());
            }
            state.blocked = Some("wasi:io/poll pollable.block");
            wasmtime::bail!("{}", super::instance::BLOCKED_MESSAGE)
        },
    )?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, StoreState>, (list,): (Vec<Resource<DynPollable>>,)| {
            let state = store.data_mut();
            if list.is_empty() {
                wasmtime::bail!("poll: empty list of pollables");
            }
            let mut ready = Vec::new();
            for (i, p) in list.iter().enumerate() {
                if is_ready(state, p)? {
                    ready.push(i as u32);
                }
            }
            if ready.is_empty() {
                state.blocked = Some("wasi:io/poll poll");
                wasmtime::bail!("{}", super::instance::BLOCKED_MESSAGE)
            }
            Ok((ready,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn wasmtime_version() -> &'static str {
    // The exact version pinned in Cargo.toml; artifacts of another version are not loadable.
    "48.0.8"
}

fn store_artifact(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Never overwrite in place: a running instance may have the old file mapped.
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, artifact)?;
    std::fs::rename(&tmp, path)
}

/// Tells apart "not WebAssembly", "a core module" and "a component" from the preamble.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(LoadError::CoreModule),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        _ => Err(LoadError::NotWasm),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
