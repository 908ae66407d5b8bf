//! Windows through a tenant's three stages: preprocess → score → policy.
//!
//! A window — and a group of windows ready together ([`process_windows`]) — runs on one snapshot
//! of the tenant's plugins, so a hot swap lands between two windows or groups, never inside one.
//! Features are recorded in the history before the policy runs (its "abnormal since" queries
//! include the current window); alerts after it (cool-downs).

use crate::model::Prefetched;
use crate::plugins::{CallError, PluginHost, TenantPipeline};
use crate::types::{Decision, Features, Score, Stage, Window};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything one window produced.
#[derive(Debug, Clone, Serialize)]
pub struct WindowOutcome {
    pub tenant: String,
    pub device: String,
    pub end_ms: i64,
    pub features: Features,
    pub score: Score,
    pub decision: Decision,
    /// Plugin version ids of preprocess, score and policy.
    pub versions: [String; 3],
}

impl WindowOutcome {
    /// The row the store keeps of it; `contributions_json` is `score.contributions` as JSON.
    pub fn row<'a>(&'a self, start_ms: i64, contributions_json: &'a str) -> crate::store::OutcomeRow<'a> {
        crate::store::OutcomeRow {
            tenant: &self.tenant,
            device: &self.device,
            start_ms,
            end_ms: self.end_ms,
            probability: self.score.probability,
            is_failure: self.decision.is_failure,
            model: &self.score.model,
            versions: &self.versions,
            contributions_json,
            alerts: &self.decision.alerts,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    #[error("tenant {tenant}: {stage} plugin {version} {error}")]
    Stage { tenant: String, stage: Stage, version: String, error: CallError },
    /// Not run: the tenant's plugins used its time budget of this group (see
    /// [`process_windows`]). The caller runs the window in a later group.
    #[error("tenant {0:?} used its time budget of this batch; the window waits for the next")]
    OverBudget(String),
}

/// Runs `window` through its tenant's current plugins.
pub fn process_window(host: &PluginHost, window: Window) -> Result<WindowOutcome, PipelineError> {
    process_windows(host, vec![window], None)
        .next()
        .unwrap_or_else(|| unreachable!("one outcome per window"))
        .1
}

/// Which window an outcome of [`process_windows`] is for — also when it failed.
#[derive(Debug, Clone)]
pub struct WindowId {
    pub tenant: String,
    pub device: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Readings in the window.
    pub readings: usize,
}

impl WindowId {
    fn of(w: &Window) -> WindowId {
        WindowId {
            tenant: w.tenant.clone(),
            device: w.device.clone(),
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            readings: w.timestamps_ms.len(),
        }
    }
}

/// One window on its way through [`process_windows`]: its tenant's plugins and its features, or
/// why there are none.
struct Pending {
    id: WindowId,
    features: Result<(Arc<TenantPipeline>, Features), PipelineError>,
    prefetched: Option<Prefetched>,
}

/// Runs windows that are ready at the same time (in arrival order) through their tenants'
/// plugins, returning one outcome per window, with its [`WindowId`], in the same order.
///
/// Each tenant's plugins are taken once for the whole call, so a hot swap lands between two
/// calls — except a quarantine during the call: the tenant's windows after it run on the version
/// restored (each window still on one snapshot, see `newer`). Stages run as: every window's
/// features first (the preprocessor sees nothing but its window), then one batched model call
/// per tenant for all its windows (the tenant's default model, on the features as the
/// preprocessor returned them), then, window by window in order, the scorer — whose `predict` is
/// answered from the batch when it asks for exactly that — and the policy, whose history
/// includes the windows before it and not those after.
///
/// With a `budget`, a tenant whose plugin calls (and batched model call) in this group took that
/// long in total runs no further window of the group: each of the rest comes back as
/// [`PipelineError::OverBudget`], for the caller to run later. The first window of a tenant
/// always runs, so every tenant progresses, and the windows left are always the last ones of
/// their tenant (the budget, once used, stays used). This is what keeps a slow tenant's plugins
/// from holding up the windows of the others without bound: they wait at most the budget plus
/// one window's calls (each bounded by its deadline).
///
/// The outcomes come lazily: the caller stores each before the next window's policy runs (the
/// policy's `last-alert-ms` must see the alert of the window before it). Windows are taken in
/// [`rounds`] without two windows of one device, so a preprocessor's `history` (baselines) sees
/// the device's windows before its own even when a backlog completes many in one batch.
pub fn process_windows(
    host: &PluginHost,
    windows: Vec<Window>,
    budget: Option<Duration>,
) -> impl Iterator<Item = (WindowId, Result<WindowOutcome, PipelineError>)> + '_ {
    let group = Rc::new(Group {
        snapshots: RefCell::default(),
        // Tenants one of whose calls trapped in this group: a quarantine may have replaced a
        // version, and their later windows take the replacement (see `newer`).
        trapped: Trapped::default(),
        spent: Spent { budget, used: RefCell::default() },
    });
    rounds(windows).into_iter().flat_map(move |round| process_round(host, round, group.clone()))
}

/// The windows cut, in order, into rounds in which no device has two windows: a device's next
/// window is preprocessed only after the one before it was finished and recorded, as if they had
/// come in two batches — its preprocessor's `history` (baselines) sees it. Usually one round: a
/// batch completes one window per device.
fn rounds(windows: Vec<Window>) -> Vec<Vec<Window>> {
    let mut rounds: Vec<Vec<Window>> = Vec::new();
    let mut devices: std::collections::HashSet<(String, String)> = Default::default();
    for w in windows {
        let key = (w.tenant.clone(), w.device.clone());
        if rounds.is_empty() || devices.contains(&key) {
            rounds.push(Vec::new());
            devices.clear();
        }
        devices.insert(key);
        rounds.last_mut().expect("a round was pushed").push(w);
    }
    rounds
}

/// What the rounds of one [`process_windows`] call share: one snapshot per tenant, the traps, the
/// budget.
struct Group {
    snapshots: RefCell<HashMap<String, Arc<TenantPipeline>>>,
    trapped: Trapped,
    spent: Spent,
}

fn process_round(
    host: &PluginHost,
    windows: Vec<Window>,
    group: Rc<Group>,
) -> impl Iterator<Item = (WindowId, Result<WindowOutcome, PipelineError>)> + '_ {
    let mut pending = Vec::with_capacity(windows.len());
    let (trapped, spent) = (&group.trapped, &group.spent);
    for window in windows {
        let known = group.snapshots.borrow().get(&window.tenant).cloned();
        let pipeline = match known {
            Some(p) => Some(p),
            None => host.tenant(&window.tenant).inspect(|p| {
                group.snapshots.borrow_mut().insert(window.tenant.clone(), p.clone());
            }),
        };
        let id = WindowId::of(&window);
        let features = match pipeline {
            None => Err(PipelineError::UnknownTenant(id.tenant.clone())),
            Some(_) if spent.exhausted(&id.tenant) => Err(PipelineError::OverBudget(id.tenant.clone())),
            Some(p) => {
                let features = run(host, &p, Stage::Preprocess, trapped, spent, |s| s.features(window));
                if features.is_err()
                    && trapped.has(&p.name)
                    && let Some(n) = host.tenant(&p.name).filter(|n| !Arc::ptr_eq(n, &p))
                {
                    group.snapshots.borrow_mut().insert(p.name.clone(), n);
                }
                features.map(|f| (p, f))
            }
        };
        pending.push(Pending { id, features, prefetched: None });
    }
    let tenants: Vec<Arc<TenantPipeline>> = group.snapshots.borrow().values().cloned().collect();
    for pipeline in &tenants {
        let started = Instant::now();
        prefetch(host, pipeline, &mut pending);
        spent.add(&pipeline.name, started.elapsed());
    }
    pending.into_iter().map(move |w| {
        let (trapped, spent) = (&group.trapped, &group.spent);
        let outcome = w.features.and_then(|(p, features)| {
            if spent.exhausted(&p.name) {
                return Err(PipelineError::OverBudget(p.name.clone()));
            }
            let p = newer(host, trapped, p);
            finish(host, &p, &w.id, features, w.prefetched, trapped, spent)
        });
        (w.id, outcome)
    })
}

