//! Running plugin calls: a store per instance with its memory cap and deadline, a small pool of
//! warm instances per (tenant, stage, version), and the classification of failures.
//!
//! Plugins keep no state between calls by contract, but instantiating per call costs tens of
//! microseconds, more than a feature computation. So an instance is reused for consecutive calls
//! and thrown away after any trap and after [`RECYCLE_AFTER_CALLS`] calls; a plugin that relies on
//! its memory surviving is broken by design and will be found out by replay.

use super::bindings::{policy, preprocessor, scorer, v0_1};
use super::engine::PluginEngine;
use super::{CallError, CompiledPlugin, WorldPre, validate};
use crate::config::{Limits, TenantConfig};
use crate::metrics::{CallOutcome, StageMetrics};
use crate::model::{ModelRegistry, Prefetched};
use crate::store::History;
use crate::types::{self, Stage};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Calls after which a warm instance is replaced by a fresh one.
pub const RECYCLE_AFTER_CALLS: u32 = 10_000;
/// Warm instances kept per plugin (more calls at once instantiate extra, short-lived ones).
const POOL_SIZE: usize = 4;
/// Traps are counted over this many most recent calls: a version that traps on one device's
/// windows while serving others is still caught.
pub const TRAP_SPAN_CALLS: u64 = 100;

/// What the host imports of a plugin see: its tenant, configuration, models and history.
pub struct CallContext {
    pub tenant: String,
    pub stage: Stage,
    pub version: String,
    pub config: Arc<TenantConfig>,
    pub models: Arc<ModelRegistry>,
    pub history: Arc<dyn History>,
    /// Bytes of linear memory held by all of the tenant's instances (`[limits] tenant_memory_mib`).
    pub memory: Arc<AtomicUsize>,
}

/// Enforces the memory caps — the instance's own and the tenant's, shared by all of its
/// instances — and remembers which was hit, to tell an out-of-memory trap from others.
pub(crate) struct Limiter {
    memory_cap: usize,
    tenant_cap: usize,
    /// Bytes of linear memory all the tenant's live instances hold.
    tenant_used: Arc<AtomicUsize>,
    /// This instance's share of `tenant_used`, given back when it is dropped.
    own: usize,
    /// Which cap was hit.
    hit: Option<CallError>,
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.tenant_used.fetch_sub(self.own, Ordering::Relaxed);
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.hit = Some(CallError::MemoryCap((self.memory_cap >> 20) as u64));
            wasmtime::bail!(
                "memory cap of {} MiB exceeded (asked for {desired} bytes)",
                self.memory_cap >> 20
            );
        }
        let grow = desired.saturating_sub(current);
        let total = self.tenant_used.fetch_add(grow, Ordering::Relaxed) + grow;
        if total > self.tenant_cap {
            self.tenant_used.fetch_sub(grow, Ordering::Relaxed);
            self.hit = Some(CallError::TenantMemoryCap((self.tenant_cap >> 20) as u64));
            wasmtime::bail!(
                "the tenant's memory cap of {} MiB for all its instances exceeded",
                self.tenant_cap >> 20
            );
        }
        self.own += grow;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real plugin.
        Ok(desired <= 1_000_000)
    }
}

/// What a plugin that tried to wait inside WASI is told (the call then fails as
/// [`CallError::Blocked`]).
pub const BLOCKED_MESSAGE: &str =
    "plugins may not block: this WASI call would wait (sleep, poll, blocking read or write)";
/// Resources (pollables, streams, ...) a plugin instance may hold at once.
const RESOURCE_TABLE_MAX: usize = 1024;

/// Data of a store: WASI (empty context), limits, and the call context.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// Set by the non-blocking WASI poll when the plugin tried to wait: which call.
    pub(crate) blocked: Option<&'static str>,
    /// Set by a host import that refused what the plugin asked (e.g. another device's history).
    pub(crate) violation: Option<String>,
    /// The device whose window the current call is about (`history` may only ask about it).
    pub(crate) device: Option<String>,
    /// The window's asset record's `baseline_since`, during a preprocessor call.
    pub(crate) baseline_since: Option<i64>,
    pub(crate) ctx: Arc<CallContext>,
    pub(crate) logs_left: u32,
    /// A probability computed in a batch for the window being scored (see
    /// [`crate::model::Prefetched`]); set for one `score` call only.
    pub(crate) prefetched: Option<Prefetched>,
}

