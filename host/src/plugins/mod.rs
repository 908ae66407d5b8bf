//! The plugin host: tenants' WebAssembly components, sandboxed, hot-swapped.
//!
//! - `engine.rs`: the wasmtime engine, epoch clock, linkers, compile cache.
//! - `bindings.rs`: generated bindings (kept inside this module) and the host imports.
//! - `instance.rs`: calls under a deadline and a memory cap; warm instances; failure kinds.
//! - [`validate`] (from `edgepm-core`): every value a plugin returns, checked before the host
//!   uses it.
//! - `registry.rs`: tenants, their current plugin versions, reload, rejection, quarantine.
//! - `watcher.rs`: watches the plugins folder and triggers reloads off the hot path.
//! - `check.rs`: `edgepm plugin check`.
//!
//! Swapping is atomic per window: a window takes a snapshot ([`TenantPipeline`]) of its tenant's
//! three stages and runs all of them from it, while a reload builds a new snapshot and swaps the
//! pointer. A window is therefore never processed half by an old and half by a new version.

mod bindings;
pub mod builtin;
pub mod check;
mod engine;
mod instance;
mod registry;
mod watcher;

/// The checks live in `edgepm-core` (no I/O, fuzzed on its own).
pub mod validate {
    pub use edgepm_core::validate::*;
}

pub use engine::{EPOCH_TICK, PluginEngine};
pub use instance::{CallContext, RECYCLE_AFTER_CALLS, StagePlugin, TRAP_SPAN_CALLS};
pub use registry::{HostOptions, PluginEvent, PluginEventKind, PluginHost, TenantPipeline, is_tenant_name};
pub use watcher::{DEBOUNCE, Watcher};

use crate::metrics::CallOutcome;
use crate::types::Stage;
use wasmtime::component::Component;

/// A compiled component and the world it implements.
pub struct CompiledPlugin {
    pub version: PluginVersion,
    pub component: Component,
    pre: WorldPre,
}

impl CompiledPlugin {
    pub fn stage(&self) -> Stage {
        self.pre.stage()
    }

    /// The contract version the component was built against, as far as it shows: a
    /// preprocessor's window type tells; scorers and policies of both versions export the same
    /// types, so their imports tell (`imports`: the component's import names).
    pub fn contract(&self, imports: &[String]) -> String {
        match &self.pre {
            WorldPre::Preprocessor(_) => "0.2.0".into(),
            WorldPre::PreprocessorV0_1(_) => "0.1.0".into(),
            _ => {
                let of = |v: &str| imports.iter().any(|i| i.starts_with("edgepm:plugin/") && i.ends_with(v));
                match (of("@0.2.0"), of("@0.1.0")) {
                    (true, _) => "0.2.0".into(),
                    (false, true) => "0.1.0".into(),
                    _ => "0.2.0 or 0.1.0 (it imports nothing of the host)".into(),
                }
            }
        }
    }
}

/// Which plugin version: the first 12 hex digits of the SHA-256 of the component, and where it
/// came from (`builtin:<name>` or a file path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersion {
    pub id: String,
    pub source: String,
}

/// Pre-instantiated component, typed by world.
pub(crate) enum WorldPre {
    Preprocessor(bindings::preprocessor::PreprocessorPre<instance::StoreState>),
    PreprocessorV0_1(bindings::v0_1::preprocessor::PreprocessorPre<instance::StoreState>),
    Scorer(bindings::scorer::ScorerPre<instance::StoreState>),
    Policy(bindings::policy::PolicyPre<instance::StoreState>),
}

impl WorldPre {
    fn stage(&self) -> Stage {
        match self {
            WorldPre::Preprocessor(_) | WorldPre::PreprocessorV0_1(_) => Stage::Preprocess,
            WorldPre::Scorer(_) => Stage::Score,
            WorldPre::Policy(_) => Stage::Policy,
        }
    }
}

/// Why a file was not accepted as a plugin version.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("not WebAssembly (no `\\0asm` preamble)")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component: build for wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("implements none of the edgepm:plugin@0.2.0 or @0.1.0 worlds:\n  {}", reasons.join("\n  "))]
    NoWorld { reasons: Vec<String> },
    #[error("implements the {} world, but this is the {} slot (expected the {} world)", found.world(), expected, expected.world())]
    WrongStage { expected: Stage, found: Stage },
    #[error("failed its smoke call: {0}")]
    Smoke(CallError),
    #[error("version {0} was quarantined earlier; deploy a changed file to retry")]
    Quarantined(String),
}

/// How a plugin call failed. `Rejected` is an expected failure (the plugin returned an error);
/// the others — traps, exhausted limits, blocking and invalid outputs — count towards quarantine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("returned an error: {0}")]
    Rejected(String),
    #[error("exceeded its deadline of {0} ms")]
    Timeout(u64),
    #[error("exceeded its memory cap of {0} MiB")]
    MemoryCap(u64),
    #[error("exceeded its tenant's memory cap of {0} MiB (all the tenant's instances together)")]
    TenantMemoryCap(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("tried to block in {0}: plugins may not wait inside WASI")]
    Blocked(String),
    #[error("returned an invalid output: {0}")]
    InvalidOutput(String),
}

impl CallError {
    pub fn is_trap(&self) -> bool {
        !matches!(self, CallError::Rejected(_))
    }

    pub fn outcome(&self) -> CallOutcome {
        match self {
            CallError::Rejected(_) => CallOutcome::Error,
            CallError::Timeout(_) => CallOutcome::Timeout,
            CallError::MemoryCap(_) | CallError::TenantMemoryCap(_) => CallOutcome::Memory,
            CallError::Trap(_) => CallOutcome::Trap,
            CallError::Blocked(_) => CallOutcome::Blocked,
            CallError::InvalidOutput(_) => CallOutcome::InvalidOutput,
        }
    }
}
