//! The `edgepm` command line: parses, then hands each subcommand to its file in `commands/`.

mod commands;

use clap::{Parser, Subcommand};
use commands::{dataset, demo, model, plugin, process, replay, simulate, tenant};
use std::path::PathBuf;
use std::process::ExitCode;

/// edgepm — predictive-maintenance inference host with tenant WebAssembly plugins.
#[derive(Parser)]
#[command(name = "edgepm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and export plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run windows (JSON lines on stdin) through the tenants' plugins and print one outcome per
    /// window (JSON lines on stdout). The plugins folder is watched: dropping a new .wasm swaps it
    /// in between two windows.
    Process(process::ProcessArgs),
    /// Load every tenant of a plugins folder and report what would be rejected; with --config,
    /// also check edgepm.toml and run each configured cloud sink's health check.
    Validate(commands::validate::ValidateArgs),
    /// Manage model folders.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Deploy the tenants shipped with edgepm (their tenant.toml, plugins and model are built
    /// into the binary).
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Run the host against an MQTT broker: readings in, predictions and alerts out, until
    /// Ctrl-C or SIGTERM. Every setting is in the configuration file (docs/operations.md).
    Run {
        /// The host configuration (TOML). Without it, the TOML itself in $EDGEPM_CONFIG (a
        /// container's task definition).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Ask the local store about equipment health (e.g. `edgepm query degradation`).
    #[command(subcommand)]
    Query(commands::query::QueryCommand),
    /// Exit 0 if the host's /healthz at --addr answers 200 (a container's health check: no
    /// shell or curl needed).
    Healthcheck(commands::healthcheck::HealthcheckArgs),
    /// Write the weekly equipment-health report (PDF) of an ISO week from the local store.
    Report(commands::report::ReportArgs),
    /// The frequency-aware burst features (band energies in Hz, velocity RMS, envelope spectrum
    /// at the bearing's defect frequencies) of recorded snapshots (.npz), as CSV, and when each
    /// feature first rose above k × its early-life level.
    Spectrum(commands::spectrum::SpectrumArgs),
    /// Publish telemetry of simulated motors (bearing wear on the first --failing ones).
    Simulate(simulate::SimulateArgs),
    /// Feed the rows of a CSV file as readings through a tenant's real pipeline (plugins, model,
    /// policy) and write one prediction per window, with the id of the row that completed it.
    Replay(replay::ReplayArgs),
    /// Write labelled training windows (CSV) from the simulator's physics, with the features the
    /// bearing-features plugin computes; motors are split into train/validation/test.
    Dataset(dataset::DatasetArgs),
    /// Everything on this machine: an embedded MQTT broker on a free port, the reference plugins
    /// as tenant "default", the baseline model, the host and simulated motors. Prints a summary.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    // The embedded broker of `edgepm demo` (rumqttd 0.20) logs every client's normal DISCONNECT
    // as an error, twice: "router-drop" in its server and "no-connection id N is already gone" in
    // its router (a DISCONNECT packet followed by the closed socket reaches the router as two
    // disconnections). Its connection and routing logs are off unless RUST_LOG asks for them;
    // the host's own MQTT sessions report their connection problems themselves.
    const DEFAULT_FILTER: &str =
        "info,cranelift=warn,rumqttd=warn,rumqttd::server::broker=off,rumqttd::router::routing=off";
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugin(c) => plugin::run(c),
        Command::Tenant(c) => tenant::run(c),
        Command::Validate(args) => commands::validate::run(args),
        Command::Process(args) => process::run(args),
        Command::Run { config } => commands::run::run(config.as_deref()),
        Command::Healthcheck(args) => commands::healthcheck::run(args),
        Command::Query(c) => commands::query::run(c),
        Command::Report(args) => commands::report::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Spectrum(args) => commands::spectrum::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Dataset(args) => dataset::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Model(c) => model::run(c),
    }
}
