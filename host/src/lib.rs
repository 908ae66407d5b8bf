//! edgepm: an edge inference host for predictive maintenance.
//!
//! Devices publish telemetry; the host assembles windows of readings per device and runs each
//! tenant's WebAssembly plugins — preprocess (features), score (model), policy (decision and
//! alerts) — with the host owning all state. Module map:
//!
//! - [`config`]: `tenant.toml`, validated, with documented defaults.
//! - [`types`]: the host's domain types (windows, features, scores, decisions).
//! - [`ingest`]: telemetry decoding and validation (the MQTT session comes next).
//! - [`windows`]: per-device window assembly (size, hop, duplicates, late readings).
//! - [`plugins`]: the wasmtime component host — sandbox, limits, hot reload, quarantine.
//! - [`model`]: models behind the `predict` import (tract-onnx engine).
//! - [`store`]: device history behind the `history` import.
//! - [`pipeline`]: one window through the three stages.
//! - [`metrics`]: Prometheus metrics.
//! - [`api`]: HTTP liveness, readiness and metrics.
//!
//! The contract with plugins is `wit/plugin.wit` at the repository root.

pub mod api;
pub mod config;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod plugins;
pub mod store;
pub mod types;
pub mod windows;