/// Plugin time each tenant used in the current group, against the group's budget.
struct Spent {
    budget: Option<Duration>,
    used: RefCell<HashMap<String, Duration>>,
}

impl Spent {
    fn add(&self, tenant: &str, d: Duration) {
        if self.budget.is_none() {
            return;
        }
        let mut used = self.used.borrow_mut();
        match used.get_mut(tenant) {
            Some(t) => *t += d,
            None => {
                used.insert(tenant.to_string(), d);
            }
        }
    }
    fn exhausted(&self, tenant: &str) -> bool {
        self.budget.is_some_and(|b| self.used.borrow().get(tenant).is_some_and(|&t| t >= b))
    }
}

/// Tenants with a trap (or a blocked call, or an invalid output) in the current group.
#[derive(Default)]
struct Trapped(std::cell::RefCell<Vec<String>>);

impl Trapped {
    fn add(&self, tenant: &str) {
        let mut t = self.0.borrow_mut();
        if !t.iter().any(|n| n == tenant) {
            t.push(tenant.to_string());
        }
    }
    fn has(&self, tenant: &str) -> bool {
        self.0.borrow().iter().any(|n| n == tenant)
    }
}

/// The snapshot the rest of a window should run on: `p`, unless a call of its tenant trapped in
/// this group and a quarantine replaced its score or policy version since. Then the window's
/// remaining stages run on the new snapshot — it has the same preprocessor, which computed the
/// window's features, so the window is still processed by one snapshot. Without this, a version
/// quarantined after its third trap kept failing every other window of the group (each up to its
/// deadline), holding up every tenant behind them.
fn newer(host: &PluginHost, trapped: &Trapped, p: Arc<TenantPipeline>) -> Arc<TenantPipeline> {
    if !trapped.has(&p.name) {
        return p;
    }
    match host.tenant(&p.name) {
        Some(n)
            if !Arc::ptr_eq(&n, &p)
                && n.stage(Stage::Preprocess).version() == p.stage(Stage::Preprocess).version() =>
        {
            n
        }
        _ => p,
    }
}

