//! Black-box tests of the plugin host: real components (built from `plugins/` by the build
//! script), the real wasmtime engine, a real ONNX model run by tract, real files watched by
//! `notify`, and the `edgepm` binary.

mod api;
mod cli;
mod cloud;
mod dashboard;
mod deployment;
mod faults;
mod health;
mod hot_swap;
mod http;
mod ingest;
mod isolation;
mod misbehaving;
mod models;
mod other_toolchains;
mod outbox;
mod reference_plugins;
mod replay;
mod report;
mod spectrum;
mod support;
mod telemetry;
mod vibration;
