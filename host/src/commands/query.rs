//! `edgepm query`: questions to the local store, answered as a table or JSON. It reads the
//! store with a connection of its own (read-only), so it works while the host runs.

use edgepm::clock::{parse_rfc3339, rfc3339};
use edgepm::service::HostConfig;
use edgepm::store::{Degradation, DegradationQuery, DeviceTrend, SqliteStore};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum QueryCommand {
    /// Equipment whose vibration amplitude (the median `vibration_rms` of its windows) rose by
    /// at least --percent over the last --days against the --days before. Exit 0 either way.
    Degradation(DegradationArgs),
}

#[derive(clap::Args)]
pub struct DegradationArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The smallest rise reported, in percent of the baseline.
    #[arg(long, default_value_t = 15.0)]
    pub percent: f64,
    /// Length of the recent period and of the baseline period before it, in days.
    #[arg(long, default_value_t = 7.0)]
    pub days: f64,
    /// The feature compared.
    #[arg(long, default_value = "vibration_rms")]
    pub feature: String,
    /// Fewest windows a period needs to be judged.
    #[arg(long, default_value_t = 10)]
    pub min_windows: u32,
    /// End of the recent period (RFC 3339, e.g. 2025-04-05T10:30:00Z); default: the newest
    /// stored window.
    #[arg(long)]
    pub as_of: Option<String>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which store: `<data-dir>/edgepm.db`, or the `data_dir` of a configuration.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// The host's data folder (holds edgepm.db).
    #[arg(long, conflicts_with = "config")]
    pub data_dir: Option<PathBuf>,
    /// A host configuration (or, without this flag and --data-dir, $EDGEPM_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl StoreArgs {
    pub fn open(&self) -> anyhow::Result<SqliteStore> {
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => {
                HostConfig::from_file_or_env(self.config.as_deref())
                    .map_err(|e| e.context("give --data-dir, --config or $EDGEPM_CONFIG"))?
                    .data_dir
            }
        };
        let db = data_dir.join("edgepm.db");
        anyhow::ensure!(db.is_file(), "{} does not exist: no host has stored anything there", db.display());
        SqliteStore::open_reader(&db)
    }
}

pub fn run(command: QueryCommand) -> anyhow::Result<ExitCode> {
    match command {
        QueryCommand::Degradation(args) => degradation(args),
    }
}

fn degradation(args: DegradationArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.percent.is_finite(), "--percent must be a number");
    anyhow::ensure!(args.days.is_finite() && args.days > 0.0, "--days must be more than 0");
    let as_of_ms = match &args.as_of {
        Some(s) => Some(parse_rfc3339(s).map_err(|e| anyhow::anyhow!("--as-of {s:?}: {e}"))?),
        None => None,
    };
    let query = DegradationQuery {
        percent: args.percent,
        days: args.days,
        feature: args.feature,
        min_windows: args.min_windows,
        as_of_ms,
    };
    let answer = args.store.open()?.degradation(&query)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_table(&answer);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(a: &Degradation) {
    let Some(as_of) = a.as_of_ms else {
        println!("no windows stored yet");
        return;
    };
    println!(
        "{} rise of ≥ {}% over the {} days to {} (median of each period, against the {} days before):",
        a.feature,
        a.percent,
        a.days,
        rfc3339(as_of),
        a.days
    );
    if a.degrading.is_empty() {
        println!("  none of the {} devices judged", a.judged.len());
    } else {
        println!(
            "  {:<16} {:<20} {:>10} {:>10} {:>8} {:>9}",
            "tenant", "device", "baseline", "recent", "rise %", "windows"
        );
        for t in &a.degrading {
            println!(
                "  {:<16} {:<20} {:>10.4} {:>10.4} {:>+8.1} {:>9}",
                t.tenant,
                t.device,
                t.baseline.unwrap_or(f64::NAN),
                t.recent.unwrap_or(f64::NAN),
                t.rise_percent.unwrap_or(f64::NAN),
                format!("{}/{}", t.baseline_windows, t.recent_windows)
            );
        }
    }
    if !a.not_enough_data.is_empty() {
        let names: Vec<String> = a.not_enough_data.iter().map(describe).collect();
        println!("not judged (fewer windows than needed in a period): {}", names.join(", "));
    }
}

fn describe(t: &DeviceTrend) -> String {
    format!("{}/{} ({}/{} windows)", t.tenant, t.device, t.baseline_windows, t.recent_windows)
}