impl StoreState {
    pub(crate) fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

enum Bindings {
    Preprocessor(preprocessor::Preprocessor),
    /// A preprocessor of `edgepm:plugin@0.1.0` (channels without a sample rate or unit).
    PreprocessorV0_1(v0_1::preprocessor::Preprocessor),
    Scorer(scorer::Scorer),
    Policy(policy::Policy),
}

struct Warm {
    store: Store<StoreState>,
    bindings: Bindings,
    calls: u32,
}

/// One plugin version serving one tenant's stage.
pub struct StagePlugin {
    pub compiled: Arc<CompiledPlugin>,
    ctx: Arc<CallContext>,
    limits: Limits,
    deadline_ticks: u64,
    pool: Mutex<Vec<Warm>>,
    calls: AtomicU64,
    /// Call numbers of the traps among the last [`TRAP_SPAN_CALLS`] calls.
    recent_traps: Mutex<VecDeque<u64>>,
    metrics: StageMetrics,
}

impl StagePlugin {
    pub fn new(compiled: Arc<CompiledPlugin>, ctx: Arc<CallContext>, metrics: StageMetrics) -> StagePlugin {
        let limits = ctx.config.limits;
        StagePlugin {
            compiled,
            ctx,
            deadline_ticks: PluginEngine::deadline_ticks(limits.deadline()),
            limits,
            pool: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            recent_traps: Mutex::new(VecDeque::new()),
            metrics,
        }
    }

    pub fn stage(&self) -> Stage {
        self.compiled.pre.stage()
    }

    pub fn version(&self) -> &str {
        &self.compiled.version.id
    }

    /// Traps among the last [`TRAP_SPAN_CALLS`] calls.
    pub fn recent_traps(&self) -> usize {
        let now = self.calls.load(Ordering::Relaxed);
        let mut traps = self.recent_traps.lock().unwrap_or_else(PoisonError::into_inner);
        while traps.front().is_some_and(|&n| n + TRAP_SPAN_CALLS <= now) {
            traps.pop_front();
        }
        traps.len()
    }

    /// `window-size` of a preprocessor, within `[limits] max_window`.
    pub fn window_size(&self) -> Result<u32, CallError> {
        let limits = self.limits.output();
        self.call(
            None,
            |store, b| match b {
                Bindings::Preprocessor(p) => p.call_window_size(store).map(Ok),
                Bindings::PreprocessorV0_1(p) => p.call_window_size(store).map(Ok),
                _ => Ok(Err(wrong_stage(Stage::Preprocess))),
            },
            |&n| validate::window_size(n, &limits).map(drop),
        )
    }

    /// `features` of a preprocessor. Takes the window by value: its sample vectors move into the
    /// call instead of being copied.
    pub fn features(&self, mut window: types::Window) -> Result<types::Features, CallError> {
        let device = window.device.clone();
        window.describe_channels_from_asset();
        let since = window.baseline_since();
        self.call(
            Some(device),
            |store, b| match b {
                Bindings::Preprocessor(p) => {
                    store.data_mut().baseline_since = since;
                    let result = p.call_features(&mut *store, &window.into()).map(|r| r.map(Into::into));
                    store.data_mut().baseline_since = None;
                    result
                }
                Bindings::PreprocessorV0_1(p) => {
                    p.call_features(store, &window.into()).map(|r| r.map(Into::into))
                }
                _ => Ok(Err(wrong_stage(Stage::Preprocess))),
            },
            |f| validate::features(f, &self.limits.output()),
        )
    }

    /// `score` of a scorer. `prefetched` is the probability the batch computed for these
    /// features, which the `predict` import serves when the scorer asks for exactly that.
    pub fn score(
        &self,
        features: &types::Features,
        prefetched: Option<Prefetched>,
    ) -> Result<types::Score, CallError> {
        let f = features.into();
        self.call(
            None,
            |store, b| match b {
                Bindings::Scorer(s) => {
                    store.data_mut().prefetched = prefetched;
                    let result = s.call_score(&mut *store, &f).map(|r| r.map(Into::into));
                    store.data_mut().prefetched = None;
                    result
                }
                _ => Ok(Err(wrong_stage(Stage::Score))),
            },
            |s| validate::score(s, &self.limits.output()),
        )
        .map(|mut s| {
            // The contract promises policies (and the store) the largest contributions first.
            s.order_contributions();
            s
        })
    }

    /// `decide` of a policy.
    pub fn decide(
        &self,
        device: &str,
        ts_ms: i64,
        features: &types::Features,
        score: &types::Score,
    ) -> Result<types::Decision, CallError> {
        let (f, s) = (features.into(), score.into());
        self.call(
            Some(device.to_string()),
            |store, b| match b {
                Bindings::Policy(p) => p.call_decide(store, device, ts_ms, &f, &s).map(|r| r.map(Into::into)),
                _ => Ok(Err(wrong_stage(Stage::Policy))),
            },
            validate::decision,
        )
    }

