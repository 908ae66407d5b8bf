//! One window through a tenant's three stages: preprocess → score → policy.
//!
//! The window runs on one snapshot of the tenant's plugins, so a hot swap lands between two
//! windows, never inside one. Features are recorded in the history before the policy runs (its
//! "abnormal since" queries include the current window); alerts after it (cool-downs).

use crate::plugins::{CallError, PluginHost, TenantPipeline};
use crate::types::{Decision, Features, Score, Stage, Window};
use serde::Serialize;

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

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    #[error("tenant {tenant}: {stage} plugin {version} {error}")]
    Stage { tenant: String, stage: Stage, version: String, error: CallError },
}

/// Runs `window` through its tenant's current plugins.
pub fn process_window(host: &PluginHost, window: Window) -> Result<WindowOutcome, PipelineError> {
    let pipeline =
        host.tenant(&window.tenant).ok_or_else(|| PipelineError::UnknownTenant(window.tenant.clone()))?;
    let (tenant, device, end_ms) = (window.tenant.clone(), window.device.clone(), window.end_ms);
    let p = &pipeline;
    let features = run(host, p, Stage::Preprocess, |s| s.features(window))?;
    host.history().record_features(&tenant, &device, end_ms, &features);
    let score = run(host, p, Stage::Score, |s| s.score(&features))?;
    let decision = run(host, p, Stage::Policy, |s| s.decide(&device, end_ms, &features, &score))?;
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
    call: impl FnOnce(&crate::plugins::StagePlugin) -> Result<R, CallError>,
) -> Result<R, PipelineError> {
    let plugin = pipeline.stage(stage);
    let _span =
        tracing::trace_span!("plugin", tenant = %pipeline.name, %stage, version = plugin.version()).entered();
    call(plugin).map_err(|error| {
        if error.is_trap() {
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
