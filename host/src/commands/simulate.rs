//! `edgepm simulate`: simulated motors publishing telemetry, or writing their lives as
//! recordings of bursts (`--record`).

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
    /// What the motors' vibration sensors measure: `velocity` (mm/s at 2,560 Hz, bare arrays: the
    /// canonical payload, tenants on bearing-features) or `accelerometer` (g at --fs-hz as base64
    /// burst objects, the bearing's geometry and rpm in the asset record: tenants on
    /// bearing-spectrum, such as the demo's and `vibration`).
    #[arg(long, value_enum, default_value_t = SensorArg::Velocity)]
    sensor: SensorArg,
    /// Sample rate of an accelerometer, Hz.
    #[arg(long, default_value_t = edgepm::sim::accelerometer::DEFAULT_FS_HZ)]
    fs_hz: f64,
    /// Where a failing motor's bearing defect is (an accelerometer's impacts): `outer-race` (at
    /// BPFO), `inner-race` (at BPFI, modulated once per revolution) or `ball` (at 2 × BSF,
    /// modulated by the cage).
    #[arg(long, value_enum, default_value_t = edgepm::sim::accelerometer::Fault::OuterRace)]
    fault: edgepm::sim::accelerometer::Fault,
    /// Vibration samples per reading (default: 64 for velocity, 4,096 for an accelerometer).
    #[arg(long)]
    samples: Option<usize>,
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
    /// Instead of publishing, write each motor's life from 0 to --time-to-failure (simulated
    /// time, as fast as it computes) as a recording of bursts in DIR/<device>/: CSV snapshots
    /// every --period seconds and a recording.toml with the sample rate, shaft speed and asset
    /// record — what `edgepm replay --recording` reads.
    #[arg(long, value_name = "DIR")]
    record: Option<std::path::PathBuf>,
    /// Seconds between two snapshots of a recording.
    #[arg(long, default_value_t = 10.0, requires = "record")]
    period: f64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SensorArg {
    Velocity,
    Accelerometer,
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
    let sensor = match args.sensor {
        SensorArg::Velocity => edgepm::sim::Sensor::Velocity,
        SensorArg::Accelerometer => {
            anyhow::ensure!(
                (2_000.0..=200_000.0).contains(&args.fs_hz),
                "--fs-hz must be within 2,000–200,000 Hz"
            );
            edgepm::sim::Sensor::Accelerometer { fs_hz: args.fs_hz }
        }
    };
    let samples = args.samples.unwrap_or(sensor.default_samples());
    anyhow::ensure!(
        (1..=edgepm::ingest::Limits::default().max_samples).contains(&samples),
        "--samples must be within 1–{}",
        edgepm::ingest::Limits::default().max_samples
    );
    for m in &mut motors {
        m.spec.sensor = sensor;
        m.spec.mounting.fault = args.fault;
    }
    if let Some(dir) = &args.record {
        anyhow::ensure!(args.period > 0.0, "--period must be positive");
        for m in &mut motors {
            let to = dir.join(&m.spec.device);
            // A failing motor's recording ends at its own failure (the fleet spreads them ±5 %).
            let end = m.spec.degradation.map_or(args.time_to_failure, |d| d.failure_s);
            let n = edgepm::sim::write_recording(m, &to, end, args.period, samples)?;
            println!("{}: {n} snapshots", to.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut options = edgepm::sim::PublishOptions::new(args.rate);
    options.duration = args.duration.map(std::time::Duration::from_secs_f64);
    options.samples = samples;
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
