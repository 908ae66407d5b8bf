//! The `edgepm` command line.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use edgepm::metrics::Metrics;
use edgepm::pipeline::process_window;
use edgepm::plugins::{HostOptions, PluginHost, builtin, check::check_file};
use edgepm::store::MemoryHistory;
use edgepm::types::{Stage, Window};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    Plugin(PluginCommand),
    /// Run windows (JSON lines on stdin) through the tenants' plugins and print one outcome per
    /// window (JSON lines on stdout). The plugins folder is watched: dropping a new .wasm swaps it
    /// in between two windows.
    Process(ProcessArgs),
    /// Load every tenant of a plugins folder and report what would be rejected.
    Validate(FolderArgs),
    /// Manage model folders.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Run the host against an MQTT broker: readings in, predictions and alerts out, until
    /// Ctrl-C or SIGTERM. Every setting is in the configuration file (docs/operations.md).
    Run {
        /// The host configuration (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Publish telemetry of simulated motors (bearing wear on the first --failing ones).
    Simulate(SimulateArgs),
    /// Feed the rows of a CSV file as readings through a tenant's real pipeline (plugins, model,
    /// policy) and write one prediction per window, with the id of the row that completed it.
    Replay(ReplayArgs),
    /// Write labelled training windows (CSV) from the simulator's physics, with the features the
    /// bearing-features plugin computes; motors are split into train/validation/test.
    Dataset(DatasetArgs),
    /// Everything on this machine: an embedded MQTT broker on a free port, the reference plugins
    /// as tenant "default", the baseline model, the host and simulated motors. Prints a summary.
    Demo(DemoArgs),
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Broker URL, e.g. mqtt://127.0.0.1:1883.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// Number of motors (MTR-001, MTR-002, ...).
    #[arg(long, default_value_t = 10)]
    motors: usize,
    /// Readings per second per motor.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// How many motors (the first ones) develop a bearing defect.
    #[arg(long, default_value_t = 1)]
    failing: usize,
    /// Tenant in the topics.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds until the defect of a failing motor starts.
    #[arg(long, default_value_t = 60.0)]
    onset: f64,
    /// Seconds until a failing motor fails.
    #[arg(long, default_value_t = 600.0)]
    time_to_failure: f64,
    /// Vibration samples per reading.
    #[arg(long, default_value_t = edgepm::sim::DEFAULT_SAMPLES)]
    samples: usize,
    /// Random seed (the same seed gives the same motors).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Switch the motors on over this many seconds (motor i of N after i/N of it) instead of all
    /// at once, so their windows do not all complete in the same instant (8 / rate spreads them
    /// evenly with the default hop of 8 readings).
    #[arg(long, default_value_t = 0.0)]
    stagger: f64,
    /// Also subscribe to the tenant's predictions and print publish → prediction latency
    /// percentiles as one JSON line at the end (clock of this process, microsecond resolution).
    #[arg(long)]
    measure_latency: bool,
}

#[derive(clap::Args)]
struct ReplayArgs {
    #[command(flatten)]
    folders: FolderArgs,
    /// The tenant whose pipeline runs.
    #[arg(long)]
    tenant: String,
    /// Input CSV (one reading per row, with a header).
    #[arg(long)]
    csv: PathBuf,
    /// Output CSV: row_id, device, timestamp, probability, is_failure, model, alerts, top_feature.
    #[arg(long)]
    out: PathBuf,
    /// Column naming the device.
    #[arg(long, default_value = "Product ID")]
    device_column: String,
    /// Column identifying a row in the output.
    #[arg(long, default_value = "UDI")]
    id_column: String,
    /// Column with each reading's time (epoch ms or RFC 3339); default: rows 1 s apart.
    #[arg(long)]
    time_column: Option<String>,
    /// Columns dropped before the pipeline (labels), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "Machine failure,TWF,HDF,PWF,OSF,RNF,label")]
    label_columns: Vec<String>,
}