    /// Runs `f` on a warm (or new) instance under the deadline, then `check`s what it returned.
    /// `device` is the device the call is about: the only one whose history it may ask about.
    fn call<R>(
        &self,
        device: Option<String>,
        f: impl FnOnce(&mut Store<StoreState>, &Bindings) -> wasmtime::Result<Result<R, String>>,
        check: impl FnOnce(&R) -> Result<(), String>,
    ) -> Result<R, CallError> {
        let started = Instant::now();
        let warm = self.pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let result = match warm.map_or_else(|| self.instantiate(), Ok) {
            Err(e) => Err(e),
            Ok(mut warm) => {
                warm.store.set_epoch_deadline(self.deadline_ticks);
                let state = warm.store.data_mut();
                state.logs_left = super::bindings::LOG_LINES_PER_CALL;
                state.device = device;
                match f(&mut warm.store, &warm.bindings) {
                    Ok(r) => {
                        warm.calls += 1;
                        let violation = warm.store.data_mut().violation.take();
                        self.release(warm);
                        match (violation, r) {
                            (Some(v), _) => Err(CallError::InvalidOutput(v)),
                            (None, Ok(r)) => check(&r).map(|()| r).map_err(CallError::InvalidOutput),
                            (None, Err(e)) => Err(CallError::Rejected(e)),
                        }
                    }
                    Err(e) => Err(self.classify(e, warm.store.data())),
                }
            }
        };
        let outcome = match &result {
            Ok(_) => CallOutcome::Ok,
            Err(e) => e.outcome(),
        };
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if outcome != CallOutcome::Ok && outcome != CallOutcome::Error {
            self.recent_traps.lock().unwrap_or_else(PoisonError::into_inner).push_back(call);
        }
        self.metrics.record(outcome, started.elapsed().as_secs_f64());
        result
    }

    fn release(&self, warm: Warm) {
        if warm.calls < RECYCLE_AFTER_CALLS {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < POOL_SIZE {
                pool.push(warm);
            }
        }
    }

    fn instantiate(&self) -> Result<Warm, CallError> {
        let engine = self.compiled.component.engine();
        // No sockets at all (the empty context only denies addresses), and a small resource
        // table: a plugin cannot make the host allocate without bound.
        let wasi = WasiCtx::builder().allow_tcp(false).allow_udp(false).build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(RESOURCE_TABLE_MAX);
        let state = StoreState {
            wasi,
            table,
            limiter: Limiter {
                memory_cap: self.limits.memory_bytes(),
                tenant_cap: self.limits.tenant_memory_bytes(),
                tenant_used: self.ctx.memory.clone(),
                own: 0,
                hit: None,
            },
            blocked: None,
            violation: None,
            device: None,
            baseline_since: None,
            ctx: self.ctx.clone(),
            logs_left: super::bindings::LOG_LINES_PER_CALL,
            prefetched: None,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        // Instantiation runs guest initialisers: it is under the deadline too.
        store.set_epoch_deadline(self.deadline_ticks);
        let bindings = match &self.compiled.pre {
            WorldPre::Preprocessor(p) => p.instantiate(&mut store).map(Bindings::Preprocessor),
            WorldPre::PreprocessorV0_1(p) => p.instantiate(&mut store).map(Bindings::PreprocessorV0_1),
            WorldPre::Scorer(p) => p.instantiate(&mut store).map(Bindings::Scorer),
            WorldPre::Policy(p) => p.instantiate(&mut store).map(Bindings::Policy),
        };
        match bindings {
            Ok(bindings) => Ok(Warm { store, bindings, calls: 0 }),
            Err(e) => Err(self.classify(e, store.data())),
        }
    }

    fn classify(&self, e: wasmtime::Error, state: &StoreState) -> CallError {
        if let Some(hit) = &state.limiter.hit {
            return hit.clone();
        }
        if let Some(call) = state.blocked {
            return CallError::Blocked(call.to_string());
        }
        if let Some(v) = &state.violation {
            return CallError::InvalidOutput(v.clone());
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout(self.limits.deadline_ms),
            Some(trap) => CallError::Trap(trap.to_string()),
            None => CallError::Trap(e.root_cause().to_string()),
        }
    }
}

fn wrong_stage(expected: Stage) -> String {
    format!("host bug: a {expected} call reached a plugin of another stage")
}
