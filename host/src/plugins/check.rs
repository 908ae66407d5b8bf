//! `edgepm plugin check`: what a component is, and whether the host would accept it.

use super::instance::{CallContext, StagePlugin};
use super::{LoadError, PluginEngine};
use crate::config::TenantConfig;
use crate::metrics::Metrics;
use crate::model::ModelRegistry;
use crate::store::MemoryHistory;
use crate::types::{Features, Score, Stage};
use std::path::Path;
use std::sync::Arc;

/// What `plugin check` found.
#[derive(Debug)]
pub struct CheckReport {
    pub stage: Stage,
    /// The contract version it was built against (`0.2.0`, `0.1.0`).
    pub contract: String,
    pub version: String,
    pub size: usize,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub window_size: Option<u32>,
    /// Outcome of a benign call under the default limits: `Ok(note)` or a trap.
    pub smoke: Result<String, String>,
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "stage:   {} (world edgepm:plugin/{}@{})",
            self.stage,
            self.stage.world(),
            self.contract
        )?;
        writeln!(f, "version: {} ({} bytes)", self.version, self.size)?;
        writeln!(f, "exports: {}", self.exports.join(", "))?;
        writeln!(f, "imports: {}", self.imports.join(", "))?;
        if let Some(n) = self.window_size {
            writeln!(f, "window:  {n} readings")?;
        }
        match &self.smoke {
            Ok(note) => write!(f, "smoke:   ok ({note})"),
            Err(e) => write!(f, "smoke:   FAILED: {e}"),
        }
    }
}

/// Loads `path` as a plugin (optionally of `expect`ed stage) and runs one smoke call with the
/// default tenant settings.
pub fn check_file(path: &Path, expect: Option<Stage>) -> Result<CheckReport, LoadError> {
    let bytes =
        std::fs::read(path).map_err(|e| LoadError::Io { path: path.display().to_string(), source: e })?;
    let engine = PluginEngine::new(None, true).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    let compiled = Arc::new(engine.load(&bytes, &path.display().to_string(), expect)?);
    let ty = compiled.component.component_type();
    let imports: Vec<String> = ty.imports(engine.engine()).map(|(n, _)| n.to_string()).collect();
    let exports = ty.exports(engine.engine()).map(|(n, _)| n.to_string()).collect();
    let stage = compiled.stage();
    let contract = compiled.contract(&imports);
    let ctx = Arc::new(CallContext {
        tenant: "check".into(),
        stage,
        version: compiled.version.id.clone(),
        config: Arc::new(TenantConfig::default()),
        models: Arc::new(ModelRegistry::new(std::env::temp_dir().join("edgepm-check-no-models"))),
        history: Arc::new(MemoryHistory::default()),
        memory: Default::default(),
    });
    let version = compiled.version.id.clone();
    let plugin = StagePlugin::new(compiled, ctx, Metrics::new().stage("check", stage));
    let mut window_size = None;
    let smoke = match stage {
        Stage::Preprocess => plugin.window_size().map(|n| {
            window_size = Some(n);
            format!("window-size() = {n}")
        }),
        Stage::Score => {
            plugin.score(&Features::default(), None).map(|s| format!("score = {}", s.probability))
        }
        Stage::Policy => {
            let s = Score { probability: 0.5, model: "check".into(), contributions: Vec::new() };
            plugin
                .decide("check", 0, &Features::default(), &s)
                .map(|d| format!("is_failure = {}", d.is_failure))
        }
    };
    let smoke = match smoke {
        Ok(note) => Ok(note),
        Err(e) if !e.is_trap() => Ok(format!("returned an error on empty input, as it may: {e}")),
        Err(e) => Err(e.to_string()),
    };
    Ok(CheckReport { stage, contract, version, size: bytes.len(), imports, exports, window_size, smoke })
}
