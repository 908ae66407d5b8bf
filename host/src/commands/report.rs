//! `edgepm report`: the weekly equipment-health report of an ISO week, as a PDF, from the local
//! store (read-only: it works while the host runs).

use super::query::StoreArgs;
use edgepm::report::IsoWeek;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The ISO week (UTC), e.g. 2025-W14; default: the week of the newest prediction stored.
    #[arg(long)]
    pub week: Option<IsoWeek>,
    /// Where to write the PDF; default: edgepm-report-<week>.pdf in the current folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let week = match args.week {
        Some(w) => w,
        None => match store.prediction_span()? {
            Some((_, newest)) => IsoWeek::containing(newest),
            None => anyhow::bail!("the store holds no prediction yet: give --week to report an empty week"),
        },
    };
    let out = args.out.unwrap_or_else(|| PathBuf::from(format!("edgepm-report-{week}.pdf")));
    let bytes = edgepm::report::write(&store, week, &out)?;
    eprintln!("Report of week {week} written to {} ({} KB)", out.display(), bytes.div_ceil(1024));
    Ok(ExitCode::SUCCESS)
}
