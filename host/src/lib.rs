//! edgepm: an edge inference host for predictive maintenance.
//!
//! Devices publish telemetry; the host assembles windows of readings per device and runs each
//! tenant's WebAssembly plugins — preprocess (features), score (model), policy (decision and
//! alerts) — with the host owning all state. Module map:
//!
//! - [`config`]: `tenant.toml`, validated, with documented defaults.
//! - [`types`], [`topics`], [`clock`]: the domain types (readings, windows, features, scores,
//!   decisions), the topic grammar, the clock and its time format — from `edgepm-core`
//!   (`core/`), the bottom layer, with telemetry decoding and the output checks.
//! - [`ingest`]: telemetry in — decoding with limits, the MQTT sessions (QoS 1, acknowledged
//!   after commit), batches of messages into the store and through the plugins.
//! - [`windows`]: per-device window assembly (size, hop, duplicates, late readings).
//! - [`plugins`]: the wasmtime component host — sandbox, limits, hot reload, quarantine.
//! - [`model`]: models behind the `predict` import (tract-onnx engine).
//! - [`store`]: the SQLite store (readings, features, predictions, alerts, outbox) and the
//!   device history behind the `history` import.
//! - [`outbox`]: everything leaving the host — MQTT predictions, alerts, dead letters, alert
//!   e-mails — rendered into the store's outbox in the ingest batch's transaction.
//! - [`sinks`]: the outbox delivered — one driver per sink (MQTT, e-mail files, message log),
//!   each with its own cursor, retries and dead letters.
//! - [`service`]: the running host (`edgepm run`), wired from one configuration file.
//! - [`sim`]: simulated motors with bearing wear (`edgepm simulate`, the demo, training data).
//! - [`demo`]: `edgepm demo`, everything on one machine with an embedded broker.
//! - [`replay`]: CSV rows through a tenant's pipeline (`edgepm replay`).
//! - [`tenants`]: the tenants shipped in the binary (`edgepm tenant deploy`).
//! - [`dataset`]: labelled training windows from the simulator's physics (`edgepm dataset`).
//! - [`pipeline`]: one window through the three stages.
//! - [`metrics`]: Prometheus metrics.
//! - [`worker`]: worker threads whose death stops the process (so it is restarted).
//! - [`health`]: what keeps the host from being ready (store failures, syncs, disk space).
//! - [`api`]: HTTP liveness, readiness and metrics.
//!
//! The contract with plugins is `wit/plugin.wit` at the repository root.

pub mod api;
pub mod config;
pub mod dataset;
pub mod demo;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod pipeline;
pub mod plugins;
pub mod recordings;
pub mod replay;
pub mod report;
pub mod service;
pub mod shutdown;
pub mod sim;
pub mod sinks;
pub mod store;
pub mod tenants;
pub use edgepm_core::{clock, topics, types};
pub mod windows;
pub mod worker;
