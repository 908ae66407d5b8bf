//! `edgepm simulate`: simulated motors publishing telemetry.

use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct SimulateArgs {
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

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(args.failing <= args.motors, "--failing cannot exceed --motors");
    let stop = super::stop_signal()?;
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
