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

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
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
