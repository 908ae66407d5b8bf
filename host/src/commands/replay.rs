//! `edgepm replay`: CSV rows as readings through a tenant's real pipeline.

use super::FolderArgs;
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    folders: FolderArgs,
    /// The tenant whose pipeline runs.
    #[arg(long)]
    tenant: String,
    /// Input CSV (one reading per row, with a header).
    #[arg(long, required_unless_present = "recording", conflicts_with = "recording")]
    csv: Option<PathBuf>,
    /// Or a recording of bursts: a .npz (t_s, fs_hz, rpm, one snapshots × samples array per axis,
    /// e.g. FEMTO's horiz_mg) or a folder of CSV snapshots with a recording.toml (fs_hz, rpm,
    /// columns, period_s): one reading per snapshot, the burst as channel `vibration`.
    #[arg(long)]
    recording: Option<PathBuf>,
    /// The recording's axis read as `vibration` (default: the first by name); the others come
    /// as `vibration_<axis>`.
    #[arg(long, requires = "recording")]
    axis: Option<String>,
    /// An asset attribute of the recorded machine, KEY=VALUE, repeatable: the bearing's geometry
    /// for the defect frequencies (balls, ball_diameter_mm, pitch_diameter_mm, contact_angle_deg),
    /// or rpm, fs_hz, unit to override the recording's.
    #[arg(long = "asset", value_name = "KEY=VALUE", requires = "recording", value_parser = key_value)]
    asset: Vec<(String, String)>,
    /// Run the preprocessor only and write its features (snapshot, device, timestamp,
    /// minutes_to_end, life, then one column per feature): training data for a model.
    #[arg(long, requires = "recording")]
    features_only: bool,
    /// Output CSV: row_id, device, timestamp, probability, is_failure, model, alerts, top_feature
    /// (for a recording: snapshot, device, timestamp, minutes_to_end, life, probability, ...).
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

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let host = args.folders.open_host()?;
    if let Some(path) = &args.recording {
        let rec = edgepm::recordings::load(path)?;
        let output =
            std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        let opts = edgepm::replay::RecordingOptions {
            axis: args.axis.clone(),
            asset: args.asset.clone(),
            features_only: args.features_only,
        };
        let s = edgepm::replay::replay_recording(
            &host,
            &args.tenant,
            &rec,
            &opts,
            std::io::BufWriter::new(output),
        )?;
        if args.features_only {
            println!(
                "{}: {} snapshots, features of {} windows; {} windows failed",
                args.out.display(),
                s.snapshots,
                s.windows - s.errors,
                s.errors
            );
            return Ok(if s.errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        let span_min = (rec.t_s.last().copied().unwrap_or(0.0) - rec.t_s[0]) / 60.0;
        let first = match s.first_failure_lead_s {
            Some(lead) => format!(
                "first failure {:.1} min ({:.1} % of the recording) before its end",
                lead / 60.0,
                100.0 * lead / 60.0 / span_min.max(1e-9)
            ),
            None => "never called a failure".to_string(),
        };
        println!(
            "{}: {} snapshots, {} windows scored, {} called failures ({} in the first half); {first}; {} windows failed",
            args.out.display(),
            s.snapshots,
            s.windows - s.errors,
            s.failures,
            s.first_half_failures,
            s.errors
        );
        return Ok(if s.errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let csv = args.csv.as_ref().expect("clap requires --csv or --recording");
    let mut opts = edgepm::replay::ReplayOptions::new(&args.tenant);
    opts.device_column = args.device_column;
    opts.id_column = args.id_column;
    opts.time_column = args.time_column;
    opts.label_columns = args.label_columns;
    let input = std::fs::File::open(csv).with_context(|| format!("opening {}", csv.display()))?;
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