/// Computes, in one model call, the tenant's default model on the features of every pending
/// window of `pipeline`'s tenant. Best effort: with a single window, no default model, or a model
/// that cannot take the features, the scorer computes as usual.
fn prefetch(host: &PluginHost, pipeline: &Arc<TenantPipeline>, pending: &mut [Pending]) {
    let name = pipeline.config.model.as_str();
    let mine =
        pending.iter().filter(|w| w.features.as_ref().is_ok_and(|(p, _)| Arc::ptr_eq(p, pipeline))).count();
    if mine < 2 || name.is_empty() || !pipeline.config.allows_model(name) {
        return;
    }
    let Ok(model) = host.models().get(name) else { return };
    let width = model.feature_names().len();
    let mut rows = Vec::with_capacity(mine * width);
    let mut batched = Vec::with_capacity(mine);
    for (i, w) in pending.iter().enumerate() {
        if let Ok((p, features)) = &w.features
            && Arc::ptr_eq(p, pipeline)
            && let Ok(row) = crate::model::arrange(model.as_ref(), features)
        {
            rows.extend_from_slice(&row);
            batched.push(i);
        }
    }
    if batched.len() < 2 {
        return;
    }
    let Ok(probabilities) = model.predict_rows(&rows) else { return };
    host.metrics().model_batched_rows(&pipeline.name).inc_by(probabilities.len() as u64);
    for ((i, row), probability) in batched.into_iter().zip(rows.chunks_exact(width)).zip(probabilities) {
        pending[i].prefetched =
            Some(Prefetched { model: model.id().to_string(), row: row.to_vec(), probability });
    }
}

/// The preprocessor alone on one window (its features recorded in the history, as a full run
/// records them): what `edgepm replay --features-only` writes as training data.
pub fn preprocess(host: &PluginHost, window: Window) -> Result<Features, PipelineError> {
    let p = host.tenant(&window.tenant).ok_or_else(|| PipelineError::UnknownTenant(window.tenant.clone()))?;
    let id = WindowId::of(&window);
    let (trapped, spent) = (Trapped::default(), Spent { budget: None, used: RefCell::default() });
    let features = run(host, &p, Stage::Preprocess, &trapped, &spent, |s| s.features(window))?;
    host.history().record_features(&id.tenant, &id.device, id.end_ms, &features);
    Ok(features)
}

/// Score and policy of one window whose features are known.
fn finish(
    host: &PluginHost,
    p: &TenantPipeline,
    id: &WindowId,
    features: Features,
    prefetched: Option<Prefetched>,
    trapped: &Trapped,
    spent: &Spent,
) -> Result<WindowOutcome, PipelineError> {
    let (tenant, device, end_ms) = (id.tenant.clone(), id.device.clone(), id.end_ms);
    host.history().record_features(&tenant, &device, end_ms, &features);
    let score = run(host, p, Stage::Score, trapped, spent, |s| s.score(&features, prefetched))?;
    let decision =
        run(host, p, Stage::Policy, trapped, spent, |s| s.decide(&device, end_ms, &features, &score))?;
    if !decision.alerts.is_empty() {
        host.history().record_alert(&tenant, &device, end_ms);
    }
    host.metrics().window_processed(&tenant).inc();
    Ok(WindowOutcome { tenant, device, end_ms, features, score, decision, versions: p.versions() })
}

fn run<R>(
    host: &PluginHost,
    pipeline: &TenantPipeline,
    stage: Stage,
    trapped: &Trapped,
    spent: &Spent,
    call: impl FnOnce(&crate::plugins::StagePlugin) -> Result<R, CallError>,
) -> Result<R, PipelineError> {
    let plugin = pipeline.stage(stage);
    let _span =
        tracing::trace_span!("plugin", tenant = %pipeline.name, %stage, version = plugin.version()).entered();
    let started = Instant::now();
    let result = call(plugin);
    spent.add(&pipeline.name, started.elapsed());
    result.map_err(|error| {
        if error.is_trap() {
            trapped.add(&pipeline.name);
            host.report_trap(pipeline, stage);
        }
        PipelineError::Stage {
            tenant: pipeline.name.clone(),
            stage,
            version: plugin.version().to_string(),
            error,
        }
    })
}
