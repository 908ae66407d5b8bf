//! `edgepm spectrum`: the frequency-aware burst features of recorded snapshots (a `.npz` run to
//! failure such as FEMTO's, or a folder of them), as CSV, and when each feature first rose and
//! stayed above k × its early-life level.

use bearing_features::spectrum::{FEMTO_BEARING, Geometry};
use edgepm::recordings;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct SpectrumArgs {
    /// A recording (.npz: t_s, fs_hz, rpm and one snapshots × samples array per axis, e.g.
    /// horiz_mg), a folder of them, or a folder of CSV snapshots with a recording.toml.
    #[arg(long)]
    pub recording: PathBuf,
    /// The bearing: balls, ball diameter (mm), pitch diameter (mm), contact angle (°).
    #[arg(long, default_value = "13,3.5,25.6,0", value_parser = parse_geometry)]
    pub bearing: Geometry,
    /// Shaft speed, rpm; default: the recording's `rpm`.
    #[arg(long)]
    pub rpm: Option<f64>,
    /// Write every snapshot's features to this CSV file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The onset rule: a feature above k × its median over the first 10 % of life for three
    /// snapshots in a row.
    #[arg(long, default_value_t = 2.0)]
    pub k: f64,
}

fn parse_geometry(s: &str) -> Result<Geometry, String> {
    let v: Vec<f64> =
        s.split(',').map(|x| x.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let [balls, ball_diameter_mm, pitch_diameter_mm, contact_angle_deg] = v[..] else {
        return Err("four numbers: balls,ball_diameter_mm,pitch_diameter_mm,contact_angle_deg".into());
    };
    let g = Geometry { balls, ball_diameter_mm, pitch_diameter_mm, contact_angle_deg };
    g.frequencies(30.0)?;
    Ok(g)
}

fn recordings_in(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_dir() && !path.join(recordings::CSV_DESCRIPTION).is_file() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "npz"))
            .collect();
        files.sort();
        anyhow::ensure!(!files.is_empty(), "{}: no .npz file", path.display());
        Ok(files)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

pub fn run(args: SpectrumArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.k > 1.0, "--k must be more than 1");
    let mut csv = match &args.out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        )),
        None => None,
    };
    let mut header = false;
    if args.bearing == FEMTO_BEARING {
        eprintln!("bearing: FEMTO/PRONOSTIA's (13 balls, 3.5 mm, pitch 25.6 mm, 0°); --bearing for another");
    }
    for file in recordings_in(&args.recording)? {
        let rec = recordings::load(&file)?;
        let rpm = args
            .rpm
            .or(rec.rpm)
            .ok_or_else(|| anyhow::anyhow!("{}: no rpm array: give --rpm", file.display()))?;
        let rows = recordings::analyse(&rec, &args.bearing, rpm)?;
        let span = rec.t_s.last().copied().unwrap_or(0.0) - rec.t_s[0];
        if let Some(out) = csv.as_mut() {
            for r in &rows {
                let values = recordings::feature_values(&r.features);
                if !header {
                    let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
                    writeln!(out, "recording,axis,t_s,life,minutes_to_end,{}", names.join(","))?;
                    header = true;
                }
                let v: Vec<String> = values.iter().map(|(_, v)| format!("{v:.6}")).collect();
                writeln!(
                    out,
                    "{},{},{:.1},{:.4},{:.2},{}",
                    rec.name,
                    r.axis,
                    r.t_s,
                    r.life,
                    (rec.t_s[0] + span - r.t_s) / 60.0,
                    v.join(",")
                )?;
            }
        }
        println!(
            "{}: {} snapshots, {:.2} h, {} Hz, {rpm} rpm, axes {}",
            rec.name,
            rec.t_s.len(),
            span / 3600.0,
            rec.fs_hz,
            rec.axes.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        println!(
            "  {:<26} {:>12} {:>14} {:>10} {:>8}",
            "feature", "early level", "onset (min)", "% of life", "early?"
        );
        for o in recordings::onsets(&rows, args.k) {
            let (lead, life) = match (o.lead_s, o.lead_life) {
                (Some(s), Some(l)) => (format!("{:.1}", s / 60.0), format!("{:.1}", 100.0 * l)),
                _ => ("never".into(), "–".into()),
            };
            println!(
                "  {:<26} {:>12.4} {:>14} {:>10} {:>8}",
                o.feature,
                o.baseline,
                lead,
                life,
                if o.early { "yes" } else { "" }
            );
        }
    }
    if let Some(mut out) = csv {
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
