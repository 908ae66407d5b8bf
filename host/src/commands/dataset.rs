//! `edgepm dataset`: labelled training windows from the simulator's physics.

use anyhow::Context as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DatasetArgs {
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

pub fn run(args: DatasetArgs) -> anyhow::Result<ExitCode> {
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