#[derive(clap::Args)]
struct DatasetArgs {
    /// Output CSV file.
    #[arg(long)]
    out: PathBuf,
    /// Number of motors.
    #[arg(long, default_value_t = 500)]
    motors: usize,
    /// Fraction of motors that run to failure (the others are observed for --observe-days).
    #[arg(long, default_value_t = 0.6)]
    failing_fraction: f64,
    /// Label: the motor fails within this many hours after the window.
    #[arg(long, default_value_t = 72.0)]
    horizon_hours: f64,
    /// Minutes between two windows of a motor.
    #[arg(long, default_value_t = 60.0)]
    interval_minutes: f64,
    /// Days a motor that does not fail is observed.
    #[arg(long, default_value_t = 20.0)]
    observe_days: f64,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
    /// Number of simulated motors.
    #[arg(long, default_value_t = 4)]
    motors: usize,
    /// How many of them wear out during the run.
    #[arg(long, default_value_t = 1)]
    failing: usize,
    /// Readings per second per motor.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Where the store, logs, plugins and models go.
    #[arg(long, default_value = "edgepm-demo")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Write the hand-weighted logistic baseline (an ONNX graph, not trained) as a model folder,
    /// so the pipeline runs before trained models are deployed.
    Baseline {
        /// Models folder to write into.
        models_dir: PathBuf,
        /// Model name (the folder name; tenants select it with `model = "..."`).
        #[arg(long, default_value = edgepm::config::DEFAULT_MODEL)]
        name: String,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Print a component's stage, world, exports and imports and run a smoke call. Exits non-zero
    /// for a file that is not a valid component of one of the edgepm worlds.
    Check {
        /// The .wasm file.
        file: PathBuf,
        /// Also require this stage.
        #[arg(long, value_enum)]
        stage: Option<StageArg>,
    },
    /// Write the built-in reference plugins (preprocess.wasm, score.wasm, policy.wasm) into a
    /// folder, e.g. to start a tenant folder from them.
    Export {
        /// Destination folder (created if missing).
        dir: PathBuf,
        /// Which reference preprocessor to write as preprocess.wasm: bearing-features (vibration
        /// motors, the default) or ai4i-features (AI4I 2020-style machining telemetry).
        #[arg(long, default_value = "bearing-features")]
        preprocess: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StageArg {
    Preprocess,
    Score,
    Policy,
}

impl From<StageArg> for Stage {
    fn from(s: StageArg) -> Stage {
        match s {
            StageArg::Preprocess => Stage::Preprocess,
            StageArg::Score => Stage::Score,
            StageArg::Policy => Stage::Policy,
        }
    }
}

#[derive(clap::Args)]
struct FolderArgs {
    /// Tenant folders: <plugins-dir>/<tenant>/{tenant.toml,preprocess.wasm,score.wasm,policy.wasm}.
    #[arg(long, default_value = "plugins-deployed")]
    plugins_dir: PathBuf,
    /// Model folders: <models-dir>/<model>/{metadata.json,...}.
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// Cache of compiled plugins (default: <plugins-dir>/.cache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

impl FolderArgs {
    fn options(&self) -> HostOptions {
        let mut o = HostOptions::new(&self.plugins_dir, &self.models_dir);
        o.cache_dir = Some(self.cache_dir.clone().unwrap_or_else(|| self.plugins_dir.join(".cache")));
        o
    }

    /// A plugin host over these folders with an in-memory history (no store).
    fn open_host(&self) -> anyhow::Result<Arc<PluginHost>> {
        PluginHost::open(self.options(), Arc::new(MemoryHistory::default()), Arc::new(Metrics::new()))
    }
}

#[derive(clap::Args)]
struct ProcessArgs {
    #[command(flatten)]
    folders: FolderArgs,
    /// Do not watch the plugins folder for new versions.
    #[arg(long)]
    no_watch: bool,
    /// Serve /healthz, /readyz and /metrics on this address while processing (port 0: any free
    /// port, printed in the log). Off by default.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,cranelift=warn,rumqttd=warn".into()),
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
        Command::Plugin(PluginCommand::Check { file, stage }) => {
            match check_file(&file, stage.map(Into::into)) {
                Ok(report) => {
                    println!("{}: ok\n{report}", file.display());
                    Ok(if report.smoke.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
                }
                Err(e) => {
                    eprintln!("{}: not a usable edgepm plugin: {e}", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Plugin(PluginCommand::Export { dir, preprocess }) => {
            let pre = builtin::preprocessor(&preprocess).with_context(|| {
                format!("no reference preprocessor {preprocess:?} (bearing-features, ai4i-features)")
            })?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for stage in Stage::ALL {
                let path = dir.join(stage.file_name());
                let (bytes, source) = match stage {
                    Stage::Preprocess => (pre, format!("reference:{preprocess}")),
                    _ => (builtin::bytes(stage), builtin::source(stage).to_string()),
                };
                std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
                println!("{} ({source})", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(folders) => {
            let host = folders.open_host()?;
            for name in host.tenant_names() {
                if let Some(p) = host.tenant(&name) {
                    let [pre, score, policy] = p.versions();
                    println!(
                        "{name}: preprocess {pre}, score {score}, policy {policy}, window {}",
                        p.window_size
                    );
                }
            }
            let rejected = host.rejected_versions();
            if rejected > 0 {
                eprintln!("{rejected} plugin version(s) rejected; see the log above");
            }
            Ok(if rejected == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Process(args) => process(args),
        Command::Run { config } => run_host(&config),
        Command::Simulate(args) => simulate(args),
        Command::Demo(args) => demo(args),
        Command::Dataset(args) => dataset(args),
        Command::Replay(args) => replay(args),
        Command::Model(ModelCommand::Baseline { models_dir, name }) => {
            let dir = edgepm::model::baseline::write(&models_dir, &name)
                .with_context(|| format!("writing model {name} into {}", models_dir.display()))?;
            println!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn process(args: ProcessArgs) -> anyhow::Result<ExitCode> {
    let host = args.folders.open_host()?;
    let _watcher =
        if args.no_watch { None } else { Some(host.watch().context("watching the plugins folder")?) };
    let _http = match args.http {
        Some(addr) => Some(HttpServer::start(addr, host.clone())?),
        None => None,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut ok, mut failed) = (0u64, 0u64);
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let result = serde_json::from_str::<Window>(&line)
            .map_err(|e| format!("line {}: not a window: {e}", n + 1))
            .and_then(|w| process_window(&host, w).map_err(|e| format!("line {}: {e}", n + 1)));
        match result {
            Ok(outcome) => {
                ok += 1;
                serde_json::to_writer(&mut out, &outcome)?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            Err(e) => {
                failed += 1;
                tracing::warn!("{e}");
            }
        }
    }
    tracing::info!(windows = ok, failed, "Done");
    Ok(ExitCode::SUCCESS)
}

/// A watch flag set on Ctrl-C or SIGTERM, from a thread of its own.
fn stop_signal() -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("edgepm-signals".into()).spawn(move || {
        runtime.block_on(async {
            #[cfg(unix)]
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            #[cfg(unix)]
            let terminate = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let terminate = std::future::pending::<()>();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate => {}
            }
            tracing::info!("Stopping (signal received)");
            let _ = tx.send(true);
        });
    })?;
    Ok(rx)
}

fn run_host(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = edgepm::service::HostConfig::load(config)?;
    let mut stop = stop_signal()?;
    let service = edgepm::service::Service::start(config)?;
    tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
        let _ = stop.wait_for(|s| *s).await;
    });
    let totals = service.totals();
    let counts = service.stop()?;
    tracing::info!(
        messages = totals.messages,
        readings = totals.batch.readings,
        rejected = totals.batch.rejected,
        predictions = totals.batch.predictions,
        alerts = totals.batch.alerts,
        outbox_left = counts.outbox,
        "Stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(args.failing <= args.motors, "--failing cannot exceed --motors");
    let stop = stop_signal()?;
    let mut motors = edgepm::sim::fleet(
        &args.tenant,
        args.motors,
        args.failing,
        args.onset,
        args.time_to_failure,
        args.seed,
    );
    let mut options = edgepm::sim::PublishOptions::new(args.rate);
    options.duration = args.duration.map(std::time::Duration::from_secs_f64);
    options.samples = args.samples;
    options.stagger = std::time::Duration::from_secs_f64(args.stagger.max(0.0));
    options.measure_latency = args.measure_latency;
    tracing::info!(motors = args.motors, failing = args.failing, rate = args.rate, broker = %args.broker, "Simulating");
    let client_id = format!("edgepm-sim-{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report =
        runtime.block_on(edgepm::sim::publish(&args.broker, &client_id, &mut motors, &options, stop))?;
    println!("{} readings published and acknowledged by the broker", report.acked);
    if let Some(latency) = report.latency {
        println!("{}", serde_json::to_string(&latency)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let host = args.folders.open_host()?;
    let mut opts = edgepm::replay::ReplayOptions::new(&args.tenant);
    opts.device_column = args.device_column;
    opts.id_column = args.id_column;
    opts.time_column = args.time_column;
    opts.label_columns = args.label_columns;
    let input = std::fs::File::open(&args.csv).with_context(|| format!("opening {}", args.csv.display()))?;
    let output =
        std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let s = edgepm::replay::replay(
        &host,
        &opts,
        std::io::BufReader::new(input),
        std::io::BufWriter::new(output),
    )?;
    println!(
        "{}: {} rows, {} windows scored, {} flagged as failures, {} windows failed",
        args.out.display(),
        s.rows,
        s.windows - s.errors,
        s.failures,
        s.errors
    );
    Ok(if s.errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn dataset(args: DatasetArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((0.0..=1.0).contains(&args.failing_fraction), "--failing-fraction must be within 0..=1");
    anyhow::ensure!(args.interval_minutes > 0.0 && args.horizon_hours > 0.0, "intervals must be positive");
    let opts = edgepm::dataset::DatasetOptions {
        motors: args.motors,
        failing_fraction: args.failing_fraction,
        horizon_hours: args.horizon_hours,
        interval_minutes: args.interval_minutes,
        observe_days: args.observe_days,
        seed: args.seed,
        ..Default::default()
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = args.out.with_extension("csv.tmp");
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let started = std::time::Instant::now();
    let mut last_report = 0;
    let summary = edgepm::dataset::generate(&opts, &mut out, |done, windows| {
        let pct = done * 100 / opts.motors.max(1);
        if pct >= last_report + 10 || done == opts.motors {
            last_report = pct;
            eprintln!(
                "  {pct:3} %  {done}/{} motors, {windows} windows, {:.0} s",
                opts.motors,
                started.elapsed().as_secs_f64()
            );
        }
    })?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, &args.out)?;
    println!(
        "{}: {} windows of {} motors ({} run to failure); {} positive ({:.1} % prevalence, horizon {} h)",
        args.out.display(),
        summary.windows,
        summary.motors,
        summary.failing_motors,
        summary.positives,
        100.0 * summary.positives as f64 / summary.windows.max(1) as f64,
        args.horizon_hours
    );
    Ok(ExitCode::SUCCESS)
}

fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        args.motors > 0 && args.failing <= args.motors,
        "need --motors ≥ 1 and --failing ≤ --motors"
    );
    let stop = stop_signal()?;
    let options = edgepm::demo::DemoOptions {
        data_dir: args.data_dir,
        duration: args.duration.map(std::time::Duration::from_secs_f64),
        motors: args.motors,
        failing: args.failing,
        rate: args.rate,
    };
    let summary = edgepm::demo::run(&options, stop)?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// The HTTP endpoints on a runtime thread of their own; stopped and joined on drop.
struct HttpServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start(addr: std::net::SocketAddr, host: Arc<PluginHost>) -> anyhow::Result<HttpServer> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("binding the HTTP address {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "HTTP endpoints listening: /healthz /readyz /metrics");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("edgepm-http".into()).spawn(move || {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = runtime.block_on(edgepm::api::serve(
                listener,
                edgepm::api::ApiState { host, needs_mqtt: false },
                shutdown,
            )) {
                tracing::error!(error = %e, "HTTP server failed");
            }
        })?;
        Ok(HttpServer { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
