//! `edgepm demo`: everything on this machine with an embedded broker.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DemoArgs {
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
    /// The HTTP address: the dashboard, /api/v1 and the probes (port 0: any free port; the
    /// address is printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    http: std::net::SocketAddr,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        args.motors > 0 && args.failing <= args.motors,
        "need --motors ≥ 1 and --failing ≤ --motors"
    );
    let stop = super::stop_signal()?;
    let options = edgepm::demo::DemoOptions {
        data_dir: args.data_dir,
        duration: args.duration.map(std::time::Duration::from_secs_f64),
        motors: args.motors,
        failing: args.failing,
        rate: args.rate,
        http: args.http,
    };
    let summary = edgepm::demo::run(&options, stop)?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
